//! Readers: every container (JSONL, JSON arrays, gzip, Parquet, Arrow IPC, CSV) and every source layout
//! becomes one stream of record batches in the canonical schema, with bounded memory.
//!
//! JSON text is read by a background thread in blocks of whole lines, parsed in parallel with rayon and
//! turned into batches; nothing holds more than a few blocks at a time, so a file larger than memory streams.
//! `inputs` finds the files and hashes them, `json` reads JSON text, `columnar` Parquet, Arrow IPC and CSV.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Position, Result, RowError};
use crate::format::{detect, FieldMap, Roles, SourceFormat};
use crate::schema;

mod columnar;
mod inputs;
mod json;

use columnar::open_arrow;
use inputs::container_of;
pub use inputs::{file_stem, hash_file, resolve_inputs};
use json::{parse_rows, read_json_file, split_lines, Parsed, Piece, RowText, IN_FLIGHT};

/// What to do with a row that cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop at the first bad row with an error naming file, line and field.
    #[default]
    Fail,
    /// Skip bad rows; count them and record their reasons in the manifest.
    Skip,
}

impl OnError {
    pub const NAMES: [&'static str; 2] = ["fail", "skip"];
}

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub map: FieldMap,
    pub on_error: OnError,
    /// Rows a filtering stage examines (positions among the rows read, from 0, ascending); every other row
    /// passes through it kept. A cluster run sets it: the cluster finds the rows worth a look (those failing a
    /// filter, or sharing a hash with another row), and the driver's pass runs the stage's own code on those.
    pub examine: Option<Arc<Vec<u64>>>,
    /// Only these columns, in this order (those the input has): what a stage that decides over whole columns
    /// reads. A whetstone Parquet file decodes only them; other inputs are read whole, then projected.
    pub columns: Option<Arc<Vec<String>>>,
}

/// How far reading has got, in input bytes; shared with whoever draws a progress bar.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Progress {
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The file container, told by content (gzip and Parquet magic) and extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// JSON Lines, or a JSON array (told apart by the first character).
    Json,
    Parquet,
    /// Arrow IPC file or stream.
    Arrow,
    Csv,
}

/// What one input contributed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputReport {
    pub path: PathBuf,
    /// Container as read: `jsonl`, `jsonl.gz`, `json`, `parquet`, `arrow`, `csv`.
    pub container: String,
    /// Recognised layout; null for an empty file.
    pub format: Option<SourceFormat>,
    pub bytes: u64,
    /// xxh3-128 of the file's bytes as stored.
    pub xxh3_128: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_rejected: u64,
}

/// Rejected rows: counts per reason, and the first few messages to look at.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rejections {
    pub by_reason: BTreeMap<String, u64>,
    pub examples: Vec<String>,
    /// The file holding every rejected row with its reason (`<output>.rejected.jsonl`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl Rejections {
    const EXAMPLES: usize = 20;

    pub fn add(&mut self, e: &RowError) {
        *self.by_reason.entry(e.kind.to_string()).or_default() += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(e.to_string());
        }
    }

    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }

    /// Adds another's counts and examples (the reader's rejections and a stage's drops, say).
    pub fn merge(&mut self, other: Rejections) {
        for (reason, n) in other.by_reason {
            *self.by_reason.entry(reason).or_default() += n;
        }
        let room = Self::EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }

    /// Counts a row not used for `reason`; `example` describes it (kept for the first few).
    pub fn add_reason(&mut self, reason: &str, example: impl FnOnce() -> String) {
        *self.by_reason.entry(reason.to_string()).or_default() += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(example());
        }
    }
}

enum Source {
    Json {
        rx: Receiver<Piece>,
        thread: Option<std::thread::JoinHandle<()>>,
        /// Blocks being parsed on the rayon pool, oldest first: several at once keep both cores busy.
        in_flight: VecDeque<Receiver<Parsed>>,
        ended: bool,
    },
    Arrow {
        batches: Box<dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>> + Send>,
        next_row: u64,
        /// Whetstone rows with only [`ReadOptions::columns`] decoded: the file's whole schema.
        projected: Option<SchemaRef>,
    },
}

/// A stream of canonical record batches over one or more inputs.
pub struct DatasetReader {
    inputs: Vec<PathBuf>,
    next_input: usize,
    source: Option<Source>,
    stem: String,
    roles: Option<Roles>,
    opts: ReadOptions,
    pending: VecDeque<RecordBatch>,
    /// The batches' columns (those read), and the inputs' every column.
    schema: Option<SchemaRef>,
    whole_schema: Option<SchemaRef>,
    reports: Vec<InputReport>,
    rejections: Rejections,
    /// Rejected rows not yet taken by [`DatasetReader::take_rejected`].
    rejected_rows: Vec<RowError>,
    progress: Progress,
    done: bool,
}

impl DatasetReader {
    /// Opens a file, directory or glob.
    pub fn open(spec: impl AsRef<Path>, opts: ReadOptions) -> Result<Self> {
        Self::from_files(resolve_inputs(spec.as_ref())?, opts)
    }

    pub fn from_files(inputs: Vec<PathBuf>, opts: ReadOptions) -> Result<Self> {
        let progress = Progress::default();
        let mut total = 0;
        for p in &inputs {
            total += std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
        }
        progress.total.store(total, Ordering::Relaxed);
        Ok(DatasetReader {
            inputs,
            next_input: 0,
            source: None,
            stem: String::new(),
            roles: None,
            opts,
            pending: VecDeque::new(),
            schema: None,
            whole_schema: None,
            reports: Vec::new(),
            rejections: Rejections::default(),
            rejected_rows: Vec::new(),
            progress,
            done: false,
        })
    }

    pub fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Per-input reports so far (complete once the stream is exhausted).
    pub fn reports(&self) -> &[InputReport] {
        &self.reports
    }

    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// Takes the rows rejected since the last call (with `--on-error skip`), to be written out.
    pub fn take_rejected(&mut self) -> Vec<RowError> {
        std::mem::take(&mut self.rejected_rows)
    }

    /// The stream's schema: known after the first batch; the core schema when no rows were read.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone().unwrap_or_else(schema::core_schema)
    }

    fn report(&mut self) -> &mut InputReport {
        self.reports.last_mut().expect("an input is open")
    }

    fn open_next(&mut self) -> Result<bool> {
        let Some(path) = self.inputs.get(self.next_input).cloned() else {
            return Ok(false);
        };
        self.next_input += 1;
        self.stem = file_stem(&path);
        self.roles = None;
        let (container, gzip) = container_of(&path)?;
        let mut report = InputReport {
            path: path.clone(),
            container: String::new(),
            format: None,
            bytes: 0,
            xxh3_128: String::new(),
            rows_in: 0,
            rows_out: 0,
            rows_rejected: 0,
        };
        let source = match container {
            Container::Json => {
                report.container = if gzip { "jsonl.gz" } else { "jsonl" }.into();
                let (tx, rx) = sync_channel(2);
                let progress = self.progress.done.clone();
                let p = path.clone();
                let thread = std::thread::Builder::new()
                    .name("whetstone-read".into())
                    .spawn(move || read_json_file(p, gzip, progress, tx))
                    .map_err(|e| Error::io(&path, e))?;
                Source::Json { rx, thread: Some(thread), in_flight: VecDeque::new(), ended: false }
            }
            other => {
                let (bytes, hash) = hash_file(&path, self.progress.done.clone())?;
                report.bytes = bytes;
                report.xxh3_128 = hash;
                report.container = format!("{other:?}").to_lowercase();
                let (batches, projected) = open_arrow(&path, other, self.opts.columns.as_deref().map(Vec::as_slice))?;
                Source::Arrow { batches, next_row: 0, projected }
            }
        };
        self.reports.push(report);
        self.source = Some(source);
        Ok(true)
    }

    /// Reads the next piece of the current input into `pending`; false at the end of the input.
    fn pull(&mut self) -> Result<bool> {
        let Some(mut source) = self.source.take() else {
            return Ok(false);
        };
        let more = self.pull_from(&mut source);
        self.source = Some(source);
        more
    }

    fn pull_from(&mut self, source: &mut Source) -> Result<bool> {
        match source {
            Source::Json { rx, thread, in_flight, ended } => {
                while !*ended && in_flight.len() < IN_FLIGHT {
                    match rx.recv() {
                        Ok(Piece::Lines { data, first_line }) => {
                            if self.roles.is_none() {
                                self.detect_roles(&split_lines(&data, first_line))?;
                            }
                            let (roles, path, stem) =
                                (self.roles.clone(), self.current_path().to_path_buf(), self.stem.clone());
                            let (tx, done) = sync_channel(1);
                            rayon::spawn(move || {
                                let _ =
                                    tx.send(parse_rows(&split_lines(&data, first_line), roles.as_ref(), &path, &stem));
                            });
                            in_flight.push_back(done);
                        }
                        Ok(Piece::Array(data)) => self.read_array(&data)?,
                        Ok(Piece::End { bytes, xxh3_128 }) => {
                            if let Some(t) = thread.take() {
                                let _ = t.join();
                            }
                            *ended = true;
                            let report = self.report();
                            report.bytes = bytes;
                            report.xxh3_128 = xxh3_128;
                        }
                        Ok(Piece::Failed(e)) => return Err(e),
                        Err(_) => return Err(Error::file(self.current_path(), "reader thread stopped unexpectedly")),
                    }
                }
                match in_flight.pop_front() {
                    Some(done) => {
                        let parts =
                            done.recv().map_err(|_| Error::file(self.current_path(), "a parser thread panicked"))?;
                        self.accept(parts)?;
                        Ok(true)
                    }
                    None => Ok(!self.pending.is_empty()),
                }
            }
            Source::Arrow { batches, next_row, projected } => {
                let path = &self.inputs[self.next_input - 1];
                let Some(batch) = batches.next() else {
                    return Ok(false);
                };
                let first_row = *next_row;
                let batch = batch
                    .map_err(|e| Error::file(path, format!("cannot read the rows from row {first_row} on: {e}")))?;
                *next_row += batch.num_rows() as u64;
                if projected.is_some() || schema::is_canonical(&batch.schema()) {
                    let report = self.report();
                    report.format = Some(SourceFormat::Whetstone);
                    report.rows_in += batch.num_rows() as u64;
                    report.rows_out += batch.num_rows() as u64;
                    let whole = projected.clone().unwrap_or_else(|| batch.schema());
                    self.push_batch(batch, whole)?;
                } else {
                    self.convert_arrow(batch, first_row)?;
                }
                Ok(true)
            }
        }
    }

    /// A JSON array file: read whole (arrays are small in practice), rows numbered by the line they start on.
    fn read_array(&mut self, data: &[u8]) -> Result<()> {
        let path = self.current_path().to_path_buf();
        self.report().container = if self.report().container.ends_with("gz") { "json.gz" } else { "json" }.into();
        let text = std::str::from_utf8(data).map_err(|e| {
            let line = memchr::memchr_iter(b'\n', &data[..e.valid_up_to()]).count() + 1;
            Error::file(&path, format!("line {line}: invalid UTF-8"))
        })?;
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)
            .map_err(|e| Error::file(&path, format!("line {}: invalid JSON array: {e}", e.line())))?;
        let start = text.as_ptr() as usize;
        let mut line = 1u64;
        let mut at = 0usize;
        let texts: Vec<RowText> = items
            .iter()
            .map(|raw| {
                let offset = raw.get().as_ptr() as usize - start;
                line += memchr::memchr_iter(b'\n', &data[at..offset]).count() as u64;
                at = offset;
                (Position::Line(line), raw.get().as_bytes())
            })
            .collect();
        self.convert_texts(&texts)
    }

    fn current_path(&self) -> &Path {
        &self.inputs[self.next_input - 1]
    }

    /// Rows of a columnar file in another layout go through the same JSON mapping as text rows.
    fn convert_arrow(&mut self, batch: RecordBatch, first_row: u64) -> Result<()> {
        let mut buf = Vec::with_capacity(batch.get_array_memory_size());
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(&batch)?;
            w.finish()?;
        }
        let text = std::str::from_utf8(&buf).expect("arrow writes UTF-8 JSON");
        let texts: Vec<RowText> =
            text.lines().enumerate().map(|(i, l)| (Position::Row(first_row + i as u64), l.as_bytes())).collect();
        self.convert_texts(&texts)
    }

    /// Parses and maps rows in parallel, applies the error policy, queues the batches.
    fn convert_texts(&mut self, texts: &[RowText]) -> Result<()> {
        self.detect_roles(texts)?;
        let parts = parse_rows(texts, self.roles.as_ref(), self.current_path(), &self.stem);
        self.accept(parts)
    }

    /// Recognises the layout from the first row that is a JSON object, once per file.
    fn detect_roles(&mut self, texts: &[RowText]) -> Result<()> {
        if self.roles.is_some() {
            return Ok(());
        }
        let first = texts.iter().find_map(|(pos, t)| match serde_json::from_slice::<Value>(t) {
            Ok(Value::Object(obj)) => Some((*pos, obj)),
            _ => None,
        });
        if let Some((pos, obj)) = first {
            let fields: Vec<&str> = obj.keys().map(String::as_str).collect();
            let roles =
                detect(&fields, &self.opts.map).map_err(|m| Error::file(self.current_path(), format!("{pos}: {m}")))?;
            self.report().format = Some(roles.format);
            self.roles = Some(roles);
        }
        Ok(())
    }

    /// Applies the error policy to parsed rows, counts them, and queues their batches.
    fn accept(&mut self, parts: Parsed) -> Result<()> {
        for (batch, errors) in parts {
            if let Some(e) = errors.first() {
                if self.opts.on_error == OnError::Fail {
                    return Err(Error::Row(Box::new(e.clone())));
                }
            }
            let rejected = errors.len() as u64;
            for e in errors {
                self.rejections.add(&e);
                self.rejected_rows.push(e);
            }
            let report = self.report();
            report.rows_rejected += rejected;
            // Rows in = rows out + rows rejected, counting a Self-Instruct instance as a row.
            report.rows_in += batch.num_rows() as u64 + rejected;
            report.rows_out += batch.num_rows() as u64;
            if batch.num_rows() > 0 {
                let whole = batch.schema();
                self.push_batch(batch, whole)?;
            }
        }
        Ok(())
    }

    /// Queues `batch` (only [`ReadOptions::columns`] of it, where set); `whole` is its input's every column, which
    /// must be every earlier input's, whatever the columns read.
    fn push_batch(&mut self, batch: RecordBatch, whole: SchemaRef) -> Result<()> {
        let path = &self.inputs[self.next_input - 1];
        match &self.whole_schema {
            None => self.whole_schema = Some(whole),
            Some(earlier) if same_columns(earlier, &whole) => {}
            Some(earlier) => {
                return Err(Error::file(
                    path,
                    format!(
                        "its columns [{}] differ from earlier inputs' [{}]; read them separately",
                        column_names(&whole),
                        column_names(earlier)
                    ),
                ))
            }
        }
        let batch = match &self.opts.columns {
            Some(columns) => {
                let schema = batch.schema();
                let wanted: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
                batch.project(&wanted)?
            }
            None => batch,
        };
        // The same columns read from the same whole columns: one schema for the stream.
        let schema = self.schema.get_or_insert_with(|| batch.schema()).clone();
        self.pending.push_back(batch.with_schema(schema).unwrap_or_else(|_| unreachable!("same columns")));
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(Some(b));
            }
            if self.source.is_some() && self.pull()? {
                continue;
            }
            self.source = None;
            if !self.open_next()? {
                self.finish()?;
                return Ok(None);
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        let empty: Vec<&InputReport> = self.reports.iter().filter(|r| r.rows_in == 0).collect();
        if !self.reports.is_empty() && empty.len() == self.reports.len() {
            let what = if empty.len() == 1 {
                format!("{}: the file is empty (no rows)", empty[0].path.display())
            } else {
                format!("all {} inputs are empty (no rows)", empty.len())
            };
            return Err(Error::Usage(what));
        }
        Ok(())
    }
}

/// serde_json's message without its "at line 1 column N" (a row is one line): the column, said once.

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

fn column_names(s: &Schema) -> String {
    s.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

impl Iterator for DatasetReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole input into memory: for tests, small files and notebooks.
pub fn read_all(spec: impl AsRef<Path>, opts: ReadOptions) -> Result<(Vec<RecordBatch>, DatasetReader)> {
    let mut reader = DatasetReader::open(spec, opts)?;
    let mut batches = Vec::new();
    for b in reader.by_ref() {
        batches.push(b?);
    }
    Ok((batches, reader))
}

/// The rows an input yields (read through once, nothing kept): a progress bar's total.
pub fn count_rows(spec: impl AsRef<Path>, opts: &ReadOptions) -> Result<u64> {
    let mut rows = 0;
    for batch in DatasetReader::open(spec, opts.clone())? {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

/// The number of rows in batches.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}
