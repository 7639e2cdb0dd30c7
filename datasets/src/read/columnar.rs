//! Columnar containers (Parquet, Arrow IPC, CSV), read by arrow's own readers in batches.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::reader::{ChunkReader, Length};

use super::Container;
use crate::error::{Error, Result};

/// Rows per batch, from every reader.
const BATCH_ROWS: usize = 8192;

pub(super) type BatchIter = Box<dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>> + Send>;

/// The file's batches, and where they are whetstone rows with only `columns` decoded (in the file's order; the
/// reader puts them in the order asked for), the file's whole schema: a Parquet file in whetstone's schema
/// decodes only the columns asked for (the others' pages are never read); every other input is read whole.
pub(super) fn open_arrow(
    path: &Path,
    container: Container,
    columns: Option<&[String]>,
) -> Result<(BatchIter, Option<SchemaRef>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut projected = None;
    let batches: BatchIter = match container {
        Container::Parquet => {
            let not_parquet =
                |e: parquet::errors::ParquetError| Error::file(path, format!("not a readable Parquet file: {e}"));
            let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(not_parquet)?;
            let mut mask = ProjectionMask::all();
            if let Some(columns) = columns.filter(|_| crate::schema::is_canonical(metadata.schema())) {
                // Top-level fields are the Parquet schema's root columns, in the same order.
                let roots: Vec<usize> = columns.iter().filter_map(|c| metadata.schema().index_of(c).ok()).collect();
                mask = ProjectionMask::roots(metadata.metadata().file_metadata().schema_descr(), roots);
                projected = Some(metadata.schema().clone());
            }
            let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            Box::new(RowGroups::new(SharedFile { file: Arc::new(file), len }, metadata, mask))
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
                    .with_batch_size(BATCH_ROWS)
                    .build(BufReader::new(file))?,
            )
        }
        Container::Json => unreachable!("JSON is read as text"),
    };
    Ok((batches, projected))
}

/// Row groups decoded at once, each on its own thread (the one being read and the next): Parquet decoding
/// (decompression, levels, copies) is most of reading a file, and one thread decoded a million rows of
/// embeddings in twice the time pyarrow's two did.
const GROUPS_AT_ONCE: usize = 2;

/// One open file that every row group's thread reads at its own offsets (`pread`): all of them read the file
/// that was opened, even if another is renamed into its place meanwhile (parquet's reader for `File` clones the
/// handle and seeks, and clones share one position).
#[derive(Clone)]
struct SharedFile {
    file: Arc<File>,
    len: u64,
}

impl Length for SharedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SharedFile {
    type T = BufReader<FileAt>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(BufReader::new(FileAt { file: self.file.clone(), at: start }))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let mut buf = vec![0; length];
        self.file.read_exact_at(&mut buf, start)?;
        Ok(buf.into())
    }
}

/// Reads a shared file from an offset on.
struct FileAt {
    file: Arc<File>,
    at: u64,
}

impl Read for FileAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// A Parquet file's row groups decoded side by side, in order, each streaming its batches through a short
/// queue (memory holds a few batches per group, not whole groups); cut again into batches of BATCH_ROWS rows,
/// as one reader over the whole file cuts them.
struct RowGroups {
    file: SharedFile,
    metadata: ArrowReaderMetadata,
    mask: ProjectionMask,
    next_group: usize,
    /// Each group's batches, and its thread (none where the thread could not start: its error is queued).
    decoding: VecDeque<(Receiver<std::result::Result<RecordBatch, ArrowError>>, Option<JoinHandle<()>>)>,
    /// Decoded rows not yet handed out, in order.
    ready: VecDeque<RecordBatch>,
}

impl RowGroups {
    fn new(file: SharedFile, metadata: ArrowReaderMetadata, mask: ProjectionMask) -> Self {
        let mut groups =
            RowGroups { file, metadata, mask, next_group: 0, decoding: VecDeque::new(), ready: VecDeque::new() };
        groups.start_more();
        groups
    }

    fn start_more(&mut self) {
        while self.decoding.len() < GROUPS_AT_ONCE && self.next_group < self.metadata.metadata().num_row_groups() {
            let (tx, rx) = sync_channel(2);
            let (file, metadata, mask, group) =
                (self.file.clone(), self.metadata.clone(), self.mask.clone(), self.next_group);
            let error = tx.clone();
            let decode = move || {
                let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
                    .with_row_groups(vec![group])
                    .with_projection(mask)
                    .with_batch_size(BATCH_ROWS)
                    .build();
                match batches {
                    Ok(batches) => {
                        for batch in batches {
                            let failed = batch.is_err();
                            // Ends when the reader was dropped, or after an error.
                            if tx.send(batch).is_err() || failed {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            };
            match std::thread::Builder::new().name("whetstone-parquet".into()).spawn(decode) {
                Ok(thread) => self.decoding.push_back((rx, Some(thread))),
                Err(e) => {
                    let _ = error.send(Err(ArrowError::ExternalError(Box::new(e))));
                    self.decoding.push_back((rx, None));
                }
            }
            self.next_group += 1;
        }
    }

    /// The next decoded batch in file order; `None` at the end of the file.
    fn decoded(&mut self) -> Option<std::result::Result<RecordBatch, ArrowError>> {
        loop {
            let (rx, _) = self.decoding.front()?;
            match rx.recv() {
                Ok(batch) => return Some(batch),
                Err(_) => {
                    // This group is done: its thread has ended; the next one starts decoding.
                    let (_, thread) = self.decoding.pop_front().expect("front above");
                    if thread.is_some_and(|t| t.join().is_err()) {
                        return Some(Err(ArrowError::ExternalError("a Parquet decoding thread panicked".into())));
                    }
                    self.start_more();
                }
            }
        }
    }
}

impl Iterator for RowGroups {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.ready.iter().map(RecordBatch::num_rows).sum::<usize>() < BATCH_ROWS {
            match self.decoded() {
                Some(Ok(batch)) => self.ready.push_back(batch),
                Some(Err(e)) => return Some(Err(e)),
                None => break,
            }
        }
        let mut parts = Vec::new();
        let mut wanted = BATCH_ROWS;
        while wanted > 0 {
            let Some(batch) = self.ready.pop_front() else { break };
            if batch.num_rows() > wanted {
                self.ready.push_front(batch.slice(wanted, batch.num_rows() - wanted));
                parts.push(batch.slice(0, wanted));
                wanted = 0;
            } else {
                wanted -= batch.num_rows();
                parts.push(batch);
            }
        }
        match parts.len() {
            0 => None,
            1 => parts.pop().map(Ok),
            _ => Some(arrow::compute::concat_batches(&parts[0].schema(), &parts)),
        }
    }
}
