//! Curation steps with their parameters, and a pipeline of them (`whet curate PIPELINE.toml`).
//!
//! A [`Step`] is one stage with every parameter it takes, defaults included; `whet filter`, `whet dedup`, …
//! and a pipeline file build the same steps and run them through [`Step::run`], so a stage behaves the same
//! from the command line, a pipeline, Rust and a notebook.
//!
//! ```toml
//! input = "../shared/data/t0-templates"   # paths are relative to this file
//! output = "t0-curated.parquet"
//! seed = 0                                # for every step that takes one, unless the step sets its own
//!
//! [[stage]]
//! run = "filter"
//!
//! [[stage]]
//! run = "dedup"
//! method = "minhash"
//!
//! [[stage]]
//! run = "embed"
//! embedder = "hashing"
//!
//! [[stage]]
//! run = "select"
//! method = "kmq"
//! budget = 0.005
//! label = "source"
//! ```
//!
//! Step i writes `OUTPUT.stages/NN-<stage>.parquet` (the last writes OUTPUT), each with its own manifest; the
//! pipeline checks that every step read exactly what the one before wrote (hash and row count) and writes
//! `OUTPUT.pipeline.json`, which lists the steps' manifests in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use whetstone_datasets::write::{manifest_path, write_atomic};
use whetstone_datasets::{Manifest, OnError, Progress, ReadOptions};

use crate::cluster::{cluster_dataset, cluster_dataset_streaming, KMeans, KMeansOptions, Seeding};
use crate::decontam::decontaminate;
use crate::dedup::exact::dedup_exact;
use crate::dedup::minhash::{dedup_minhash, MinHashOptions};
use crate::dedup::semantic::{dedup_semantic, SemanticIndex, SemanticOptions};
use crate::embed::{embed_dataset, minilm_dir, Embedder, HashingEmbedder, Precision, SentenceEncoder, TextField};
use crate::error::{Error, Result};
use crate::filters::special_tokens::SpecialTokenMode;
use crate::filters::{filter_dataset, EmptyOrRefused, Filter, Length, NonAlphanumeric, RepeatedNgrams};
use crate::select::{select_dataset, Budget, Method, SelectOptions, SelectResults, WeightUpdate};

/// One curation stage and its parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "run", rename_all = "lowercase")]
pub enum Step {
    Filter(FilterStep),
    Dedup(DedupStep),
    Decontam(DecontamStep),
    Embed(EmbedStep),
    Cluster(ClusterStep),
    Select(SelectStep),
}

/// Heuristic quality filters; a row failing one is dropped with that filter's name as the reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterStep {
    pub min_prompt: usize,
    pub max_prompt: usize,
    pub min_response: usize,
    pub max_response: usize,
    /// Largest share of repeated word 3-grams in a prompt or response.
    pub max_repeated: f64,
    /// Largest share of characters that are neither letters, digits nor whitespace.
    pub max_symbols: f64,
    /// Keep empty and refused responses.
    pub keep_refusals: bool,
    /// Special-token strings in the texts (`<|endoftext|>`, `<|im_end|>`, …): keep, strip (from the ends of
    /// each text) or reject.
    pub special_tokens: SpecialTokenMode,
}

impl Default for FilterStep {
    fn default() -> Self {
        FilterStep {
            min_prompt: 1,
            max_prompt: 100_000,
            min_response: 1,
            max_response: 100_000,
            max_repeated: 0.5,
            max_symbols: 0.5,
            keep_refusals: false,
            special_tokens: SpecialTokenMode::Keep,
        }
    }
}

impl FilterStep {
    pub fn filters(&self) -> Vec<Box<dyn Filter>> {
        let mut filters: Vec<Box<dyn Filter>> = vec![
            Box::new(Length {
                min_prompt: self.min_prompt,
                max_prompt: self.max_prompt,
                min_response: self.min_response,
                max_response: self.max_response,
            }),
            Box::new(RepeatedNgrams { n: 3, max_ratio: self.max_repeated }),
            Box::new(NonAlphanumeric { max_ratio: self.max_symbols }),
        ];
        if !self.keep_refusals {
            filters.push(Box::new(EmptyOrRefused));
        }
        filters
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupMethod {
    /// Normalised prompt and response equal.
    Exact,
    /// Word-shingle Jaccard similarity, estimated with MinHash LSH; rows linked through others are one
    /// cluster, which keeps its first row.
    Minhash,
    /// Embedding cosine similarity through an HNSW index (needs an `embedding` column).
    Semantic,
}

impl DedupMethod {
    /// The names a pipeline file and `whet dedup --method` take.
    pub const NAMES: [&'static str; 3] = ["exact", "minhash", "semantic"];
}

/// Drops duplicates; each dropped row names the kept row it duplicates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupStep {
    pub method: DedupMethod,
    /// Jaccard for minhash (default 0.8), cosine for semantic (default 0.95).
    pub threshold: Option<f64>,
    /// minhash: words per shingle.
    pub shingle: usize,
    /// minhash: LSH bands and rows per band (default: the split of 128 permutations nearest the threshold).
    pub bands: Option<usize>,
    pub rows: Option<usize>,
    /// semantic: `clusters` (SemDeDup: compare rows inside k-means clusters) or `hnsw`.
    pub index: SemanticIndex,
    /// semantic, clusters: how many (default √rows), and how many nearest clusters each row searches.
    pub clusters: Option<usize>,
    pub probes: usize,
    /// semantic, hnsw: neighbours looked at per row, and the search breadth.
    pub neighbours: usize,
    pub ef: usize,
    pub seed: Option<u64>,
}

impl DedupStep {
    /// The MinHash settings this step names: its threshold (0.8 if none), shingle, bands and rows (the split
    /// nearest the threshold if none), and its seed, else the pipeline's `seed`.
    pub fn minhash_options(&self, seed: u64) -> Result<MinHashOptions> {
        let auto = MinHashOptions::for_threshold(self.threshold.unwrap_or(0.8), self.seed.unwrap_or(seed))?;
        Ok(MinHashOptions {
            shingle: self.shingle,
            bands: self.bands.unwrap_or(auto.bands),
            rows: self.rows.unwrap_or(auto.rows),
            ..auto
        })
    }
}

impl Default for DedupStep {
    fn default() -> Self {
        let semantic = SemanticOptions::default();
        DedupStep {
            method: DedupMethod::Exact,
            threshold: None,
            shingle: MinHashOptions::for_threshold(0.8, 0).expect("a valid threshold").shingle,
            bands: None,
            rows: None,
            index: semantic.index,
            clusters: semantic.clusters,
            probes: semantic.probes,
            neighbours: semantic.neighbours,
            ef: semantic.ef,
            seed: None,
        }
    }
}

/// Drops rows sharing a word n-gram with an evaluation set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecontamStep {
    /// Evaluation sets: files, directories or globs.
    pub eval: Vec<PathBuf>,
    /// n-gram length in words.
    pub n: usize,
}

impl Default for DecontamStep {
    fn default() -> Self {
        DecontamStep { eval: Vec::new(), n: 13 }
    }
}

/// Adds an `embedding` column.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedStep {
    /// `hashing`, `minilm`, or the folder of a BERT model.
    pub embedder: String,
    pub text: TextField,
    /// Dimension of the hashing embedder.
    pub dim: usize,
    pub seed: Option<u64>,
    /// The precision of a BERT embedder's products (the hashing embedder has none).
    pub precision: Precision,
}

impl Default for EmbedStep {
    fn default() -> Self {
        EmbedStep {
            embedder: "hashing".into(),
            text: TextField::Prompt,
            dim: 512,
            seed: None,
            precision: Precision::F32,
        }
    }
}

impl EmbedStep {
    /// The embedder this step names; the hashing embedder fits its IDF weights on `input`.
    pub fn embedder(&self, input: &Path, read: &ReadOptions, seed: u64) -> Result<Box<dyn Embedder>> {
        Ok(match self.embedder.as_str() {
            "hashing" => Box::new(HashingEmbedder::fit_dataset(
                input,
                read.clone(),
                self.text,
                self.dim,
                self.seed.unwrap_or(seed),
            )?),
            "minilm" => {
                let dir = minilm_dir(Path::new(".")).ok_or_else(|| {
                    Error::Invalid(
                        "no all-MiniLM-L6-v2 model: run scripts/fetch-minilm.sh, set WHETSTONE_MINILM, or name a \
                         model folder as the embedder"
                            .into(),
                    )
                })?;
                Box::new(SentenceEncoder::load(&dir, self.precision)?)
            }
            dir => Box::new(SentenceEncoder::load(Path::new(dir), self.precision)?),
        })
    }
}

/// k-means over the embeddings; adds `cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterStep {
    pub k: usize,
    pub max_iter: usize,
    /// Stop when the centroids move less than this, relative to the data's variance (0: run max_iter).
    pub tol: f64,
    pub seed: Option<u64>,
    /// Mini-batch k-means over the dataset read in passes, this many rows a batch: for datasets larger than
    /// memory (max_iter counts passes). None: Lloyd's algorithm on all rows in memory. On a cluster
    /// (`whet curate --cluster`) k-means is always Lloyd's, the rows staying on the executors.
    pub mini_batch: Option<usize>,
    /// k-means++ seeding: greedy (the lowest inertia), or plain for clusters to select from (see [`Seeding`]).
    pub seeding: Seeding,
}

impl Default for ClusterStep {
    fn default() -> Self {
        let d = KMeansOptions::new(0, 0);
        ClusterStep { k: 0, max_iter: d.max_iter, tol: d.tol, seed: None, mini_batch: None, seeding: d.seeding }
    }
}

impl ClusterStep {
    pub fn options(&self, seed: u64) -> KMeansOptions {
        KMeansOptions {
            max_iter: self.max_iter,
            tol: self.tol,
            seeding: self.seeding,
            ..KMeansOptions::new(self.k, self.seed.unwrap_or(seed))
        }
    }

    /// Runs the stage; the model comes back too.
    pub fn run(
        &self,
        input: &Path,
        output: &Path,
        read: ReadOptions,
        seed: u64,
        on_progress: impl FnOnce(Progress),
    ) -> Result<(Manifest, KMeans)> {
        match self.mini_batch {
            Some(batch) => cluster_dataset_streaming(input, output, &self.options(seed), batch, read, on_progress),
            None => cluster_dataset(input, output, &self.options(seed), read, on_progress),
        }
    }
}

/// A diverse subset under a budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectStep {
    pub method: Method,
    /// A count (200) or a fraction of the rows (0.005).
    #[serde(deserialize_with = "budget_from_number_or_text")]
    pub budget: Budget,
    pub k: Option<usize>,
    pub label: Option<String>,
    pub kmq_random: bool,
    pub kmq_temperature: f32,
    pub round: usize,
    pub score: Option<String>,
    /// iterative: the previous round's select manifest, whose cluster weights this round updates.
    pub weights_from: Option<PathBuf>,
    pub update: WeightUpdate,
    pub max_similarity: f32,
    pub seed: Option<u64>,
}

impl Default for SelectStep {
    /// The select stage's own defaults ([`SelectOptions::new`]), with nothing to read weights from and the
    /// pipeline's seed.
    fn default() -> Self {
        let o = SelectOptions::new(Method::Random, Budget::Fraction(0.01), 0);
        SelectStep {
            method: o.method,
            budget: o.budget,
            k: o.k,
            label: o.label,
            kmq_random: o.kmq_random,
            kmq_temperature: o.kmq_temperature,
            round: o.round,
            score: o.score,
            weights_from: None,
            update: o.update,
            max_similarity: o.max_similarity,
            seed: None,
        }
    }
}

fn budget_from_number_or_text<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Budget, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Count(u64),
        Fraction(f64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Count(n) => n.to_string(),
        Raw::Fraction(f) => f.to_string(),
        Raw::Text(t) => t,
    };
    Budget::parse(&text).map_err(serde::de::Error::custom)
}

impl SelectStep {
    /// The stage's options; `weights_from` is read here.
    pub fn options(&self, seed: u64) -> Result<SelectOptions> {
        let previous_weights = match &self.weights_from {
            None => None,
            Some(path) => {
                let m = Manifest::read(path)?;
                let results: Option<SelectResults> = (m.stage == "select")
                    .then(|| m.results().map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))))
                    .transpose()?;
                let Some(w) = results.and_then(|r| r.cluster_weights) else {
                    return Err(Error::Invalid(format!(
                        "{}: no cluster_weights in its results (a manifest of `whet select --method iterative`?)",
                        path.display()
                    )));
                };
                Some(w)
            }
        };
        Ok(SelectOptions {
            k: self.k,
            label: self.label.clone(),
            round: self.round,
            score: self.score.clone(),
            max_similarity: self.max_similarity,
            previous_weights,
            update: self.update,
            kmq_random: self.kmq_random,
            kmq_temperature: self.kmq_temperature,
            ..SelectOptions::new(self.method, self.budget, self.seed.unwrap_or(seed))
        })
    }
}

impl Step {
    /// The stage's name, as its manifest records it.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Filter(_) => "filter",
            Step::Dedup(_) => "dedup",
            Step::Decontam(_) => "decontam",
            Step::Embed(_) => "embed",
            Step::Cluster(_) => "cluster",
            Step::Select(_) => "select",
        }
    }

    /// Runs the stage from `input` to `output` (and `output`'s manifest). `seed` serves the steps that
    /// take one and set none of their own.
    pub fn run(
        &self,
        input: &Path,
        output: &Path,
        read: ReadOptions,
        seed: u64,
        on_progress: impl FnOnce(Progress),
    ) -> Result<Manifest> {
        match self {
            Step::Filter(f) => {
                let filters = f.filters();
                let mut parameters = serde_json::to_value(f).expect("serialisable");
                parameters["filters"] = filters.iter().map(|f| f.name()).collect::<Vec<_>>().into();
                Ok(filter_dataset(input, output, f.special_tokens, &filters, parameters, read, |p, _| on_progress(p))?
                    .manifest)
            }
            Step::Dedup(d) => {
                let seed = d.seed.unwrap_or(seed);
                match d.method {
                    DedupMethod::Exact => dedup_exact(input, output, read, |p, _| on_progress(p)),
                    DedupMethod::Minhash => {
                        dedup_minhash(input, output, &d.minhash_options(seed)?, read, |p, _| on_progress(p))
                    }
                    DedupMethod::Semantic => {
                        let opts = SemanticOptions {
                            threshold: d.threshold.unwrap_or(0.95) as f32,
                            index: d.index,
                            clusters: d.clusters,
                            probes: d.probes,
                            neighbours: d.neighbours,
                            ef: d.ef,
                            seed,
                        };
                        dedup_semantic(input, output, &opts, read, on_progress)
                    }
                }
            }
            Step::Decontam(d) => decontaminate(input, output, &d.eval, d.n, read, |p, _| on_progress(p)),
            Step::Embed(e) => {
                let embedder = e.embedder(input, &read, seed)?;
                embed_dataset(input, output, embedder.as_ref(), e.text, read, |p, _| on_progress(p))
            }
            Step::Cluster(c) => Ok(c.run(input, output, read, seed, on_progress)?.0),
            Step::Select(s) => Ok(select_dataset(input, output, &s.options(seed)?, read, on_progress)?.0),
        }
    }

    /// Paths in the step's parameters, made relative to `base` (the pipeline file's folder).
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| *p = base.join(&*p);
        match self {
            Step::Decontam(d) => d.eval.iter_mut().for_each(resolve),
            Step::Select(s) => s.weights_from.iter_mut().for_each(resolve),
            Step::Embed(e) if !matches!(e.embedder.as_str(), "hashing" | "minilm") => {
                e.embedder = base.join(&e.embedder).to_string_lossy().into_owned();
            }
            _ => {}
        }
    }
}

/// A pipeline file: an input, an output, and the steps between.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub input: PathBuf,
    pub output: PathBuf,
    #[serde(default)]
    pub seed: u64,
    /// How to read the input: `--map`-style fields (`{ prompt = "question" }`) and `on_error`.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(rename = "stage")]
    pub stages: Vec<Step>,
}

/// One step of a finished pipeline: its stage and where its manifest is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineStep {
    pub stage: String,
    pub output: PathBuf,
    pub manifest: PathBuf,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_rejected: u64,
    pub seconds: f64,
    /// What a cluster did for the step (`whet curate --cluster`); absent when it ran here only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterWork>,
}

/// A step's share of work done on a cluster: the rows it found worth examining (or embedded, or labelled),
/// out of those it read; the seconds the driver took to stage the rows for it, and the seconds the cluster's
/// jobs took. The driver then ran the stage on those rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterWork {
    pub scheduler: String,
    pub rows_read: u64,
    pub rows_examined: u64,
    pub staging_seconds: f64,
    pub seconds: f64,
}

/// What `OUTPUT.pipeline.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineReport {
    pub pipeline: Pipeline,
    pub steps: Vec<PipelineStep>,
    pub seconds: f64,
}

impl Pipeline {
    /// Reads a pipeline file; its relative paths are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("{}: cannot read the pipeline ({e})", path.display())))?;
        let mut pipeline: Pipeline =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        if pipeline.stages.is_empty() {
            return Err(Error::Invalid(format!("{}: no [[stage]] to run", path.display())));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        pipeline.input = base.join(&pipeline.input);
        pipeline.output = base.join(&pipeline.output);
        pipeline.stages.iter_mut().for_each(|s| s.resolve_paths(base));
        Ok(pipeline)
    }

    fn read_options(&self) -> Result<ReadOptions> {
        let pairs: Vec<String> = self.map.iter().map(|(role, field)| format!("{role}={field}")).collect();
        Ok(ReadOptions {
            map: whetstone_datasets::FieldMap::parse(&pairs)?,
            on_error: self.on_error,
            ..Default::default()
        })
    }

    /// Where step `i` writes: the last step writes the pipeline's output, the others a numbered file in
    /// `OUTPUT.stages/`.
    pub fn step_output(&self, i: usize) -> PathBuf {
        if i + 1 == self.stages.len() {
            return self.output.clone();
        }
        let mut dir = self.output.clone().into_os_string();
        dir.push(".stages");
        step_file(&PathBuf::from(dir), i, &self.stages[i])
    }

    /// Runs the steps in order. `on_step(i, step)` is called as step `i` starts, with its progress.
    pub fn run(&self, mut on_step: impl FnMut(usize, &Step, Progress)) -> Result<PipelineReport> {
        self.run_with(|i, step, input, output, read| {
            Ok((step.run(input, output, read, self.seed, |p| on_step(i, step, p))?, None))
        })
    }

    /// Runs the steps in order through `run(i, step, input, output, read)` (see [`link_steps`]) and writes
    /// `OUTPUT.pipeline.json`.
    pub fn run_with(
        &self,
        run: impl FnMut(usize, &Step, &Path, &Path, ReadOptions) -> Result<(Manifest, Option<ClusterWork>)>,
    ) -> Result<PipelineReport> {
        let started = std::time::Instant::now();
        let steps = link_steps(&self.stages, &self.input, self.read_options()?, |i| self.step_output(i), run)?;
        let report = PipelineReport { pipeline: self.clone(), steps, seconds: started.elapsed().as_secs_f64() };
        let mut text = serde_json::to_vec_pretty(&report).expect("serialisable");
        text.push(b'\n');
        write_atomic(&pipeline_report_path(&self.output), &text)?;
        Ok(report)
    }
}

/// `DIR/NN-<stage>.parquet`: where step `i` of a run of steps writes inside a folder.
pub fn step_file(dir: &Path, i: usize, step: &Step) -> PathBuf {
    dir.join(format!("{:02}-{}.parquet", i + 1, step.name()))
}

/// Runs `steps` in order from `input` (read with `read`; later steps read the whetstone Parquet the step
/// before wrote), step `i` writing `output_of(i)`, and checks that every step read exactly what the one before
/// it wrote. `seed` serves the steps that take one and set none of their own. What `whet curate` and the
/// rounds' curation both run.
pub fn run_steps(
    steps: &[Step],
    input: &Path,
    read: ReadOptions,
    seed: u64,
    output_of: impl Fn(usize) -> PathBuf,
    mut on_step: impl FnMut(usize, &Step, Progress),
) -> Result<Vec<PipelineStep>> {
    link_steps(steps, input, read, output_of, |i, step, input, output, read| {
        Ok((step.run(input, output, read, seed, |p| on_step(i, step, p))?, None))
    })
}

/// Runs `steps` in order through `run(i, step, input, output, read)`, where a step's work is done (here, or
/// on a cluster), and checks that every step read exactly what the one before it wrote.
pub fn link_steps(
    steps: &[Step],
    input: &Path,
    read: ReadOptions,
    output_of: impl Fn(usize) -> PathBuf,
    mut run: impl FnMut(usize, &Step, &Path, &Path, ReadOptions) -> Result<(Manifest, Option<ClusterWork>)>,
) -> Result<Vec<PipelineStep>> {
    let mut done: Vec<PipelineStep> = Vec::new();
    let mut input = input.to_path_buf();
    let mut read = Some(read);
    let mut previous: Option<Manifest> = None;
    for (i, step) in steps.iter().enumerate() {
        let output = output_of(i);
        if let Some(dir) = output.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Invalid(format!("{}: cannot create it ({e})", dir.display())))?;
        }
        let (manifest, cluster) = run(i, step, &input, &output, read.take().unwrap_or_default())
            .map_err(|e| Error::Invalid(format!("stage {} ({}): {e}", i + 1, step.name())))?;
        if let Some(prev) = &previous {
            check_link(prev, &manifest)?;
        }
        done.push(PipelineStep {
            stage: manifest.stage.clone(),
            output: output.clone(),
            manifest: manifest_path(&output),
            rows_in: manifest.rows.rows_in,
            rows_out: manifest.rows.rows_out,
            rows_rejected: manifest.rows.rows_rejected,
            seconds: manifest.seconds,
            cluster,
        });
        input = output;
        previous = Some(manifest);
    }
    Ok(done)
}

/// `OUTPUT.pipeline.json`.
pub fn pipeline_report_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".pipeline.json");
    PathBuf::from(p)
}

/// A step must have read exactly what the step before it wrote: same bytes, same rows.
fn check_link(previous: &Manifest, next: &Manifest) -> Result<()> {
    let wrote = &previous.output;
    let read: Vec<_> = next.inputs.iter().collect();
    let linked = read.len() == 1
        && read[0].xxh3_128 == wrote.xxh3_128
        && read[0].rows_in == wrote.rows
        && next.rows.rows_in == previous.rows.rows_out;
    if linked {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "stage {} did not read what stage {} wrote ({} rows, hash {}): the file changed while the pipeline ran?",
            next.stage, previous.stage, wrote.rows, wrote.xxh3_128
        )))
    }
}
