//! `whet curate --cluster`: a pipeline whose per-row work runs as SQL on a session (a cluster's), with the
//! same datasets and manifests as the run on one machine.
//!
//! For each step the cluster can take (filter, exact and MinHash dedup, decontamination) the driver stages
//! the step's input as Parquet with a row number, `_row`, where every executor reads it; the cluster runs a
//! query that finds the rows worth examining — those failing a filter, sharing an n-gram with an evaluation
//! set, or sharing an exact key or a MinHash band key with another row (the expensive, parallel part); and the
//! driver then runs the stage's own code on those rows only ([`ReadOptions::examine`]), keeping the others as
//! they are. Every row the stage would drop is among those examined, so the output, the rejected rows and the
//! manifest are the single-machine run's. As in datatrove's MinHash (buckets on workers, clusters on one), the
//! last step — which duplicate keeps which — runs on the driver, over the candidates alone.
//!
//! The other steps (embed, k-means, select, semantic dedup) run on the driver as they do without a cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, UInt64Type};
use datafusion::parquet::arrow::ArrowWriter;
use whetstone_datasets::{DatasetReader, Manifest, Progress, ReadOptions};

use super::SqlSession;
use crate::dedup::minhash::MinHashOptions;
use crate::error::{Error, Result};
use crate::pipeline::{ClusterWork, DedupMethod, Pipeline, PipelineReport, Step};

/// The staged rows' position column.
const ROW: &str = "_row";

/// Runs a pipeline with its per-row work on `session`; staged rows go to `OUTPUT.stages/cluster/`, which
/// must be where every executor reads it (shared storage). `on_step(i, step, progress)` follows the driver's
/// pass of step `i`.
pub fn run_pipeline(
    pipeline: &Pipeline,
    session: &mut SqlSession,
    mut on_step: impl FnMut(usize, &Step, Progress),
) -> Result<PipelineReport> {
    let mut staging = pipeline.output.clone().into_os_string();
    staging.push(".stages/cluster");
    let staging = PathBuf::from(staging);
    pipeline.run_with(|i, step, input, output, read| {
        let Some(query) = examine_query(step, pipeline.seed)? else {
            return Ok((step.run(input, output, read, pipeline.seed, |p| on_step(i, step, p))?, None));
        };
        let started = Instant::now();
        std::fs::create_dir_all(&staging).map_err(|e| whetstone_datasets::Error::io(&staging, e))?;
        let staged = staging.join(format!("{:02}-{}-rows.parquet", i + 1, step.name()));
        let rows_read = stage_rows(input, &read, &staged)?;
        let table = format!("step{}", i + 1);
        let examine = match rows_read {
            0 => Ok(Vec::new()),
            _ => session.with_parquet(&table, &staged, |s| rows_of(s, &query.replace("{rows}", &table))),
        };
        let _ = std::fs::remove_file(&staged);
        let examine = examine?;
        let work = ClusterWork {
            scheduler: session.scheduler().unwrap_or("this process").to_string(),
            rows_read,
            rows_examined: examine.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        };
        let read = ReadOptions { examine: Some(Arc::new(examine)), ..read };
        let manifest: Manifest = step.run(input, output, read, pipeline.seed, |p| on_step(i, step, p))?;
        Ok((manifest, Some(work)))
    })
}

/// The query (over the table `{rows}`) whose `_row`s a step must examine, or None where the step runs on the
/// driver alone. Each finds a superset of the rows the stage drops.
pub fn examine_query(step: &Step, seed: u64) -> Result<Option<String>> {
    Ok(Some(match step {
        Step::Filter(f) => {
            let settings = serde_json::to_string(f).expect("serialisable");
            format!(
                "SELECT {ROW} FROM {{rows}} WHERE filter_reason(prompt, response, {}) IS NOT NULL",
                quote(&settings)
            )
        }
        Step::Dedup(d) if d.method == DedupMethod::Exact => format!(
            "SELECT {ROW} FROM (SELECT {ROW}, count(*) OVER (PARTITION BY k) AS n \
             FROM (SELECT {ROW}, exact_key(prompt, response) AS k FROM {{rows}})) WHERE n > 1"
        ),
        Step::Dedup(d) if d.method == DedupMethod::Minhash => {
            let auto = MinHashOptions::for_threshold(d.threshold.unwrap_or(0.8), d.seed.unwrap_or(seed))?;
            let (bands, rows) = (d.bands.unwrap_or(auto.bands), d.rows.unwrap_or(auto.rows));
            if auto.seed > 1 << 53 {
                return Err(Error::Invalid(format!(
                    "seed {}: on a cluster a MinHash seed must be below 2^53",
                    auto.seed
                )));
            }
            // The text the stage hashes: prompt, a space, response (a missing one empty).
            format!(
                "SELECT DISTINCT {ROW} FROM (SELECT {ROW}, count(*) OVER (PARTITION BY band, key) AS n FROM \
                 (SELECT {ROW}, unnest(minhash(prompt || ' ' || coalesce(response, ''), {}, {}, {}, {bands}, {rows})) \
                 AS key, unnest(range(0, {bands})) AS band FROM {{rows}})) WHERE n > 1",
                auto.threshold, d.shingle, auto.seed
            )
        }
        Step::Decontam(d) => {
            if d.eval.is_empty() {
                return Err(Error::Invalid("name at least one evaluation set to decontaminate against".into()));
            }
            let mut tests = Vec::new();
            for set in &d.eval {
                let set = std::path::absolute(set).map_err(|e| whetstone_datasets::Error::io(set, e))?;
                let set = quote(&set.display().to_string());
                for text in ["prompt", "coalesce(response, '')"] {
                    tests.push(format!("ngram_overlap({text}, {set}, {}) > 0", d.n));
                }
            }
            format!("SELECT {ROW} FROM {{rows}} WHERE {}", tests.join(" OR "))
        }
        _ => return Ok(None),
    }))
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Writes the rows `input` gives (read as the stage reads them) to `path` as Parquet with their positions in
/// `_row`; returns how many. Written whole or not at all.
fn stage_rows(input: &Path, read: &ReadOptions, path: &Path) -> Result<u64> {
    let reader = DatasetReader::open(input, ReadOptions { examine: None, ..read.clone() })?;
    let partial = path.with_extension("parquet.partial");
    let file = std::fs::File::create(&partial).map_err(|e| whetstone_datasets::Error::io(&partial, e))?;
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    let mut rows = 0u64;
    let fail = |e: datafusion::parquet::errors::ParquetError| Error::Invalid(format!("{}: {e}", partial.display()));
    for batch in reader {
        let batch = batch?;
        let n = batch.num_rows() as u64;
        let numbers: Arc<dyn Array> = Arc::new(UInt64Array::from_iter_values(rows..rows + n));
        let batch = whetstone_datasets::stage::with_column(&batch, Field::new(ROW, DataType::UInt64, false), numbers)?;
        if writer.is_none() {
            let f = file.take().expect("one file");
            writer = Some(ArrowWriter::try_new(f, batch.schema(), None).map_err(fail)?);
        }
        writer.as_mut().expect("made above").write(&batch).map_err(fail)?;
        rows += n;
    }
    match writer {
        Some(w) => {
            w.close().map_err(fail)?;
        }
        None => {
            // No rows: nothing to examine, and no table to stage.
            drop(file);
            let _ = std::fs::remove_file(&partial);
            return Ok(0);
        }
    }
    std::fs::rename(&partial, path).map_err(|e| whetstone_datasets::Error::io(path, e))?;
    Ok(rows)
}

/// The `_row`s a query gives, ascending and each once.
fn rows_of(session: &SqlSession, query: &str) -> Result<Vec<u64>> {
    let result = session.query(query)?;
    let mut rows = Vec::with_capacity(result.rows());
    for batch in &result.batches {
        let column: &RecordBatch = batch;
        let values = column.column(0).as_primitive_opt::<UInt64Type>().ok_or_else(|| {
            Error::Sql(format!("the examine query gave {}, not row numbers", column.column(0).data_type()))
        })?;
        rows.extend(values.values().iter().copied());
    }
    rows.sort_unstable();
    rows.dedup();
    Ok(rows)
}
