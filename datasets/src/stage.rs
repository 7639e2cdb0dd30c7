//! Running a stage, written once for every stage: read the input, apply the stage batch by batch, write
//! the output atomically with the rejected rows beside it, and account for every row in the manifest.
//! Reading, the stage and writing overlap: the writer runs on its own thread behind a short queue.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::RecordBatch;

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::read::{DatasetReader, Progress, ReadOptions, Rejections};
use crate::write::{DatasetWriter, OutputFormat, OutputReport, RejectedWriter};

/// A stage's error, whatever crate it comes from.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// Rows a stage has finished, for a progress bar of slow stages (embedding, generation).
#[derive(Debug, Clone, Default)]
pub struct RowProgress(Arc<AtomicU64>);

impl RowProgress {
    pub fn done(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a stage is called, how it was set up, and where it reads and writes.
pub struct StageRun<'a> {
    pub stage: &'a str,
    pub parameters: serde_json::Value,
    pub input: &'a Path,
    pub output: &'a Path,
    /// Output layout; `None` takes it from the output's file name.
    pub format: Option<OutputFormat>,
    pub read: ReadOptions,
}

impl StageRun<'_> {
    fn output_format(&self) -> Result<OutputFormat> {
        match self.format {
            Some(f) => Ok(f),
            None => OutputFormat::from_path(self.output),
        }
    }

    /// Runs a stage that maps every batch to a batch of the same rows (adding or changing columns).
    /// `on_progress` gets the reader's byte progress and the stage's row progress once, at the start.
    pub fn map(
        self,
        on_progress: impl FnOnce(Progress, RowProgress),
        mut f: impl FnMut(RecordBatch) -> std::result::Result<RecordBatch, StageError>,
    ) -> Result<Manifest> {
        let stage = self.stage;
        self.filter(on_progress, |batch| {
            let n = batch.num_rows();
            let out = f(batch)?;
            if out.num_rows() != n {
                return Err(Error::Internal(format!("stage {stage} turned {n} rows into {}", out.num_rows())).into());
            }
            Ok((out, Vec::new()))
        })
    }

    /// Runs a stage that keeps some rows of every batch and drops the others, each with its reason:
    /// dropped rows go to `<output>.rejected.jsonl` and are counted by reason in the manifest.
    pub fn filter(
        self,
        on_progress: impl FnOnce(Progress, RowProgress),
        f: impl FnMut(RecordBatch) -> std::result::Result<(RecordBatch, Vec<Dropped>), StageError>,
    ) -> Result<Manifest> {
        self.expand(1, on_progress, f)
    }

    /// Runs a stage that writes `per_row` rows for every input row it keeps (generation: N samples per
    /// prompt) and drops the others, each with its reason; the manifest records `per_row`.
    pub fn expand(
        self,
        per_row: u64,
        on_progress: impl FnOnce(Progress, RowProgress),
        mut f: impl FnMut(RecordBatch) -> std::result::Result<(RecordBatch, Vec<Dropped>), StageError>,
    ) -> Result<Manifest> {
        let started = SystemTime::now();
        let format = self.output_format()?;
        let mut reader = DatasetReader::open(self.input, self.read.clone())?;
        refuse_overwriting_an_input(&reader, self.output)?;
        let rows = RowProgress::default();
        on_progress(reader.progress(), rows.clone());
        let mut apply = |batch: RecordBatch| -> Result<(RecordBatch, Vec<Dropped>)> {
            let n = batch.num_rows() as u64;
            let out = f(batch).map_err(Error::Stage)?;
            rows.0.fetch_add(n, Ordering::Relaxed);
            Ok(out)
        };
        let mut dropped = Rejections::default();
        let (output_report, rejected_file) = write_stream(&mut reader, self.output, format, &mut apply, &mut dropped)?;
        let mut rejected = reader.rejections().clone();
        rejected.file = rejected_file;
        rejected.merge(dropped);
        let manifest = Manifest::new_expanding(
            self.stage,
            self.parameters,
            reader.reports().to_vec(),
            output_report,
            rejected,
            started,
            per_row,
        )?;
        manifest.write_beside(self.output)?;
        Ok(manifest)
    }
}

/// A row a stage left out: why (a short reason key, counted in the manifest), the detail, and the row.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub reason: String,
    pub detail: String,
    pub row: serde_json::Value,
}

impl Dropped {
    /// Row `i` of `batch`, dropped for `reason`.
    pub fn new(batch: &RecordBatch, i: usize, reason: impl Into<String>, detail: impl Into<String>) -> Result<Self> {
        Ok(Self::rows(batch, [(i, reason.into(), detail.into())])?.pop().expect("one row"))
    }

    /// Rows of `batch` dropped, each `(row, reason, detail)`, converted together. The `embedding` column is
    /// left out: derived, kilobytes a row, and the row's id and text say which row it was.
    pub fn rows(batch: &RecordBatch, picks: impl IntoIterator<Item = (usize, String, String)>) -> Result<Vec<Self>> {
        let picks: Vec<(usize, String, String)> = picks.into_iter().collect();
        if picks.is_empty() {
            return Ok(Vec::new());
        }
        let indices = arrow::array::UInt32Array::from_iter_values(picks.iter().map(|p| p.0 as u32));
        let mut taken = arrow::compute::take_record_batch(batch, &indices)?;
        if let Ok(i) = taken.schema().index_of(crate::schema::columns::EMBEDDING) {
            taken.remove_column(i);
        }
        let rows = crate::write::batch_rows_json(&taken)?;
        Ok(picks.into_iter().zip(rows).map(|((_, reason, detail), row)| Dropped { reason, detail, row }).collect())
    }

    /// How the manifest's examples show it: `id: reason: detail`.
    pub fn example(&self) -> String {
        let id = self.row.get("id").and_then(|v| v.as_str()).unwrap_or("?");
        format!("{id}: {}: {}", self.reason, self.detail)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"reason": self.reason, "detail": self.detail, "row": self.row})
    }
}

/// What a whole-dataset stage decides from the columns it read: which input rows to keep, the columns to add
/// to them, and the rows it drops.
#[derive(Default)]
pub struct Selection {
    /// Rows kept, as positions in the input (every row the reader yielded, counted from 0), ascending.
    pub keep: Vec<u32>,
    /// Columns added to the kept rows: each array has one value per entry of `keep`, in that order.
    pub columns: Vec<(arrow::datatypes::Field, arrow::array::ArrayRef)>,
    /// Rows left out and only counted, by reason (`not_selected`).
    pub dropped: std::collections::BTreeMap<String, u64>,
    /// Rows left out and written to the rejected-rows file: (position, reason, detail, the row it duplicates).
    pub rejected: Vec<(u32, String, String, Option<String>)>,
    pub results: serde_json::Value,
}

impl StageRun<'_> {
    /// Runs a stage that needs every row at once, reading only `columns` of them (those the input has): pass
    /// one streams those columns to `f`, batch by batch, and `f` decides; pass two streams the input again
    /// and writes the rows kept, with `f`'s columns added. Memory holds what `f` keeps, not the text.
    pub fn whole_columns(
        self,
        columns: &[&str],
        on_progress: impl FnOnce(Progress),
        f: impl FnOnce(&mut dyn Iterator<Item = Result<RecordBatch>>) -> std::result::Result<Selection, StageError>,
    ) -> Result<Manifest> {
        let started = SystemTime::now();
        let format = self.output_format()?;
        let mut reader = DatasetReader::open(self.input, self.read.clone())?;
        refuse_overwriting_an_input(&reader, self.output)?;
        on_progress(reader.progress());
        let mut rows_in = 0u64;
        let mut projected = reader.by_ref().map(|batch| -> Result<RecordBatch> {
            let batch = batch?;
            rows_in += batch.num_rows() as u64;
            let schema = batch.schema();
            let wanted: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
            Ok(batch.project(&wanted)?)
        });
        let decided = f(&mut projected).map_err(Error::Stage);
        // Whatever `f` left unread is read now, so the row count and the input's hash are whole.
        projected.by_ref().try_for_each(|b| b.map(drop))?;
        drop(projected);
        let mut decided = decided?;
        let first_pass: Vec<String> = reader.reports().iter().map(|r| r.xxh3_128.clone()).collect();
        let (kept, dropped) = (decided.keep.len() as u64, decided.dropped.values().sum::<u64>());
        let strictly_ascending = decided.keep.windows(2).all(|w| w[0] < w[1]);
        if !strictly_ascending || kept + dropped + decided.rejected.len() as u64 != rows_in {
            return Err(Error::Internal(format!(
                "stage {} kept {kept}, dropped {dropped} and rejected {} of {rows_in} rows",
                self.stage,
                decided.rejected.len()
            )));
        }
        decided.rejected.sort_by_key(|r| r.0);

        // Pass two: the same rows again, in the same order; the kept ones are written.
        let mut reader = DatasetReader::open(self.input, self.read.clone())?;
        let (mut offset, mut next_keep, mut next_rejected) = (0u32, 0usize, 0usize);
        let mut apply = |batch: RecordBatch| -> Result<(RecordBatch, Vec<Dropped>)> {
            let end = offset + batch.num_rows() as u32;
            let from = next_keep;
            while next_keep < decided.keep.len() && decided.keep[next_keep] < end {
                next_keep += 1;
            }
            let local =
                arrow::array::UInt32Array::from_iter_values(decided.keep[from..next_keep].iter().map(|r| r - offset));
            let mut out = arrow::compute::take_record_batch(&batch, &local)?;
            for (field, column) in &decided.columns {
                out = with_column(&out, field.clone(), column.slice(from, next_keep - from))?;
            }
            let first = next_rejected;
            while next_rejected < decided.rejected.len() && decided.rejected[next_rejected].0 < end {
                next_rejected += 1;
            }
            let gone = &decided.rejected[first..next_rejected];
            let mut rows = Dropped::rows(
                &batch,
                gone.iter().map(|(r, reason, detail, _)| ((r - offset) as usize, reason.clone(), detail.clone())),
            )?;
            for (d, (_, _, _, of)) in rows.iter_mut().zip(gone) {
                if let Some(of) = of {
                    d.row[crate::schema::columns::DUP_OF] = of.clone().into();
                }
            }
            offset = end;
            Ok((out, rows))
        };
        let mut rejected_rows = Rejections::default();
        let (output_report, rejected_file) =
            write_stream(&mut reader, self.output, format, &mut apply, &mut rejected_rows)?;
        let second_pass: Vec<String> = reader.reports().iter().map(|r| r.xxh3_128.clone()).collect();
        if second_pass != first_pass {
            return Err(Error::Usage(format!(
                "{}: the input changed while the stage read it twice; run it again",
                self.input.display()
            )));
        }
        let mut rejected = reader.rejections().clone();
        rejected.file = rejected_file;
        rejected.merge(rejected_rows);
        rejected.merge(Rejections { by_reason: decided.dropped, ..Default::default() });
        let mut manifest =
            Manifest::new(self.stage, self.parameters, reader.reports().to_vec(), output_report, rejected, started)?;
        manifest.results = decided.results;
        manifest.write_beside(self.output)?;
        Ok(manifest)
    }
}

/// Sets (or replaces) a column.
pub fn with_column(
    batch: &RecordBatch,
    field: arrow::datatypes::Field,
    column: arrow::array::ArrayRef,
) -> Result<RecordBatch> {
    let mut fields: Vec<arrow::datatypes::Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    match fields.iter().position(|f| f.name() == field.name()) {
        Some(i) => (fields[i], columns[i]) = (field, column),
        None => {
            fields.push(field);
            columns.push(column);
        }
    }
    Ok(RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?)
}

fn refuse_overwriting_an_input(reader: &DatasetReader, output: &Path) -> Result<()> {
    if reader.inputs().iter().any(|p| same_file(p, output)) {
        return Err(Error::Usage(format!(
            "{}: the output would overwrite an input; choose another name",
            output.display()
        )));
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes every batch of `reader`, passed through `f`, to `path` on a writer thread; the rows the reader
/// rejected and the rows `f` dropped go to `<path>.rejected.jsonl` (returned when there are any), the
/// dropped ones also counted in `dropped`. On any error the partial outputs are removed.
pub fn write_stream(
    reader: &mut DatasetReader,
    path: &Path,
    format: OutputFormat,
    f: &mut dyn FnMut(RecordBatch) -> Result<(RecordBatch, Vec<Dropped>)>,
    dropped: &mut Rejections,
) -> Result<(OutputReport, Option<PathBuf>)> {
    let mut rejected = RejectedWriter::beside(path);
    let (tx, rx) = sync_channel::<RecordBatch>(4);
    let path_buf: PathBuf = path.to_path_buf();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<Option<DatasetWriter>> {
            let mut writer: Option<DatasetWriter> = None;
            for batch in rx {
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(DatasetWriter::create(&path_buf, format, batch.schema())?),
                };
                w.write(&batch)?;
            }
            Ok(writer)
        });
        let mut failure = None;
        while let Some(batch) = reader.next() {
            let sent = rejected.write(&reader.take_rejected()).and(batch).and_then(&mut *f).and_then(|(b, gone)| {
                let lines: Vec<serde_json::Value> = gone.iter().map(Dropped::to_json).collect();
                rejected.write_values(&lines)?;
                gone.iter().for_each(|d| dropped.add_reason(&d.reason, || d.example()));
                Ok(b)
            });
            match sent {
                Ok(b) => {
                    if tx.send(b).is_err() {
                        break; // the writer failed: its error is reported below
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        if failure.is_none() {
            failure = rejected.write(&reader.take_rejected()).err();
        }
        let written = writer.join().map_err(|_| Error::Internal("the writer thread panicked".into()))?;
        if let Some(e) = failure {
            return Err(e); // dropping the unfinished writer removes its temporary file
        }
        let writer = match written? {
            Some(w) => w,
            // No rows: the output still gets the stage's columns.
            None => DatasetWriter::create(path, format, f(RecordBatch::new_empty(reader.schema()))?.0.schema())?,
        };
        Ok((writer.finish()?, rejected.finish()?))
    })
}
