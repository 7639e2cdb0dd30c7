//! whetstone inputs as SQL tables. A Parquet input that is already a whetstone dataset, or that is in no
//! instruction layout whetstone recognises (a query's output, a table of rewards), is read by DataFusion's
//! own Parquet reader: in parallel, with only the columns and row groups a query needs. Everything else
//! (JSONL, JSON, CSV, Arrow, Parquet in another layout) streams through whetstone's reader, so a table holds
//! the same rows and columns `whet` stages see, with bad rows failing or counted as `--on-error` says.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use whetstone_datasets::read::{hash_file, resolve_inputs, InputReport, Rejections};
use whetstone_datasets::{schema, DatasetReader, ReadOptions, SourceFormat};

use crate::error::{Error, Result};

/// What reading a table gave, for the manifest: per input file, and the rows rejected.
#[derive(Debug, Default, Clone)]
pub struct TableReads {
    pub inputs: Vec<InputReport>,
    pub rejected: Rejections,
}

/// A registered table: its name, what the user named, and what reading it gave so far.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub spec: PathBuf,
    /// Read by DataFusion's Parquet reader (true) or streamed through whetstone's reader.
    pub native: bool,
    pub files: Vec<PathBuf>,
    pub reads: Arc<Mutex<TableReads>>,
}

/// How a set of input files becomes a table.
pub enum Source {
    /// Parquet files DataFusion reads as they are.
    Parquet,
    /// Rows through whetstone's reader, as a stream with this schema.
    Reader(Arc<dyn TableProvider>),
}

/// Resolves a file, folder or glob and decides how its rows are read.
pub fn open(name: &str, spec: &Path, read: &ReadOptions) -> Result<(Table, Source)> {
    let files = resolve_inputs(spec)?;
    let reads = Arc::new(Mutex::new(TableReads::default()));
    let table = |native| Table {
        name: name.to_string(),
        spec: spec.to_path_buf(),
        native,
        files: files.clone(),
        reads: reads.clone(),
    };
    if files.iter().all(|f| f.extension().is_some_and(|e| e == "parquet")) && parquet_as_is(&files, read)? {
        let inputs = files.iter().map(|f| parquet_report(f)).collect::<Result<Vec<_>>>()?;
        reads.lock().expect("not poisoned").inputs = inputs;
        return Ok((table(true), Source::Parquet));
    }
    let schema = first_schema(&files, read)?;
    let stream =
        ReaderStream { files: files.clone(), read: read.clone(), schema: schema.clone(), reads: reads.clone() };
    let provider =
        StreamingTable::try_new(schema, vec![Arc::new(stream)]).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((table(false), Source::Reader(Arc::new(provider))))
}

/// Parquet files read as they are: every file a whetstone dataset, or none in a layout whetstone maps.
fn parquet_as_is(files: &[PathBuf], read: &ReadOptions) -> Result<bool> {
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| whetstone_datasets::Error::io(f, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| whetstone_datasets::Error::file(f, format!("not a readable Parquet file: {e}")))?;
        let s = builder.schema();
        let fields: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        if !schema::is_canonical(s) && whetstone_datasets::format::detect(&fields, &read.map).is_ok() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn parquet_report(path: &Path) -> Result<InputReport> {
    let file = std::fs::File::open(path).map_err(|e| whetstone_datasets::Error::io(path, e))?;
    let rows = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| whetstone_datasets::Error::file(path, format!("not a readable Parquet file: {e}")))?
        .metadata()
        .file_metadata()
        .num_rows() as u64;
    let (bytes, xxh3_128) = hash_file(path, Default::default())?;
    Ok(InputReport {
        path: path.to_path_buf(),
        container: "parquet".into(),
        format: Some(SourceFormat::Whetstone),
        bytes,
        xxh3_128,
        rows_in: rows,
        rows_out: rows,
        rows_rejected: 0,
    })
}

/// The schema of the rows whetstone's reader gives: that of the first batch (the core schema when empty).
fn first_schema(files: &[PathBuf], read: &ReadOptions) -> Result<SchemaRef> {
    let mut reader = DatasetReader::from_files(files.to_vec(), read.clone())?;
    match reader.next() {
        Some(batch) => Ok(batch?.schema()),
        None => Ok(reader.schema()),
    }
}

/// One partition: the table's rows from whetstone's reader, read on a thread of its own and handed over in
/// batches; the counts land in `reads` when the last batch has been read.
#[derive(Debug)]
struct ReaderStream {
    files: Vec<PathBuf>,
    read: ReadOptions,
    schema: SchemaRef,
    reads: Arc<Mutex<TableReads>>,
}

impl PartitionStream for ReaderStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<datafusion::error::Result<RecordBatch>>(2);
        let (files, read, schema, reads) =
            (self.files.clone(), self.read.clone(), self.schema.clone(), self.reads.clone());
        std::thread::spawn(move || {
            let fail = |e: whetstone_datasets::Error| DataFusionError::External(Box::new(e));
            let mut reader = match DatasetReader::from_files(files, read) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(fail(e)));
                    return;
                }
            };
            for batch in reader.by_ref() {
                let batch = batch.map_err(fail).and_then(|b| conform(b, &schema));
                let failed = batch.is_err();
                // A closed channel: the query needs no more rows (a LIMIT), or it failed elsewhere.
                if tx.blocking_send(batch).is_err() || failed {
                    return;
                }
            }
            *reads.lock().expect("not poisoned") =
                TableReads { inputs: reader.reports().to_vec(), rejected: reader.rejections().clone() };
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// A batch in the table's schema, its columns taken by name (a later file may order them otherwise); a later
/// file whose rows have other columns is an error naming them.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let names = |s: &arrow::datatypes::Schema| {
        s.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
    };
    let differ = || {
        DataFusionError::Execution(format!(
            "the table's files hold different columns: the first has ({}), a later one ({})",
            names(schema),
            names(&batch.schema())
        ))
    };
    if batch.num_columns() != schema.fields().len() {
        return Err(differ());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| batch.column_by_name(f.name()).filter(|c| c.data_type() == f.data_type()).cloned().ok_or_else(differ))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|_| differ())
}
