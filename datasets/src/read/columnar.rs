//! Columnar containers (Parquet, Arrow IPC, CSV), read by arrow's own readers in batches.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};

use super::Container;
use crate::error::{Error, Result};

pub(super) type BatchIter = Box<dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>> + Send>;

pub(super) fn open_arrow(path: &Path, container: Container) -> Result<BatchIter> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(match container {
        Container::Parquet => {
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| Error::file(path, format!("not a readable Parquet file: {e}")))?;
            Box::new(
                builder
                    .with_batch_size(8192)
                    .build()
                    .map_err(|e| Error::file(path, format!("not a readable Parquet file: {e}")))?,
            )
        }
        Container::Arrow => {
            let mut file = file;
            match arrow::ipc::reader::FileReader::try_new(&mut file, None) {
                Ok(_) => {
                    file.rewind().map_err(|e| Error::io(path, e))?;
                    Box::new(arrow::ipc::reader::FileReader::try_new(file, None)?)
                }
                Err(_) => {
                    file.rewind().map_err(|e| Error::io(path, e))?;
                    Box::new(
                        arrow::ipc::reader::StreamReader::try_new(BufReader::new(file), None)
                            .map_err(|e| Error::file(path, format!("not a readable Arrow IPC file or stream: {e}")))?,
                    )
                }
            }
        }
        Container::Csv => {
            let delimiter = if path.extension().is_some_and(|e| e == "tsv") { b'\t' } else { b',' };
            let format = arrow::csv::reader::Format::default().with_header(true).with_delimiter(delimiter);
            let (inferred, _) = format
                .infer_schema(BufReader::new(file), Some(1))
                .map_err(|e| Error::file(path, format!("cannot read the CSV header: {e}")))?;
            // Every CSV field is text: a field that looks like a number stays the text it was.
            let schema = Arc::new(Schema::new(
                inferred.fields().iter().map(|f| Field::new(f.name(), DataType::Utf8, true)).collect::<Vec<_>>(),
            ));
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            Box::new(
                arrow::csv::ReaderBuilder::new(schema)
                    .with_format(format)
                    .with_batch_size(8192)
                    .build(BufReader::new(file))?,
            )
        }
        Container::Json => unreachable!("JSON is read as text"),
    })
}
