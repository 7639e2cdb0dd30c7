//! The one shape of a stage ([`Stage`]) and the code that runs every stage, written once ([`run_stage`]):
//! read the input, apply the stage batch by batch (or decide over whole columns), write the output
//! atomically with the rejected rows beside it, account for every row, and write the manifest with the
//! stage's typed results. Reading, the stage and writing overlap: the writer runs on its own thread behind a
//! short queue.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, UInt32Type};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::read::{DatasetReader, InputReport, Progress, ReadOptions, Rejections};
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

/// A dataset → dataset stage, in one shape for every crate: a name and parameters (recorded in the manifest)
/// and a `run` that does the stage's work through [`Rows`] — once, by [`Rows::map`], [`Rows::filter`],
/// [`Rows::expand`] or [`Rows::whole_columns`] — and returns what it found. [`run_stage`] does the rest once
/// for all: reading, writing atomically, the rejected rows, counting every row, and the manifest.
pub trait Stage {
    /// What the stage found: its manifest's `results`, read back typed with [`Manifest::results`].
    type Results: Serialize;
    /// The error of the stage's own crate, which the datasets crate's errors convert into.
    type Error: From<Error>;

    /// The name its manifest records.
    fn name(&self) -> &str;
    /// How it was set up, as its manifest records it.
    fn parameters(&self) -> serde_json::Value;
    /// The output's layout; `None` (the default) takes it from the output's file name.
    fn format(&self) -> Option<OutputFormat> {
        None
    }
    fn run(&self, rows: &mut Rows) -> std::result::Result<Self::Results, Self::Error>;
}

/// A finished stage: its manifest (written beside the output) and what it found.
#[derive(Debug)]
pub struct Done<R> {
    pub manifest: Manifest,
    pub results: R,
}

/// Runs `stage` from `input` to `output` and writes the manifest beside the output, once, with the stage's
/// results. `on_progress` gets the reader's byte progress and the stage's row progress as reading starts.
pub fn run_stage<S: Stage + ?Sized>(
    stage: &S,
    input: &Path,
    output: &Path,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress, RowProgress),
) -> std::result::Result<Done<S::Results>, S::Error> {
    let started = SystemTime::now();
    let mut rows = Rows {
        stage: stage.name().to_string(),
        input,
        output,
        format: stage.format(),
        read,
        parameters: stage.parameters(),
        on_progress: Some(Box::new(on_progress)),
        written: None,
    };
    let results = stage.run(&mut rows)?;
    let Some(w) = rows.written else {
        return Err(Error::Internal(format!("stage {} wrote no output", rows.stage)).into());
    };
    let mut manifest = Manifest::new(&rows.stage, rows.parameters, w.inputs, w.output, w.rejected, started, w.per_row)?;
    manifest.set_results(&results);
    manifest.write_beside(output)?;
    Ok(Done { manifest, results })
}

/// What a stage's run gets: where it reads and writes, and the ways to go through the rows, each of which
/// writes the output and counts every row for the manifest.
pub struct Rows<'a> {
    stage: String,
    input: &'a Path,
    output: &'a Path,
    format: Option<OutputFormat>,
    read: ReadOptions,
    /// The parameters the manifest records: a stage may add what it learns setting itself up (the sizes of
    /// the evaluation sets it reads, say).
    pub parameters: serde_json::Value,
    on_progress: Option<Box<dyn FnOnce(Progress, RowProgress) + 'a>>,
    written: Option<Written>,
}

/// What going through the rows wrote, for the manifest.
struct Written {
    inputs: Vec<InputReport>,
    output: OutputReport,
    rejected: Rejections,
    per_row: u64,
}

impl<'a> Rows<'a> {
    pub fn input(&self) -> &'a Path {
        self.input
    }

    /// How the input is read (the field map and what to do with a bad row).
    pub fn read_options(&self) -> &ReadOptions {
        &self.read
    }

    /// The input again, whole, for a stage's second pass.
    fn read_again(&self) -> Result<DatasetReader> {
        DatasetReader::open(self.input, ReadOptions { columns: None, ..self.read.clone() })
    }

    /// The input, read whole or (`columns`) only those columns.
    fn open(&mut self, columns: Option<&[&str]>) -> Result<(DatasetReader, OutputFormat)> {
        if self.written.is_some() {
            return Err(Error::Internal(format!("stage {} went through its rows twice", self.stage)));
        }
        let format = match self.format {
            Some(f) => f,
            None => OutputFormat::from_path(self.output)?,
        };
        let columns = columns.map(|c| Arc::new(c.iter().map(|c| c.to_string()).collect()));
        let reader = DatasetReader::open(self.input, ReadOptions { columns, ..self.read.clone() })?;
        refuse_overwriting_an_input(&reader, self.output)?;
        Ok((reader, format))
    }

    fn progress(&mut self, reader: &DatasetReader, rows: &RowProgress) {
        if let Some(report) = self.on_progress.take() {
            report(reader.progress(), rows.clone());
        }
    }

    /// Maps every batch to a batch of the same rows (adding or changing columns).
    pub fn map(
        &mut self,
        mut f: impl FnMut(RecordBatch) -> std::result::Result<RecordBatch, StageError>,
    ) -> Result<()> {
        let stage = self.stage.clone();
        self.expand(1, |batch| {
            let n = batch.num_rows();
            let out = f(batch)?;
            if out.num_rows() != n {
                return Err(Error::Internal(format!("stage {stage} turned {n} rows into {}", out.num_rows())).into());
            }
            Ok((out, Vec::new()))
        })
    }

    /// Keeps some rows of every batch and drops the others, each with its reason: dropped rows go to
    /// `<output>.rejected.jsonl` and are counted by reason in the manifest.
    ///
    /// With [`ReadOptions::examine`] set, `f` sees only the rows named there; the others are kept as they are.
    pub fn filter(
        &mut self,
        f: impl FnMut(RecordBatch) -> std::result::Result<(RecordBatch, Vec<Dropped>), StageError>,
    ) -> Result<()> {
        match self.read.examine.clone() {
            None => self.expand(1, f),
            Some(rows) => self.expand(1, examine_only(rows, f)),
        }
    }

    /// Writes `per_row` rows for every input row it keeps (generation: N samples per prompt) and drops the
    /// others, each with its reason; the manifest records `per_row`.
    pub fn expand(
        &mut self,
        per_row: u64,
        mut f: impl FnMut(RecordBatch) -> std::result::Result<(RecordBatch, Vec<Dropped>), StageError>,
    ) -> Result<()> {
        let (mut reader, format) = self.open(None)?;
        let rows = RowProgress::default();
        self.progress(&reader, &rows);
        let mut apply = |batch: RecordBatch| -> Result<(RecordBatch, Vec<Dropped>)> {
            let n = batch.num_rows() as u64;
            // A datasets error the stage passed on (a bad row, our own bug) keeps its kind.
            let out = f(batch).map_err(|e| e.downcast::<Error>().map_or_else(Error::Stage, |e| *e))?;
            rows.0.fetch_add(n, Ordering::Relaxed);
            Ok(out)
        };
        let mut dropped = Rejections::default();
        let (output, rejected_file) = write_stream(&mut reader, self.output, format, &mut apply, &mut dropped)?;
        self.wrote(&reader, output, rejected_file, dropped, per_row);
        Ok(())
    }

    /// Records what going through the rows wrote: the reader's rejections and the stage's, together.
    fn wrote(
        &mut self,
        reader: &DatasetReader,
        output: OutputReport,
        file: Option<PathBuf>,
        dropped: Rejections,
        per_row: u64,
    ) {
        let mut rejected = reader.rejections().clone();
        rejected.file = file;
        rejected.merge(dropped);
        self.written = Some(Written { inputs: reader.reports().to_vec(), output, rejected, per_row });
    }
}

/// The column that carries an examined row's position in its batch through a stage's filter.
const EXAMINED_AT: &str = "_examined_at";

/// `f` applied to the rows of each batch that `rows` (positions in the whole input, ascending) names; the
/// other rows are kept. The kept rows come from the batch itself, in its order, so the output is what `f`
/// over every row gives whenever `f` would keep the rows not named.
fn examine_only(
    rows: Arc<Vec<u64>>,
    mut f: impl FnMut(RecordBatch) -> std::result::Result<(RecordBatch, Vec<Dropped>), StageError>,
) -> impl FnMut(RecordBatch) -> std::result::Result<(RecordBatch, Vec<Dropped>), StageError> {
    let (mut offset, mut next) = (0u64, 0usize);
    move |batch: RecordBatch| {
        let end = offset + batch.num_rows() as u64;
        let from = next;
        while next < rows.len() && rows[next] < end {
            next += 1;
        }
        let picked: Vec<u32> = rows[from..next].iter().map(|r| (r - offset) as u32).collect();
        offset = end;
        if picked.is_empty() {
            // Taken, as a stage's own filter takes its kept rows, so the output's bytes are the same too.
            let all = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
            return Ok((arrow::compute::take_record_batch(&batch, &all)?, Vec::new()));
        }
        let positions = UInt32Array::from(picked.clone());
        let examined = arrow::compute::take_record_batch(&batch, &positions)?;
        let examined = with_column(&examined, Field::new(EXAMINED_AT, DataType::UInt32, false), Arc::new(positions))?;
        let (kept, mut dropped) = f(examined)?;
        let kept_at = kept
            .column_by_name(EXAMINED_AT)
            .and_then(|c| c.as_primitive_opt::<UInt32Type>())
            .ok_or_else(|| Error::Internal("a stage's filter lost the examined rows' positions".into()))?;
        // The rows not examined as they were; the examined ones kept as the stage left them (stripped of
        // special-token strings, say), in their places.
        let kept_at: std::collections::HashMap<u32, usize> =
            kept_at.values().iter().enumerate().map(|(k, &at)| (at, k)).collect();
        let mut kept = kept;
        kept.remove_column(kept.schema().index_of(EXAMINED_AT).expect("found above"));
        let rows: Vec<(usize, usize)> = (0..batch.num_rows() as u32)
            .filter_map(|i| match kept_at.get(&i) {
                Some(&k) => Some((1, k)),
                None => picked.binary_search(&i).is_err().then_some((0, i as usize)),
            })
            .collect();
        for d in &mut dropped {
            if let Some(row) = d.row.as_object_mut() {
                row.shift_remove(EXAMINED_AT);
            }
        }
        Ok((arrow::compute::interleave_record_batch(&[&batch, &kept], &rows)?, dropped))
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
}

impl Rows<'_> {
    /// For a stage that needs every row at once, reading only `columns` of them (those the input has): pass
    /// one streams those columns to `f`, batch by batch, and `f` decides; pass two streams the input again
    /// and writes the rows kept, with `f`'s columns added. Memory holds what `f` keeps, not the text.
    pub fn whole_columns(
        &mut self,
        columns: &[&str],
        f: impl FnOnce(&mut dyn Iterator<Item = Result<RecordBatch>>) -> std::result::Result<Selection, StageError>,
    ) -> Result<()> {
        let (mut reader, format) = self.open(Some(columns))?;
        self.progress(&reader, &RowProgress::default());
        let mut rows_in = 0u64;
        let mut batches = reader.by_ref().inspect(|batch| {
            if let Ok(batch) = batch {
                rows_in += batch.num_rows() as u64;
            }
        });
        let decided = f(&mut batches).map_err(Error::Stage);
        // Whatever `f` left unread is read now, so the row count and the input's hash are whole.
        batches.by_ref().try_for_each(|b| b.map(drop))?;
        drop(batches);
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
        let mut reader = self.read_again()?;
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
        let (output, rejected_file) = write_stream(&mut reader, self.output, format, &mut apply, &mut rejected_rows)?;
        let second_pass: Vec<String> = reader.reports().iter().map(|r| r.xxh3_128.clone()).collect();
        if second_pass != first_pass {
            return Err(Error::Usage(format!(
                "{}: the input changed while the stage read it twice; run it again",
                self.input.display()
            )));
        }
        rejected_rows.merge(Rejections { by_reason: decided.dropped, ..Default::default() });
        self.wrote(&reader, output, rejected_file, rejected_rows, 1);
        Ok(())
    }
}

/// What an ordering stage decides from the whole input: the output's rows as positions in the input (each
/// exactly once), and columns added to them (one value per output row, in output order).
#[derive(Default)]
pub struct Reordering {
    pub order: Vec<u32>,
    pub columns: Vec<(arrow::datatypes::Field, arrow::array::ArrayRef)>,
}

impl Rows<'_> {
    /// For a stage that puts the rows in another order: pass one reads every row into memory and `f` decides
    /// from them all; pass two reads the input again (so the reader's rejected rows are written and counted as
    /// every stage's are) and writes the reordered rows in place of each batch, batch for batch. Memory holds
    /// the whole dataset.
    pub fn reorder(
        &mut self,
        f: impl FnOnce(&RecordBatch) -> std::result::Result<Reordering, StageError>,
    ) -> Result<()> {
        let (mut reader, format) = self.open(None)?;
        self.progress(&reader, &RowProgress::default());
        let batches = reader.by_ref().collect::<Result<Vec<_>>>()?;
        let all = arrow::compute::concat_batches(&reader.schema(), &batches)?;
        drop(batches);
        // A datasets error the stage passed on keeps its kind.
        let decided = f(&all).map_err(|e| e.downcast::<Error>().map_or_else(Error::Stage, |e| *e))?;
        let n = all.num_rows();
        let mut seen = vec![false; n];
        let permutation = decided.order.len() == n
            && decided.order.iter().all(|&r| (r as usize) < n && !std::mem::replace(&mut seen[r as usize], true));
        if !permutation || decided.columns.iter().any(|(_, c)| c.len() != n) {
            return Err(Error::Internal(format!(
                "stage {} reordered {n} rows into {}",
                self.stage,
                decided.order.len()
            )));
        }
        let mut ordered = arrow::compute::take_record_batch(&all, &UInt32Array::from(decided.order))?;
        drop(all);
        for (field, column) in decided.columns {
            ordered = with_column(&ordered, field, column)?;
        }
        let first_pass: Vec<String> = reader.reports().iter().map(|r| r.xxh3_128.clone()).collect();

        let mut reader = self.read_again()?;
        let mut offset = 0;
        let mut apply = |batch: RecordBatch| -> Result<(RecordBatch, Vec<Dropped>)> {
            let rows = batch.num_rows().min(ordered.num_rows() - offset);
            offset += rows;
            Ok((ordered.slice(offset - rows, rows), Vec::new()))
        };
        let mut dropped = Rejections::default();
        let (output, rejected_file) = write_stream(&mut reader, self.output, format, &mut apply, &mut dropped)?;
        let second_pass: Vec<String> = reader.reports().iter().map(|r| r.xxh3_128.clone()).collect();
        if second_pass != first_pass || offset != n {
            return Err(Error::Usage(format!(
                "{}: the input changed while the stage read it twice; run it again",
                self.input.display()
            )));
        }
        self.wrote(&reader, output, rejected_file, dropped, 1);
        Ok(())
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
                let lines: Vec<serde_json::Value> = gone.par_iter().map(Dropped::to_json).collect();
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
