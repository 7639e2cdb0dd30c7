//! Writers: Parquet (zstd), Arrow IPC, and the JSONL layouts trainers read. Every write is atomic: rows go
//! to a temporary file beside the target, which is renamed into place only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver};

use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::schema;

/// Output layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Parquet with zstd: whetstone's own dataset format, every column kept.
    Parquet,
    /// Arrow IPC file.
    Arrow,
    /// JSON Lines with every column (`meta` inlined as an object): reads back losslessly.
    Jsonl,
    /// `{"instruction", "input", "output"}` (+ `system`, `history` for conversations): Alpaca, LLaMA-Factory.
    Alpaca,
    /// `{"messages": [{"role", "content"}, …]}`: TRL, Axolotl `chat_template`, LLaMA-Factory sharegpt/openai.
    Messages,
}

impl OutputFormat {
    pub const NAMES: [&'static str; 5] = ["parquet", "arrow", "jsonl", "alpaca", "messages"];

    /// The format an output path implies: `.parquet`, `.arrow`/`.ipc`, `.jsonl`/`.json` (+ `.gz`).
    pub fn from_path(path: &Path) -> Result<Self> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = name.strip_suffix(".gz").unwrap_or(name);
        match name.rsplit_once('.').map(|(_, e)| e) {
            Some("parquet") => Ok(OutputFormat::Parquet),
            Some("arrow" | "ipc" | "feather") => Ok(OutputFormat::Arrow),
            Some("jsonl" | "json" | "ndjson") => Ok(OutputFormat::Jsonl),
            _ => Err(Error::Usage(format!(
                "{}: cannot tell the output format from the name; end it in .parquet, .arrow or .jsonl, or pass --format",
                path.display()
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The manifest path of a dataset file: `<file>.manifest.json`.
pub fn manifest_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    data.with_file_name(name)
}

/// The rejected-rows file of a dataset file: `<file>.rejected.jsonl`.
pub fn rejected_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(".rejected.jsonl");
    data.with_file_name(name)
}

/// Writes rejected rows, one JSON object each (see [`crate::RowError::to_json`]), beside a dataset;
/// atomically, and only when there are any (a stale file from an earlier run is removed).
pub struct RejectedWriter {
    path: PathBuf,
    out: Option<(BufWriter<File>, tempfile::TempPath)>,
}

impl RejectedWriter {
    pub fn beside(data: &Path) -> Self {
        RejectedWriter { path: rejected_path(data), out: None }
    }

    pub fn write(&mut self, rows: &[crate::RowError]) -> Result<()> {
        self.write_values(&rows.iter().map(crate::RowError::to_json).collect::<Vec<_>>())
    }

    /// Writes one JSON object per line.
    pub fn write_values(&mut self, rows: &[serde_json::Value]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let (out, _) = match &mut self.out {
            Some(o) => o,
            None => {
                let (file, temp) = temp_beside(&self.path)?.into_parts();
                self.out.insert((BufWriter::new(file), temp))
            }
        };
        // Serialised on every core (a dedup stage may reject most of a million rows), written in order.
        let lines = rows
            .par_iter()
            .map(|row| {
                serde_json::to_vec(row).map(|mut line| {
                    line.push(b'\n');
                    line
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        lines.iter().try_for_each(|line| out.write_all(line)).map_err(|e| Error::io(&self.path, e))
    }

    /// Puts the file in place; returns its path, or `None` when no row was rejected.
    pub fn finish(self) -> Result<Option<PathBuf>> {
        let io = |e| Error::io(&self.path, e);
        match self.out {
            Some((out, temp)) => {
                out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
                temp.persist(&self.path).map_err(|e| io(e.error))?;
                Ok(Some(self.path))
            }
            None => {
                match std::fs::remove_file(&self.path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                    _ => {}
                }
                Ok(None)
            }
        }
    }
}

/// A temporary file beside `path` (same folder, so the final rename is atomic), removed if not persisted.
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(file_mode())
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Counts and hashes what passes through, so the manifest can name the output's content hash.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Sink = HashingWriter<BufWriter<File>>;

enum Encoder {
    Parquet(Box<ParquetEncoder>),
    Arrow(Box<arrow::ipc::writer::FileWriter<Sink>>),
    Text { out: Box<dyn FinishWrite>, format: OutputFormat },
}

/// A text writer that may need finishing (gzip) before its file is complete.
trait FinishWrite: Write + Send {
    fn finish(self: Box<Self>) -> std::io::Result<Sink>;
}

impl FinishWrite for Sink {
    fn finish(self: Box<Self>) -> std::io::Result<Sink> {
        Ok(*self)
    }
}

impl FinishWrite for flate2::write::GzEncoder<Sink> {
    fn finish(self: Box<Self>) -> std::io::Result<Sink> {
        (*self).finish()
    }
}

/// What a finished write produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputReport {
    pub path: PathBuf,
    pub format: OutputFormat,
    pub rows: u64,
    pub bytes: u64,
    pub xxh3_128: String,
}

/// Writes batches to a temporary file beside `path`; [`DatasetWriter::finish`] renames it into place.
/// Dropped unfinished (an error, a panic), it removes the temporary file and leaves `path` untouched.
pub struct DatasetWriter {
    path: PathBuf,
    format: OutputFormat,
    encoder: Encoder,
    temp: tempfile::TempPath,
    rows: u64,
}

/// Row groups: at most this many rows, or this many bytes of Arrow data, whichever comes first.
const ROW_GROUP_ROWS: usize = 128 * 1024;
const ROW_GROUP_BYTES: usize = 32 << 20;
/// Row groups being encoded at once; with the one filling, this bounds the writer's memory.
const ROW_GROUPS_IN_FLIGHT: usize = 2;

impl DatasetWriter {
    pub fn create(path: impl AsRef<Path>, format: OutputFormat, schema: SchemaRef) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let temp = temp_beside(&path)?;
        let (file, temp) = temp.into_parts();
        let sink =
            HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: Default::default(), bytes: 0 };
        let encoder = match format {
            OutputFormat::Parquet => {
                let mut props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    // Long unique texts gain nothing from dictionaries; short repeated labels do.
                    .set_dictionary_enabled(false);
                for column in [
                    schema::SOURCE,
                    schema::columns::SPLIT,
                    schema::columns::GENERATOR,
                    schema::columns::SAMPLING,
                    schema::columns::FINISH_REASON,
                ] {
                    props = props.set_column_dictionary_enabled(column.into(), true);
                }
                Encoder::Parquet(Box::new(ParquetEncoder::new(sink, schema, props.build())?))
            }
            OutputFormat::Arrow => Encoder::Arrow(Box::new(arrow::ipc::writer::FileWriter::try_new(sink, &schema)?)),
            text => {
                let out: Box<dyn FinishWrite> = if name.ends_with(".gz") {
                    Box::new(flate2::write::GzEncoder::new(sink, flate2::Compression::default()))
                } else {
                    Box::new(sink)
                };
                Encoder::Text { out, format: text }
            }
        };
        Ok(DatasetWriter { path, format, encoder, temp, rows: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.encoder {
            Encoder::Parquet(w) => w.write(batch)?,
            Encoder::Arrow(w) => w.write(batch)?,
            Encoder::Text { out, format } => {
                let text = match format {
                    OutputFormat::Jsonl => jsonl_rows(batch)?,
                    OutputFormat::Alpaca => layout_rows(batch, alpaca_row)?,
                    OutputFormat::Messages => layout_rows(batch, messages_row)?,
                    _ => unreachable!("binary formats have their own encoders"),
                };
                out.write_all(&text).map_err(|e| Error::io(&self.path, e))?;
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Completes the file, syncs it and renames it to its final name.
    pub fn finish(self) -> Result<OutputReport> {
        let DatasetWriter { path, format, encoder, temp, rows } = self;
        let io = |e| Error::io(&path, e);
        let sink = match encoder {
            Encoder::Parquet(w) => w.finish()?,
            Encoder::Arrow(mut w) => {
                w.finish()?;
                w.into_inner()?
            }
            Encoder::Text { out, .. } => out.finish().map_err(io)?,
        };
        let HashingWriter { inner, hasher, bytes } = sink;
        let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        temp.persist(&path).map_err(|e| io(e.error))?;
        Ok(OutputReport { path, format, rows, bytes, xxh3_128: format!("{:032x}", hasher.digest128()) })
    }
}

/// Temporary files are private (0600); a dataset gets the mode any new file gets (0666 less the umask).
fn file_mode() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o666)
}

/// A Parquet writer that encodes whole row groups on the rayon pool, several at once, and appends them
/// in order. Compression dominates writing, and one text column dominates a row group, so splitting by
/// column alone leaves a core idle; splitting by row group does not.
struct ParquetEncoder {
    file: SerializedFileWriter<Sink>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    filling: Vec<RecordBatch>,
    filling_rows: usize,
    filling_bytes: usize,
    in_flight: VecDeque<Receiver<parquet::errors::Result<Vec<ArrowColumnChunk>>>>,
    groups: usize,
}

impl ParquetEncoder {
    fn new(sink: Sink, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        // ArrowWriter sets up the Parquet schema and embeds the Arrow schema; then we take over.
        let (file, factory) = ArrowWriter::try_new(sink, schema.clone(), Some(props))?.into_serialized_writer()?;
        Ok(ParquetEncoder {
            file,
            factory,
            schema,
            filling: Vec::new(),
            filling_rows: 0,
            filling_bytes: 0,
            in_flight: VecDeque::new(),
            groups: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.filling_rows += batch.num_rows();
        self.filling_bytes += batch.get_array_memory_size();
        self.filling.push(batch.clone());
        if self.filling_rows >= ROW_GROUP_ROWS || self.filling_bytes >= ROW_GROUP_BYTES {
            self.dispatch()?;
        }
        Ok(())
    }

    /// Sends the filling row group to be encoded; appends finished ones while too many are in flight.
    fn dispatch(&mut self) -> Result<()> {
        if self.filling_rows > 0 {
            let batches = std::mem::take(&mut self.filling);
            (self.filling_rows, self.filling_bytes) = (0, 0);
            let mut columns = self.factory.create_column_writers(self.groups)?;
            self.groups += 1;
            let schema = self.schema.clone();
            let (tx, done) = sync_channel(1);
            rayon::spawn(move || {
                let encode = || -> parquet::errors::Result<Vec<ArrowColumnChunk>> {
                    let mut leaves = Vec::with_capacity(columns.len());
                    for batch in &batches {
                        for (field, column) in schema.fields().iter().zip(batch.columns()) {
                            leaves.extend(compute_leaves(field, column)?);
                        }
                        let mut leaf = leaves.drain(..);
                        for writer in columns.iter_mut() {
                            writer.write(&leaf.next().expect("one leaf per column writer"))?;
                        }
                    }
                    columns.into_iter().map(|c| c.close()).collect()
                };
                let _ = tx.send(encode());
            });
            self.in_flight.push_back(done);
        }
        while self.in_flight.len() > ROW_GROUPS_IN_FLIGHT {
            self.append_oldest()?;
        }
        Ok(())
    }

    fn append_oldest(&mut self) -> Result<()> {
        let Some(done) = self.in_flight.pop_front() else { return Ok(()) };
        let chunks = done.recv().map_err(|_| Error::Internal("a Parquet encoder panicked".into()))??;
        let mut group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    }

    fn finish(mut self) -> Result<Sink> {
        self.dispatch()?;
        while !self.in_flight.is_empty() {
            self.append_oldest()?;
        }
        Ok(self.file.into_inner()?)
    }
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = temp_beside(path)?;
    temp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    temp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Every column as JSON; `meta` (JSON text) is inlined as an object so it reads back as the fields it was.
pub(crate) fn jsonl_rows(batch: &RecordBatch) -> Result<Vec<u8>> {
    let meta = batch.column_by_name(schema::META).map(|c| c.as_string::<i32>().clone());
    let rest = match batch.schema().index_of(schema::META) {
        Ok(i) => {
            let mut b = batch.clone();
            b.remove_column(i);
            b
        }
        Err(_) => batch.clone(),
    };
    let mut lines = Vec::with_capacity(rest.get_array_memory_size());
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut lines);
        w.write(&rest)?;
        w.finish()?;
    }
    let Some(meta) = meta.filter(|m| m.null_count() < m.len()) else {
        return Ok(lines);
    };
    let mut out = Vec::with_capacity(lines.len() + meta.value_data().len() + 16 * meta.len());
    for (row, line) in lines.split(|&b| b == b'\n').take(batch.num_rows()).enumerate() {
        match meta.is_valid(row).then(|| meta.value(row)) {
            Some(m) => {
                out.extend_from_slice(line.strip_suffix(b"}").unwrap_or(line));
                out.extend_from_slice(b",\"meta\":");
                out.extend_from_slice(m.as_bytes());
                out.extend_from_slice(b"}\n");
            }
            None => {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
    }
    Ok(out)
}

/// One row's conversation: its `messages`, or the single turn made of prompt and response.
struct Turns {
    turns: Vec<(String, String)>,
}

fn row_turns(batch: &RecordBatch, row: usize) -> Turns {
    if let Some(messages) = crate::record::messages_at(batch, row) {
        return Turns { turns: messages.into_iter().map(|m| (m.role, m.content)).collect() };
    }
    let strings = |name| batch.column_by_name(name).map(|c| c.as_string::<i32>().clone());
    let prompt = strings(schema::PROMPT).expect("core column");
    let response = strings(schema::RESPONSE).expect("core column");
    let mut turns = vec![("user".to_string(), prompt.value(row).to_string())];
    if response.is_valid(row) {
        turns.push(("assistant".to_string(), response.value(row).to_string()));
    }
    Turns { turns }
}

fn layout_rows(batch: &RecordBatch, row_fn: fn(Turns) -> Value) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for row in 0..batch.num_rows() {
        serde_json::to_writer(&mut out, &row_fn(row_turns(batch, row)))?;
        out.push(b'\n');
    }
    Ok(out)
}

fn messages_row(t: Turns) -> Value {
    let messages: Vec<Value> =
        t.turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    json!({ "messages": messages })
}

/// Alpaca with LLaMA-Factory's `system` and `history` for conversations: the last user turn is the
/// instruction, the final assistant turn the output, earlier user/assistant pairs the history.
fn alpaca_row(t: Turns) -> Value {
    let mut turns = t.turns;
    let system = match turns.first() {
        Some((role, _)) if role == "system" => Some(turns.remove(0).1),
        _ => None,
    };
    let output = match turns.last() {
        Some((role, _)) if role == "assistant" => turns.pop().map(|t| t.1).unwrap_or_default(),
        _ => String::new(),
    };
    let instruction = match turns.last() {
        Some((role, _)) if role == "user" => turns.pop().map(|t| t.1).unwrap_or_default(),
        _ => String::new(),
    };
    let mut row = Map::new();
    row.insert("instruction".into(), instruction.into());
    row.insert("input".into(), "".into());
    row.insert("output".into(), output.into());
    if let Some(s) = system {
        row.insert("system".into(), s.into());
    }
    if !turns.is_empty() {
        let history: Vec<Value> =
            turns.chunks(2).map(|p| json!([p[0].1, p.get(1).map(|x| x.1.as_str()).unwrap_or("")])).collect();
        row.insert("history".into(), history.into());
    }
    Value::Object(row)
}

/// Rows as JSON objects (`meta` inlined), as the `jsonl` writer writes them.
pub fn batch_rows_json(batch: &RecordBatch) -> Result<Vec<serde_json::Value>> {
    // In slices of 1,024 rows on every core: a dedup stage may reject most of a million rows.
    const SLICE: usize = 1024;
    let starts: Vec<usize> = (0..batch.num_rows()).step_by(SLICE).collect();
    let slices = starts
        .into_par_iter()
        .map(|from| {
            let text = jsonl_rows(&batch.slice(from, SLICE.min(batch.num_rows() - from)))?;
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).map_err(Into::into))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(slices.into_iter().flatten().collect())
}
