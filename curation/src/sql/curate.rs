//! `whet curate --cluster`: a pipeline whose per-row work runs as SQL on a session (a cluster's), with the
//! same datasets and manifests as the run on one machine.
//!
//! Each step the cluster takes starts the same way: the driver stages the step's input as Parquet with a row
//! number, `_row`, where every executor reads it (shared storage). Then:
//! - filter, exact and MinHash dedup, decontamination: the cluster finds the rows worth examining — those
//!   failing a filter, sharing an n-gram with an evaluation set, or sharing an exact key or a MinHash band key
//!   with another row (the expensive, parallel part); the driver runs the stage's own code on those rows only
//!   ([`ReadOptions::examine`]), keeping the others as they are. Every row the stage would drop is among those
//!   examined, so the output, the rejected rows and the manifest are the single-machine run's. As in
//!   datatrove's MinHash (buckets on workers, clusters on one), which duplicate keeps which is decided on the
//!   driver, over the candidates alone.
//! - embed with a model: the cluster runs `embed`; the driver writes the vectors in row order.
//! - k-means: Lloyd's iterations, each one job over `nearest` and `vector_sum`; the driver keeps the centroids.
//!
//! The other steps run on the driver as they do without a cluster: the hashing embedder (its IDF fit sees
//! every row, and it is cheap), and selection and semantic dedup, which look at every row at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, UInt32Type, UInt64Type};
use datafusion::parquet::arrow::ArrowWriter;
use whetstone_datasets::stage::with_column;
use whetstone_datasets::{schema, DatasetReader, Progress, ReadOptions};

use super::SqlSession;
use crate::cluster::{initial_centroids, label_dataset, KMeans, KMeansOptions};
use crate::embed::{embed_dataset, embeddings_of, with_embedding, Embedder};
use crate::error::{Error, Result};
use crate::filters::special_tokens::SpecialTokenMode;
use crate::pipeline::{ClusterWork, DedupMethod, Pipeline, PipelineReport, Step};

/// The staged rows' position column.
const ROW: &str = "_row";
/// The text an embed step embeds, staged for the cluster.
const TEXT: &str = "_text";

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
    let report = pipeline.run_with(|i, step, input, output, read| {
        let mut on_progress = |p| on_step(i, step, p);
        let seed = pipeline.seed;
        let started = Instant::now();
        let table = format!("step{}", i + 1);
        let staged = staging.join(format!("{:02}-{}-rows.parquet", i + 1, step.name()));
        let staged_at = std::cell::Cell::new(started);
        let staged_inputs = std::cell::RefCell::new(Vec::new());
        let stage = |shape: &dyn Fn(RecordBatch) -> Result<RecordBatch>| -> Result<u64> {
            std::fs::create_dir_all(&staging).map_err(|e| whetstone_datasets::Error::io(&staging, e))?;
            let (rows, inputs) = stage_rows(input, &read, &staged, shape)?;
            staged_at.set(Instant::now());
            *staged_inputs.borrow_mut() = inputs;
            Ok(rows)
        };
        let scheduler = session.scheduler().unwrap_or("this process").to_string();
        let work = |rows_read, rows_examined| ClusterWork {
            scheduler: scheduler.clone(),
            rows_read,
            rows_examined,
            staging_seconds: (staged_at.get() - started).as_secs_f64(),
            seconds: staged_at.get().elapsed().as_secs_f64(),
        };
        let (manifest, work) = match step {
            Step::Cluster(c) => {
                let rows = stage(&|b| Ok(b.project(&[b.schema().index_of(schema::columns::EMBEDDING)?])?))?;
                let opts = c.options(seed);
                let fitted = session.with_parquet(&table, &staged, |s| kmeans(s, &table, rows, &opts, &staging));
                let _ = std::fs::remove_file(&staged);
                let (model, labels, fit_seconds) = fitted?;
                let work = work(rows, rows);
                let (manifest, _) =
                    label_dataset(input, output, &opts, model, &labels, fit_seconds, read.clone(), on_progress)?;
                (manifest, work)
            }
            Step::Embed(e) if e.embedder != "hashing" => {
                let text = e.text;
                let embedder = e.embedder(input, &read, seed)?;
                let rows = stage(&|b| {
                    let texts = StringArray::from(text.texts(&b)?);
                    let none = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
                    let none = RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &none)?;
                    Ok(with_column(&none, Field::new(TEXT, DataType::Utf8, false), Arc::new(texts))?)
                })?;
                // A model folder is read by every executor at the same (absolute) path.
                // The driver's model, at a path every executor sees (so `minilm` is not looked up on each).
                let dir = match e.embedder.as_str() {
                    "minilm" => crate::embed::minilm_dir(Path::new(".")).unwrap_or_else(|| "minilm".into()),
                    dir => PathBuf::from(dir),
                };
                let model = path_literal(&dir)?;
                let query = format!("SELECT {ROW}, embed({TEXT}, {model}) AS embedding FROM {table}");
                let wanted: Vec<u64> = (0..rows).collect();
                let vectors = match rows {
                    0 => Ok(Vec::new()),
                    _ => session.with_parquet(&table, &staged, |s| vectors_by_row(s, &query, &wanted)),
                };
                let _ = std::fs::remove_file(&staged);
                let vectors = Computed {
                    name: embedder.name().to_string(),
                    dim: embedder.dim(),
                    vectors: vectors?,
                    next: Default::default(),
                };
                let work = work(rows, rows);
                let manifest = embed_dataset(input, output, &vectors, text, read.clone(), |p, _| on_progress(p))?;
                (manifest, work)
            }
            _ => {
                let Some(query) = examine_query(step, seed, &table)? else {
                    return Ok((step.run(input, output, read, seed, on_progress)?, None));
                };
                let rows = stage(&|b| Ok(b))?;
                let examine = match rows {
                    0 => Ok(Vec::new()),
                    _ => session.with_parquet(&table, &staged, |s| rows_of(s, &query)),
                };
                let _ = std::fs::remove_file(&staged);
                let examine = examine?;
                let work = work(rows, examine.len() as u64);
                let read = ReadOptions { examine: Some(Arc::new(examine)), ..read };
                (step.run(input, output, read, seed, on_progress)?, work)
            }
        };
        // The cluster's row numbers are positions in what staging read: the stage must have read the same bytes.
        let read_now: Vec<&String> = manifest.inputs.iter().map(|i| &i.xxh3_128).collect();
        if read_now != staged_inputs.borrow().iter().collect::<Vec<_>>() {
            return Err(Error::Invalid(format!(
                "step {} ({}): its input changed while the cluster worked on it; run the pipeline again",
                i + 1,
                step.name()
            )));
        }
        Ok((manifest, Some(work)))
    })?;
    // Empty unless a step failed part-way; then the staged rows are not needed either.
    let _ = std::fs::remove_dir(&staging);
    let _ = staging.parent().map(std::fs::remove_dir);
    Ok(report)
}

/// Lloyd's k-means with the rows on the cluster (`embedding` in `table`, `rows` of them) and the centroids on
/// the driver: each iteration one job, `nearest` and `vector_sum` grouped by centroid (the centroids travel as
/// a Parquet file under `staging`, which the executors read). The seeds are k-means++'s on the same sample as
/// `whet kmeans` draws, fetched by row number; an emptied cluster keeps its centroid. Gives the model, each
/// row's label, and the seconds the fit took.
fn kmeans(
    s: &SqlSession,
    table: &str,
    rows: u64,
    opts: &KMeansOptions,
    staging: &Path,
) -> Result<(KMeans, Vec<u32>, f64)> {
    let fit = Instant::now();
    let n = rows as usize;
    let first = s.query(&format!("SELECT {ROW}, embedding FROM {table} LIMIT 1"))?;
    let dim = match first.batches.iter().find(|b| b.num_rows() > 0) {
        Some(b) => embeddings_of(b)?.1,
        None => return Err(Error::Invalid("k-means over no rows".into())),
    };
    let mut centroids = initial_centroids(n, dim, opts, |picked| {
        let Some(picked) = picked else {
            let all: Vec<u64> = (0..rows).collect();
            return vectors_by_row(s, &format!("SELECT {ROW}, embedding FROM {table}"), &all);
        };
        // The sample comes back by row number; k-means++ takes it in the order drawn, as `whet kmeans` does.
        let mut order: Vec<usize> = (0..picked.len()).collect();
        order.sort_by_key(|&i| picked[i]);
        let wanted: Vec<u64> = order.iter().map(|&i| picked[i] as u64).collect();
        let list: Vec<String> = wanted.iter().map(u64::to_string).collect();
        let query = format!("SELECT {ROW}, embedding FROM {table} WHERE {ROW} IN ({})", list.join(","));
        let by_row = vectors_by_row(s, &query, &wanted)?;
        let mut drawn = vec![0f32; picked.len() * dim];
        for (j, &i) in order.iter().enumerate() {
            drawn[i * dim..(i + 1) * dim].copy_from_slice(&by_row[j * dim..(j + 1) * dim]);
        }
        Ok(drawn)
    })?;
    let mut files = Vec::new();
    // Executors cache a centroids file by path, time and size: each file gets a name of its own, this run's.
    let run = format!("{}-{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos());
    let mut centroids_file = |c: &[f32]| -> Result<String> {
        let path = staging.join(format!("{table}-centroids-{run}-{}.parquet", files.len()));
        write_centroids(&path, c, dim)?;
        files.push(path.clone());
        path_literal(&path)
    };
    let fitted = (|| -> Result<_> {
        // Total variance, for a scale-free tolerance as `whet kmeans` has: squared norms (distances to one
        // zero centroid) less the squared mean.
        let variance = if opts.tol > 0.0 {
            let zero = centroids_file(&vec![0f32; dim])?;
            let r = s.query(&format!(
                "SELECT sum(nearest_distance(embedding, {zero})), vector_sum(embedding) FROM {table}"
            ))?;
            let b = &r.batches[0];
            let sq = b.column(0).as_primitive::<Float64Type>().value(0);
            let sum = b.column(1).as_list::<i32>().value(0);
            let sum = sum.as_primitive::<Float64Type>();
            sq / n as f64 - sum.values().iter().map(|s| (s / n as f64).powi(2)).sum::<f64>()
        } else {
            0.0
        };
        let (mut iterations, mut converged) = (0, false);
        while iterations < opts.max_iter {
            iterations += 1;
            let file = centroids_file(&centroids)?;
            let r = s.query(&format!(
                "SELECT c, vector_sum(embedding), count(*) FROM \
                 (SELECT nearest(embedding, {file}) AS c, embedding FROM {table}) GROUP BY c"
            ))?;
            let mut updated = centroids.clone();
            let mut emptied: std::collections::BTreeSet<usize> = (0..opts.k).collect();
            for b in &r.batches {
                let (c, sums, counts) = (
                    b.column(0).as_primitive::<UInt32Type>(),
                    b.column(1).as_list::<i32>(),
                    b.column(2).as_primitive::<Int64Type>(),
                );
                for g in 0..b.num_rows() {
                    let (c, count) = (c.value(g) as usize, counts.value(g) as f64);
                    emptied.remove(&c);
                    let sum = sums.value(g);
                    let sum = sum.as_primitive::<Float64Type>();
                    updated[c * dim..(c + 1) * dim]
                        .iter_mut()
                        .zip(sum.values())
                        .for_each(|(u, s)| *u = (s / count) as f32);
                }
            }
            if !emptied.is_empty() {
                // As `whet kmeans` does: an emptied cluster takes the row farthest from its centroid.
                let far = s.query(&format!(
                    "SELECT {ROW}, embedding FROM {table} ORDER BY nearest_distance(embedding, {file}) DESC, {ROW} \
                     LIMIT {}",
                    emptied.len()
                ))?;
                let mut rows = Vec::new();
                for b in far.batches.iter().filter(|b| b.num_rows() > 0) {
                    let (values, _) = embeddings_of(b)?;
                    rows.extend(values.chunks(dim).map(<[f32]>::to_vec));
                }
                for (&c, row) in emptied.iter().zip(rows) {
                    updated[c * dim..(c + 1) * dim].copy_from_slice(&row);
                }
            }
            let shift: f64 = updated.iter().zip(&centroids).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            centroids = updated;
            if shift <= opts.tol * variance.max(f64::MIN_POSITIVE) {
                converged = true;
                break;
            }
        }
        let file = centroids_file(&centroids)?;
        let r = s.query(&format!(
            "SELECT {ROW}, nearest(embedding, {file}), nearest_distance(embedding, {file}) FROM {table}"
        ))?;
        let (mut labels, mut sizes, mut inertia) = (vec![u32::MAX; n], vec![0u64; opts.k], 0f64);
        for b in &r.batches {
            let (row, c, d) = (
                b.column(0).as_primitive::<UInt64Type>(),
                b.column(1).as_primitive::<UInt32Type>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                if c.is_null(i) {
                    return Err(Error::Invalid(format!("row {} has no embedding", row.value(i))));
                }
                labels[row.value(i) as usize] = c.value(i);
                sizes[c.value(i) as usize] += 1;
                inertia += d.value(i);
            }
        }
        let labelled: u64 = sizes.iter().sum();
        if labelled != rows {
            return Err(Error::Sql(format!("the cluster gave {labelled} labels for {rows} rows")));
        }
        if let Some(missing) = labels.iter().position(|&l| l == u32::MAX) {
            return Err(Error::Invalid(format!("the cluster gave no label for row {missing}")));
        }
        if !inertia.is_finite() {
            return Err(Error::Invalid("an embedding has a non-finite value".into()));
        }
        let model = KMeans { k: opts.k, dim, centroids, sizes, inertia, iterations, converged };
        Ok((model, labels, fit.elapsed().as_secs_f64()))
    })();
    files.iter().for_each(|f| drop(std::fs::remove_file(f)));
    fitted
}

/// The vectors a query gives (columns `_row` and `embedding`) in the order of `wanted`, the `_row`s it must
/// give, ascending, each once.
fn vectors_by_row(s: &SqlSession, query: &str, wanted: &[u64]) -> Result<Vec<f32>> {
    let result = s.query(query)?;
    let batches: Vec<&RecordBatch> = result.batches.iter().filter(|b| b.num_rows() > 0).collect();
    let mut at: Vec<(u64, usize, usize)> = Vec::with_capacity(result.rows());
    let mut vectors = Vec::with_capacity(batches.len());
    for (b, batch) in batches.iter().enumerate() {
        let rows = batch.column_by_name(ROW).and_then(|c| c.as_primitive_opt::<UInt64Type>());
        let rows = rows.ok_or_else(|| Error::Sql(format!("the query gave no {ROW} column of row numbers")))?;
        at.extend(rows.values().iter().enumerate().map(|(i, &r)| (r, b, i)));
        vectors.push(embeddings_of(batch)?);
    }
    at.sort_unstable();
    if at.len() != wanted.len() || at.iter().zip(wanted).any(|(a, &w)| a.0 != w) {
        return Err(Error::Sql(format!("the cluster gave {} vectors for {} rows", at.len(), wanted.len())));
    }
    let dim = vectors.first().map_or(0, |v| v.1);
    let mut out = Vec::with_capacity(at.len() * dim);
    for &(_, b, i) in &at {
        out.extend_from_slice(&vectors[b].0[i * dim..(i + 1) * dim]);
    }
    Ok(out)
}

/// Writes centroids (row-major, `dim` each) as the Parquet file `nearest` reads, whole or not at all.
fn write_centroids(path: &Path, centroids: &[f32], dim: usize) -> Result<()> {
    let batch = with_embedding(
        RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(centroids.len() / dim)),
        )?,
        centroids.to_vec(),
        dim,
    )?;
    write_parquet(path, std::iter::once(Ok(batch))).map(drop)
}

/// A Parquet file of `batches`, written under a temporary name and renamed: whole or not at all. Gives the
/// rows written; writes nothing when there are none.
fn write_parquet(path: &Path, batches: impl Iterator<Item = Result<RecordBatch>>) -> Result<u64> {
    let partial = path.with_extension("parquet.partial");
    let written = write_partial(&partial, path, batches);
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn write_partial(partial: &Path, path: &Path, batches: impl Iterator<Item = Result<RecordBatch>>) -> Result<u64> {
    let fail = |e: datafusion::parquet::errors::ParquetError| Error::Invalid(format!("{}: {e}", partial.display()));
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut rows = 0;
    for batch in batches {
        let batch = batch?;
        if writer.is_none() {
            let file = std::fs::File::create(&partial).map_err(|e| whetstone_datasets::Error::io(&partial, e))?;
            writer = Some(ArrowWriter::try_new(file, batch.schema(), None).map_err(fail)?);
        }
        writer.as_mut().expect("made above").write(&batch).map_err(fail)?;
        rows += batch.num_rows() as u64;
    }
    let Some(writer) = writer else { return Ok(0) };
    writer.close().map_err(fail)?;
    std::fs::rename(&partial, path).map_err(|e| whetstone_datasets::Error::io(path, e))?;
    Ok(rows)
}

/// Vectors computed on the cluster, served to the embed stage in row order: its manifest names the model
/// that made them, as the run on one machine does.
struct Computed {
    name: String,
    dim: usize,
    vectors: Vec<f32>,
    next: std::sync::Mutex<usize>,
}

impl Embedder for Computed {
    fn name(&self) -> &str {
        &self.name
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&self, texts: &[&str]) -> crate::Result<Vec<f32>> {
        let mut next = self.next.lock().expect("not poisoned");
        let (from, to) = (*next * self.dim, (*next + texts.len()) * self.dim);
        let vectors = self.vectors.get(from..to).ok_or_else(|| {
            Error::Invalid(format!(
                "the stage read more rows than the cluster embedded ({})",
                self.vectors.len() / self.dim
            ))
        })?;
        *next += texts.len();
        Ok(vectors.to_vec())
    }
}

/// The query (over the staged rows' table, `table`) whose `_row`s a step must examine, or None where the step
/// runs on the driver alone. Each finds a superset of the rows the stage drops.
pub fn examine_query(step: &Step, seed: u64, table: &str) -> Result<Option<String>> {
    Ok(Some(match step {
        Step::Filter(f) => {
            let settings = serde_json::to_string(f).expect("serialisable");
            // filter_reason sees the prompt and response; a conversation's other turns may hold special-token
            // strings too, so conversations are examined whole when those are stripped or rejected.
            let turns = if f.special_tokens == SpecialTokenMode::Keep { "" } else { "messages IS NOT NULL OR " };
            format!(
                "SELECT {ROW} FROM {table} WHERE {turns}filter_reason(prompt, response, {}) IS NOT NULL",
                quote(&settings)
            )
        }
        Step::Dedup(d) if d.method == DedupMethod::Exact => format!(
            "SELECT {ROW} FROM (SELECT {ROW}, count(*) OVER (PARTITION BY k) AS n \
             FROM (SELECT {ROW}, exact_key(prompt, response) AS k FROM {table})) WHERE n > 1"
        ),
        Step::Dedup(d) if d.method == DedupMethod::Minhash => {
            let o = d.minhash_options(seed)?;
            if o.seed > 1 << 53 {
                return Err(Error::Invalid(format!("seed {}: on a cluster a MinHash seed must be below 2^53", o.seed)));
            }
            // The text the stage hashes: prompt, a space, response (a missing one empty).
            format!(
                "SELECT DISTINCT {ROW} FROM (SELECT {ROW}, count(*) OVER (PARTITION BY band, key) AS n FROM \
                 (SELECT {ROW}, unnest(minhash(prompt || ' ' || coalesce(response, ''), {}, {}, {}, {}, {})) \
                 AS key, unnest(range(0, {})) AS band FROM {table})) WHERE n > 1",
                o.threshold, o.shingle, o.seed, o.bands, o.rows, o.bands
            )
        }
        Step::Decontam(d) => {
            if d.eval.is_empty() {
                return Err(Error::Invalid("name at least one evaluation set to decontaminate against".into()));
            }
            let mut tests = Vec::new();
            for set in &d.eval {
                let set = path_literal(set)?;
                for text in ["prompt", "coalesce(response, '')"] {
                    tests.push(format!("ngram_overlap({text}, {set}, {}) > 0", d.n));
                }
            }
            format!("SELECT {ROW} FROM {table} WHERE {}", tests.join(" OR "))
        }
        _ => return Ok(None),
    }))
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A path as a SQL string literal, absolute (executors run elsewhere); a path that is not UTF-8 is an error
/// rather than a mangled name.
fn path_literal(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path).map_err(|e| whetstone_datasets::Error::io(path, e))?;
    let text = absolute
        .to_str()
        .ok_or_else(|| Error::Invalid(format!("{}: on a cluster paths must be UTF-8 text", absolute.display())))?;
    Ok(quote(text))
}

/// Writes the rows `input` gives (read as the stage reads them, shaped by `shape`) to `path` as Parquet with
/// their positions in `_row`. Written whole or not at all; nothing when there are none. Gives how many rows,
/// and the xxh3 of each input file read.
fn stage_rows(
    input: &Path,
    read: &ReadOptions,
    path: &Path,
    shape: &dyn Fn(RecordBatch) -> Result<RecordBatch>,
) -> Result<(u64, Vec<String>)> {
    let mut reader = DatasetReader::open(input, ReadOptions { examine: None, ..read.clone() })?;
    let mut next = 0u64;
    let batches = reader.by_ref().map(|batch| {
        let batch = shape(batch?)?;
        let n = batch.num_rows() as u64;
        let numbers: Arc<dyn Array> = Arc::new(UInt64Array::from_iter_values(next..next + n));
        next += n;
        Ok(with_column(&batch, Field::new(ROW, DataType::UInt64, false), numbers)?)
    });
    let rows = write_parquet(path, batches)?;
    Ok((rows, reader.reports().iter().map(|r| r.xxh3_128.clone()).collect()))
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
