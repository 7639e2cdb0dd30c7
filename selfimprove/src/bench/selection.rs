//! `whet bench selection`: does diversity selection pay? The analogue of Diversify and Conquer's table on a
//! CPU, with tiny models.
//!
//! 1. Makes the multi-skill pool and its balanced held-out test set ([`super::skills`]).
//! 2. Embeds the pool (the `embed` stage: MiniLM, or the hashing embedder) and near-deduplicates it (the
//!    `dedup` stage, MinHash at its default threshold).
//! 3. For each seed: makes a tiny Llama with random weights (no pre-trained model can be downloaded here),
//!    clusters the pool with k-means, and for each method selects the same number of rows, trains the model
//!    on them with the same steps and schedule, and measures greedy exact-match accuracy per skill.
//!
//! Methods: `random`; `rs2` (the same rounds as `iterative`, each a fresh random slice); `kmq` (the budget
//! split evenly over k-means clusters, rows near each cluster's centre favoured, as `whet select --method
//! kmq` does); `kmq-random` (the same split, rows drawn at random inside a cluster: the paper's kMQ, and
//! `iterative` without its feedback); `iterative` (kMQ in rounds: after each round a model trained on the
//! rows chosen so far is scored on unchosen rows of every cluster, and the next round's budget moves to the
//! clusters it gets wrong); `kcenter` (greedy farthest-point coverage); `dedup+kmq` (kMQ after MinHash
//! near-dedup); `by-skill` (the budget split evenly over the skill labels, which a user does not have: the
//! headroom a skill-aware selection could reach).
//!
//! Every part lands in one folder and is kept: run again and finished (seed, method) results are read back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use whetstone_curation::cluster::{kmeans, KMeansOptions};
use whetstone_curation::embed::embeddings_concat;
use whetstone_curation::pipeline::{DedupMethod, DedupStep, EmbedStep, Step};
use whetstone_curation::select::{self, update_weights, WeightUpdate, Within, DEFAULT_KMQ_TEMPERATURE};
use whetstone_datasets::{schema, DatasetReader, ReadOptions};

use super::skills::{self, SkillRow};
use crate::error::{Error, Result};
use crate::prompt::{Prompt, PromptMode, PromptTokenizer};
use crate::train::data::example;
use crate::train::llama::{Llama, Trainable};
use crate::train::schedule::{Schedule, Shape};
use crate::train::{greedy_exact, train, Method as TrainMethod, StepMetrics, TrainConfig};
use crate::{make_tiny_model, ModelFolder, TinyLlama};

/// The selection methods, in the table's order.
pub const METHODS: [&str; 8] = ["random", "rs2", "kmq", "kmq-random", "iterative", "kcenter", "dedup+kmq", "by-skill"];

/// The benchmark's sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSize {
    /// Rows in the pool, of which `near_copies` (a share) are near-copies of popular rows.
    pub pool: usize,
    pub near_copies: f64,
    pub test_per_skill: usize,
    /// Rows selected, as a share of the pool.
    pub budget: f64,
    pub seeds: usize,
    /// k-means clusters for kmq, iterative and dedup+kmq.
    pub k: usize,
    /// Rounds of iterative selection (and of rs2).
    pub rounds: usize,
    /// Unchosen rows per cluster that score an iterative round's model.
    pub score_rows: usize,
    /// Training: optimizer steps, rows per step (packed), peak learning rate.
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub model: TinyLlama,
}

impl BenchSize {
    /// The full table: about 25 minutes on 2 CPU cores (3 seeds).
    pub fn full() -> Self {
        BenchSize {
            pool: 40_000,
            near_copies: 0.1,
            test_per_skill: 50,
            budget: 0.05,
            seeds: 3,
            k: 200,
            rounds: 3,
            score_rows: 8,
            steps: 400,
            batch: 8,
            lr: 3e-3,
            model: TinyLlama { vocab: 512, context: 128, ..Default::default() },
        }
    }

    /// About a minute: every row of the table, too small to tell the methods apart.
    pub fn quick() -> Self {
        BenchSize {
            pool: 2_500,
            test_per_skill: 20,
            seeds: 1,
            k: 16,
            rounds: 2,
            steps: 40,
            model: TinyLlama { vocab: 400, context: 128, layers: 1, ..Default::default() },
            ..Self::full()
        }
    }

    fn budget_rows(&self) -> usize {
        ((self.pool as f64 * self.budget).round() as usize).clamp(1, self.pool)
    }

    fn check(&self) -> Result<()> {
        if self.seeds == 0 {
            return Err(Error::Invalid("seeds: at least one".into()));
        }
        if self.budget_rows() < self.rounds.max(1) {
            return Err(Error::Invalid(format!(
                "a budget of {} rows cannot be split over {} iterative rounds",
                self.budget_rows(),
                self.rounds
            )));
        }
        Ok(())
    }
}

/// What the benchmark reports as it goes.
#[derive(Debug)]
pub enum BenchEvent<'a> {
    /// A part starts ("data", "embed", "dedup", "seed 0: model", …).
    Part(String),
    /// A training step of (seed, method), an iterative round's scoring model included.
    Train { seed: u64, method: &'a str, metrics: &'a StepMetrics, steps: usize },
    /// A (seed, method) result, measured or read back.
    Result(&'a MethodResult),
}

/// One skill's accuracy for one (seed, method).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillResult {
    pub skill: String,
    /// Rows of this skill in the selected subset.
    pub selected: usize,
    pub test_rows: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// One (seed, method): what was selected and what the trained model scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub seed: u64,
    pub method: String,
    pub selected: usize,
    /// Selected rows that are near-copies of another pool row.
    pub near_copies_selected: usize,
    /// Distinct prompts among the selected rows.
    pub distinct_prompts: usize,
    /// Mean and largest cosine distance from a pool row to its nearest selected row.
    pub mean_distance: f64,
    pub max_distance: f64,
    pub macro_accuracy: f64,
    pub worst_accuracy: f64,
    pub worst_skill: String,
    /// Mean accuracy over the rare skills (≤ 3% of the pool).
    pub rare_accuracy: f64,
    pub final_loss: f64,
    /// Seconds to select and train (an iterative method's scoring models included).
    pub train_seconds: f64,
    pub skills: Vec<SkillResult>,
}

/// Mean and spread (population standard deviation) over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        MeanSd { mean, sd: (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt() }
    }
}

/// One row of the table: a method over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    pub method: String,
    pub seeds: usize,
    pub macro_accuracy: MeanSd,
    pub worst_accuracy: MeanSd,
    pub rare_accuracy: MeanSd,
    /// Macro and rare-skill accuracy minus random's at the same seed (same initial weights and shuffle
    /// seed), over seeds: the comparison with the seed-to-seed variation of initial weights taken out.
    pub macro_vs_random: MeanSd,
    pub rare_vs_random: MeanSd,
    /// Mean accuracy per skill over seeds, in [`skills::SKILLS`] order.
    pub per_skill: Vec<f64>,
    /// Mean selected rows per skill, same order.
    pub selected_per_skill: Vec<f64>,
    pub near_copies_selected: f64,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub out: PathBuf,
    pub size: BenchSize,
    pub embedder: String,
    /// Rows the dedup stage dropped, and how many of them were injected near-copies (of how many).
    pub dedup_dropped: u64,
    pub dedup_dropped_copies: usize,
    pub near_copies: usize,
    pub results: Vec<MethodResult>,
    pub summary: Vec<MethodSummary>,
    pub seconds: f64,
}

/// The pool as the stages read it: `source` holds the skill.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    prompt: &'a str,
    response: &'a str,
    source: &'a str,
}

/// Rows as JSON lines (id, prompt, response, source).
pub(super) fn jsonl<'a>(rows: impl IntoIterator<Item = &'a SkillRow>) -> Result<String> {
    let mut text = String::new();
    for r in rows {
        let line = Line { id: &r.id, prompt: &r.prompt, response: &r.response, source: &r.skill };
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
    }
    Ok(text)
}

/// The ids of a batch's rows (a core column), in order.
fn ids_in(batch: &arrow::array::RecordBatch) -> Vec<String> {
    let ids = arrow::array::AsArray::as_string::<i32>(batch.column_by_name(schema::ID).expect("core column"));
    ids.iter().map(|id| id.unwrap_or_default().to_string()).collect()
}

/// The ids of a dataset's rows, in order.
fn ids_of(path: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for batch in DatasetReader::open(path, ReadOptions::default())? {
        ids.extend(ids_in(&batch?));
    }
    Ok(ids)
}

/// Whether a model folder's greedy answer to each row is exactly its response.
pub fn correct_of(model_dir: &Path, rows: &[&SkillRow], context: usize) -> Result<Vec<bool>> {
    let tokenizer = PromptTokenizer::new(&ModelFolder::open(model_dir)?)?;
    let model = Llama::load(model_dir, &Device::Cpu, DType::F32, &Trainable::Frozen)?;
    let examples = rows
        .iter()
        .map(|r| example(&tokenizer, &Prompt::Text(r.prompt.clone()), &r.response, PromptMode::Chat))
        .collect::<Result<Vec<_>>>()?;
    greedy_exact(&model, &examples, 32, context)
}

/// Accuracy per skill from each test row's verdict (`selected(skill)`: rows of it trained on), and the mean
/// over the rare skills.
pub(super) fn skill_results(
    test: &[SkillRow],
    right: &[bool],
    selected: impl Fn(&str) -> usize,
) -> (Vec<SkillResult>, f64) {
    let skills: Vec<SkillResult> = skills::names()
        .into_iter()
        .map(|name| {
            let (test_rows, correct) = test
                .iter()
                .zip(right)
                .filter(|(r, _)| r.skill == name)
                .fold((0, 0), |(n, k), (_, ok)| (n + 1, k + usize::from(*ok)));
            SkillResult {
                skill: name.into(),
                selected: selected(name),
                test_rows,
                correct,
                accuracy: correct as f64 / test_rows.max(1) as f64,
            }
        })
        .collect();
    let rare = skills::rare();
    let rare_scores: Vec<f64> = skills.iter().filter(|s| rare.contains(s.skill.as_str())).map(|s| s.accuracy).collect();
    let rare_accuracy = rare_scores.iter().sum::<f64>() / rare_scores.len().max(1) as f64;
    (skills, rare_accuracy)
}

/// Records a run's settings in `path`, or checks that the run already there had the same ones (its results
/// are read back, so they must be of this run).
pub(super) fn keep_settings(path: &Path, wanted: &serde_json::Value) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(text) if serde_json::from_str::<serde_json::Value>(&text)? != *wanted => Err(Error::Invalid(format!(
            "{}: holds a run with other settings; choose another folder or remove it",
            path.parent().unwrap_or(path).display()
        ))),
        Ok(_) => Ok(()),
        Err(_) => Ok(whetstone_datasets::write::write_atomic(path, serde_json::to_string_pretty(wanted)?.as_bytes())?),
    }
}

/// A seed for (seed, method, part), so methods draw independently.
pub(super) fn seed_of(seed: u64, method: &str, part: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&[&seed.to_le_bytes()[..], method.as_bytes(), &part.to_le_bytes()[..]].concat())
}

/// The shared state of a run.
struct Bench<'a> {
    dir: &'a Path,
    size: &'a BenchSize,
    pool: Vec<SkillRow>,
    test: Vec<SkillRow>,
    embeddings: Vec<f32>,
    dim: usize,
    /// Pool rows the dedup stage kept.
    deduped: Vec<usize>,
    on_event: &'a mut dyn FnMut(BenchEvent),
}

impl Bench<'_> {
    /// Trains `base` on `rows` (written to `OUT-data.jsonl`) for `steps` into `out`; returns the final loss.
    fn train(&mut self, seed: u64, method: &str, base: &Path, rows: &[usize], steps: usize, out: &Path) -> Result<f64> {
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let data = out.with_file_name(format!("{name}-data.jsonl"));
        whetstone_datasets::write::write_atomic(&data, jsonl(rows.iter().map(|&r| &self.pool[r]))?.as_bytes())?;
        let config = TrainConfig {
            base: base.to_path_buf(),
            data,
            out: out.to_path_buf(),
            method: TrainMethod::Full,
            schedule: Schedule {
                lr: self.size.lr,
                warmup: steps / 20,
                floor: 0.1,
                shape: Shape::Cosine,
                ..Default::default()
            },
            steps: Some(steps),
            batch: self.size.batch,
            seed: seed_of(seed, "train", 0),
            cpu: true,
            ..Default::default()
        };
        let on_event = &mut self.on_event;
        let report = train(&config, &mut |metrics, steps| {
            on_event(BenchEvent::Train { seed, method, metrics, steps });
            true
        })?;
        Ok(report.final_loss)
    }

    /// Iterative kMQ: round one splits its share of the budget evenly over clusters; each later round
    /// trains a model on the rows chosen so far, scores it on up to `score_rows` unchosen rows of each
    /// cluster, and moves weight to the clusters it gets wrong (score = error rate + 0.05, the paper's
    /// multiplicative update).
    fn iterative(&mut self, seed: u64, base: &Path, clusters: &[u32], work: &Path) -> Result<Vec<usize>> {
        let budget = self.size.budget_rows();
        let rounds = self.size.rounds.max(1);
        let mut available = vec![true; self.pool.len()];
        let all: std::collections::BTreeSet<u32> = clusters.iter().copied().collect();
        let mut weights: BTreeMap<u32, f64> = all.iter().map(|&c| (c, 1.0 / all.len() as f64)).collect();
        let mut chosen: Vec<usize> = Vec::new();
        for round in 0..rounds {
            let take = if round + 1 == rounds { budget - chosen.len() } else { budget / rounds };
            if round > 0 {
                let steps = (self.size.steps * chosen.len() / budget).max(1);
                let model = work.join(format!("scoring-round-{round}"));
                if !model.exists() {
                    self.train(seed, "iterative", base, &chosen, steps, &model)?;
                }
                let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
                (0..self.pool.len())
                    .filter(|&r| available[r])
                    .for_each(|r| members.entry(clusters[r]).or_default().push(r));
                let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(seed_of(
                    seed,
                    "iterative-score",
                    round as u64,
                ));
                let scored: Vec<(u32, usize)> = members
                    .iter()
                    .flat_map(|(&c, rows)| {
                        let n = rows.len().min(self.size.score_rows);
                        rand::seq::index::sample(&mut rng, rows.len(), n).into_iter().map(move |i| (c, rows[i]))
                    })
                    .collect();
                let rows: Vec<&SkillRow> = scored.iter().map(|&(_, r)| &self.pool[r]).collect();
                let right = correct_of(&model, &rows, self.size.model.context)?;
                let mut tally: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
                for (&(c, _), ok) in scored.iter().zip(&right) {
                    let t = tally.entry(c).or_default();
                    (t.0, t.1) = (t.0 + if *ok { 0.0 } else { 1.0 }, t.1 + 1.0);
                }
                let scores: BTreeMap<u32, f64> =
                    tally.into_iter().map(|(c, (wrong, n))| (c, wrong / n + 0.05)).collect();
                weights = update_weights(Some(&weights), &scores, WeightUpdate::Paper)?;
            }
            let picks =
                select::iterative(clusters, &available, &weights, take, seed_of(seed, "iterative", round as u64));
            for p in &picks {
                available[p.row] = false;
                chosen.push(p.row);
            }
        }
        Ok(chosen)
    }

    /// The rows `method` selects for `seed`.
    fn select(&mut self, seed: u64, method: &str, base: &Path, clusters: &[u32], work: &Path) -> Result<Vec<usize>> {
        let budget = self.size.budget_rows();
        let n = self.pool.len();
        let rows = |picks: Vec<select::Pick>| picks.into_iter().map(|p| p.row).collect::<Vec<_>>();
        let central = |embeddings| Within::Central { embeddings, dim: self.dim, temperature: DEFAULT_KMQ_TEMPERATURE };
        Ok(match method {
            "random" => rows(select::random(n, budget, seed_of(seed, method, 0))),
            // The rounds' consecutive slices of one random order, trained on together, are its first
            // `budget` rows: rs2's round 0 at the whole budget.
            "rs2" => rows(select::rs2(n, budget, 0, seed_of(seed, method, 0))),
            "kmq" => rows(select::kmq(clusters, budget, None, central(&self.embeddings), seed_of(seed, method, 0))?),
            "kmq-random" => rows(select::kmq(clusters, budget, None, Within::Random, seed_of(seed, method, 0))?),
            "by-skill" => {
                let names = skills::names();
                let labels: Vec<u32> = self
                    .pool
                    .iter()
                    .map(|r| names.iter().position(|n| *n == r.skill).expect("a known skill") as u32)
                    .collect();
                rows(select::kmq(&labels, budget, None, Within::Random, seed_of(seed, method, 0))?)
            }
            "kcenter" => rows(select::kcenter(&self.embeddings, self.dim, budget, seed_of(seed, method, 0))),
            "iterative" => self.iterative(seed, base, clusters, work)?,
            "dedup+kmq" => {
                let kept: Vec<f32> = self
                    .deduped
                    .iter()
                    .flat_map(|&r| self.embeddings[r * self.dim..(r + 1) * self.dim].iter().copied())
                    .collect();
                let k = self.size.k.min(self.deduped.len());
                let (_, c) = kmeans(&kept, self.dim, &KMeansOptions::plain(k, seed_of(seed, "kmeans-dedup", 0)))?;
                let budget = budget.min(self.deduped.len());
                let within = Within::Central { embeddings: &kept, dim: self.dim, temperature: DEFAULT_KMQ_TEMPERATURE };
                rows(select::kmq(&c, budget, None, within, seed_of(seed, method, 0))?)
                    .into_iter()
                    .map(|i| self.deduped[i])
                    .collect()
            }
            other => return Err(Error::Invalid(format!("unknown method {other:?} (choose {})", METHODS.join(", ")))),
        })
    }

    /// Selects, trains and evaluates one (seed, method); a result already on disk is read back.
    fn method(&mut self, seed: u64, method: &str, base: &Path, clusters: &[u32]) -> Result<MethodResult> {
        let work = self.dir.join(format!("seed-{seed}")).join(method.replace('+', "-"));
        let result_path = work.join("result.json");
        if let Ok(text) = std::fs::read_to_string(&result_path) {
            return Ok(serde_json::from_str(&text)?);
        }
        std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        let started = Instant::now();
        let mut chosen = self.select(seed, method, base, clusters, &work)?;
        chosen.sort_unstable();
        let model = work.join("model");
        if model.exists() {
            std::fs::remove_dir_all(&model).map_err(|e| Error::io(&model, e))?;
        }
        let final_loss = self.train(seed, method, base, &chosen, self.size.steps, &model)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let right = correct_of(&model, &self.test.iter().collect::<Vec<_>>(), self.size.model.context)?;
        let coverage = select::coverage(&self.embeddings, self.dim, &chosen, None, None, seed)?;
        let (skills, rare_accuracy) =
            skill_results(&self.test, &right, |name| chosen.iter().filter(|&&r| self.pool[r].skill == name).count());
        let worst = skills.iter().min_by(|a, b| a.accuracy.total_cmp(&b.accuracy)).expect("ten skills");
        let result = MethodResult {
            seed,
            method: method.into(),
            selected: chosen.len(),
            near_copies_selected: chosen.iter().filter(|&&r| self.pool[r].near_copy_of.is_some()).count(),
            distinct_prompts: chosen.iter().map(|&r| self.pool[r].prompt.as_str()).collect::<HashSet<_>>().len(),
            mean_distance: coverage.mean_distance,
            max_distance: coverage.max_distance,
            macro_accuracy: skills.iter().map(|s| s.accuracy).sum::<f64>() / skills.len() as f64,
            worst_accuracy: worst.accuracy,
            worst_skill: worst.skill.clone(),
            rare_accuracy,
            final_loss,
            train_seconds,
            skills,
        };
        // The model is not needed again: keep the selected rows and the result.
        std::fs::remove_dir_all(&model).map_err(|e| Error::io(&model, e))?;
        whetstone_datasets::write::write_atomic(&result_path, serde_json::to_string_pretty(&result)?.as_bytes())?;
        Ok(result)
    }
}

/// The report a run wrote into `dir` (`report.json`).
pub fn read_report(dir: &Path) -> Result<BenchReport> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok(serde_json::from_str(&text)?)
}

/// Runs the benchmark into `dir` with the embedder `embedder` (`minilm`, `hashing`, or a model folder).
pub fn run(dir: &Path, size: &BenchSize, embedder: &str, on_event: &mut dyn FnMut(BenchEvent)) -> Result<BenchReport> {
    let started = Instant::now();
    size.check()?;
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
    on_event(BenchEvent::Part("data".into()));
    let data = skills::make(size.pool, size.test_per_skill, size.near_copies, 0)?;
    let (pool_text, test_text) = (jsonl(&data.pool)?, jsonl(&data.test)?);
    let settings = dir.join("settings.json");
    // Seeds are left out: a seed's results do not depend on how many there are, so a run can be extended.
    // The data's hash is in: results made from other questions (another version of the generators) are
    // not mixed with these.
    let data_hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(format!("{pool_text}{test_text}").as_bytes()));
    let wanted = serde_json::json!({
        "size": BenchSize { seeds: 0, ..size.clone() },
        "embedder": embedder,
        "data": data_hash,
    });
    keep_settings(&settings, &wanted)?;

    let pool_path = data_dir.join("pool.jsonl");
    whetstone_datasets::write::write_atomic(&pool_path, pool_text.as_bytes())?;
    whetstone_datasets::write::write_atomic(&data_dir.join("test.jsonl"), test_text.as_bytes())?;

    let embedded = data_dir.join("pool-embedded.parquet");
    if !embedded.exists() {
        on_event(BenchEvent::Part(format!("embed ({embedder})")));
        let step = Step::Embed(EmbedStep { embedder: embedder.into(), ..Default::default() });
        step.run(&pool_path, &embedded, ReadOptions::default(), 0, |_| {})?;
    }
    let mut reader = DatasetReader::open(&embedded, ReadOptions::default())?;
    let (embeddings, dim, others) = embeddings_concat(&mut reader)?;
    let ids = ids_in(&others);
    if ids.len() != data.pool.len() || ids.iter().zip(&data.pool).any(|(a, r)| *a != r.id) {
        return Err(Error::Invalid(format!(
            "{}: its rows are not the pool's, in order; remove it to embed the pool again",
            embedded.display()
        )));
    }

    let deduped_path = data_dir.join("pool-dedup.parquet");
    if !deduped_path.exists() {
        on_event(BenchEvent::Part("dedup (minhash)".into()));
        let step = Step::Dedup(DedupStep { method: DedupMethod::Minhash, ..Default::default() });
        step.run(&pool_path, &deduped_path, ReadOptions::default(), 0, |_| {})?;
    }
    let row_of: HashMap<&str, usize> = data.pool.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    let kept_ids = ids_of(&deduped_path)?;
    let mut deduped: Vec<usize> = kept_ids
        .iter()
        .map(|id| row_of.get(id.as_str()).copied().ok_or_else(|| Error::Invalid(format!("dedup kept unknown id {id}"))))
        .collect::<Result<_>>()?;
    deduped.sort_unstable();
    let kept: HashSet<usize> = deduped.iter().copied().collect();
    let dropped: Vec<usize> = (0..data.pool.len()).filter(|r| !kept.contains(r)).collect();
    let dedup_dropped_copies = dropped.iter().filter(|&&r| data.pool[r].near_copy_of.is_some()).count();
    let near_copies = data.pool.iter().filter(|r| r.near_copy_of.is_some()).count();

    let mut bench = Bench { dir, size, pool: data.pool, test: data.test, embeddings, dim, deduped, on_event };
    let mut results = Vec::new();
    for seed in 0..size.seeds as u64 {
        let base = dir.join(format!("seed-{seed}/base"));
        if !base.exists() {
            (bench.on_event)(BenchEvent::Part(format!("seed {seed}: model")));
            let spec = TinyLlama { seed, ..size.model.clone() };
            make_tiny_model(&base, std::slice::from_ref(&pool_path), &spec)?;
        }
        (bench.on_event)(BenchEvent::Part(format!("seed {seed}: k-means (k = {})", size.k)));
        let (_, clusters) = kmeans(
            &bench.embeddings,
            bench.dim,
            &KMeansOptions::plain(size.k.min(bench.pool.len()), seed_of(seed, "kmeans", 0)),
        )?;
        for method in METHODS {
            (bench.on_event)(BenchEvent::Part(format!("seed {seed}: {method}")));
            let result = bench.method(seed, method, &base, &clusters)?;
            (bench.on_event)(BenchEvent::Result(&result));
            results.push(result);
        }
    }
    let report = BenchReport {
        out: dir.to_path_buf(),
        size: size.clone(),
        embedder: embedder.into(),
        dedup_dropped: dropped.len() as u64,
        dedup_dropped_copies,
        near_copies,
        summary: summarise(&results),
        results,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_report(&report)?;
    Ok(report)
}

/// The table's rows: each method over seeds.
pub fn summarise(results: &[MethodResult]) -> Vec<MethodSummary> {
    METHODS
        .iter()
        .filter_map(|&method| {
            let rs: Vec<&MethodResult> = results.iter().filter(|r| r.method == method).collect();
            if rs.is_empty() {
                return None;
            }
            let of = |f: &dyn Fn(&MethodResult) -> f64| MeanSd::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let per_skill = |f: &dyn Fn(&SkillResult) -> f64| -> Vec<f64> {
                (0..skills::SKILLS.len())
                    .map(|i| rs.iter().map(|r| f(&r.skills[i])).sum::<f64>() / rs.len() as f64)
                    .collect()
            };
            let versus = |f: &dyn Fn(&MethodResult) -> f64| {
                let differences: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| {
                        let random = results.iter().find(|b| b.method == "random" && b.seed == r.seed)?;
                        Some(f(r) - f(random))
                    })
                    .collect();
                MeanSd::of(&differences)
            };
            Some(MethodSummary {
                method: method.into(),
                macro_vs_random: versus(&|r| r.macro_accuracy),
                rare_vs_random: versus(&|r| r.rare_accuracy),
                seeds: rs.len(),
                macro_accuracy: of(&|r| r.macro_accuracy),
                worst_accuracy: of(&|r| r.worst_accuracy),
                rare_accuracy: of(&|r| r.rare_accuracy),
                per_skill: per_skill(&|s| s.accuracy),
                selected_per_skill: per_skill(&|s| s.selected as f64),
                near_copies_selected: of(&|r| r.near_copies_selected as f64).mean,
            })
        })
        .collect()
}

fn pct(m: MeanSd) -> String {
    format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.sd)
}

fn points(m: MeanSd) -> String {
    format!("{:+.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.sd)
}

/// The report as Markdown: the table, per-skill accuracy and selected rows per skill.
pub fn markdown(r: &BenchReport) -> String {
    let s = &r.size;
    let mut text = format!(
        "# whet bench selection\n\nA pool of {} instructions over {} skills ({}% near-copies of popular rows), {} held-out \
         questions per skill; each method selects {} rows ({:.0}% of the pool); a tiny Llama ({} layers, hidden {}, \
         random initial weights per seed) is trained on them for {} steps of {} packed rows (lr {}, cosine); greedy \
         exact-match accuracy per skill; {} seed(s) (mean ± standard deviation over seeds); embeddings: {}; k = {}.\n\n\
         | method | macro accuracy (%) | worst skill (%) | rare skills (%) | macro vs random, same seed (points) | \
         rare vs random, same seed (points) | near-copies selected |\n|---|---|---|---|---|---|---|\n",
        s.pool,
        skills::SKILLS.len(),
        (100.0 * s.near_copies).round(),
        s.test_per_skill,
        s.budget_rows(),
        100.0 * s.budget,
        s.model.layers,
        s.model.hidden,
        s.steps,
        s.batch,
        s.lr,
        s.seeds,
        r.embedder,
        s.k
    );
    for m in &r.summary {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} |\n",
            m.method,
            pct(m.macro_accuracy),
            pct(m.worst_accuracy),
            pct(m.rare_accuracy),
            points(m.macro_vs_random),
            points(m.rare_vs_random),
            m.near_copies_selected
        ));
    }
    let names = skills::names();
    let header = |title: &str| {
        format!(
            "\n{title}\n\n| method | {} |\n|---|{}\n",
            names
                .iter()
                .zip(&skills::SKILLS)
                .map(|(n, k)| format!("{n} ({}%)", k.percent))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(names.len())
        )
    };
    text.push_str(&header("Accuracy per skill (%, mean over seeds):"));
    for m in &r.summary {
        let cells: Vec<String> = m.per_skill.iter().map(|a| format!("{:.1}", 100.0 * a)).collect();
        text.push_str(&format!("| {} | {} |\n", m.method, cells.join(" | ")));
    }
    text.push_str(&header("Selected rows per skill (mean over seeds):"));
    for m in &r.summary {
        let cells: Vec<String> = m.selected_per_skill.iter().map(|a| format!("{a:.0}")).collect();
        text.push_str(&format!("| {} | {} |\n", m.method, cells.join(" | ")));
    }
    text.push_str(
        "\nMethods: `random`; `rs2` (repeated random sampling: the iterative rounds' sizes, each round a fresh \
         slice of one random order; trained once on the union, as every method is, it is a random draw with \
         its own seed, so its distance from `random` is the spread of random selection); `kmq` (the budget split \
         evenly over k-means clusters, rows near each cluster's centre favoured, as `whet select --method kmq`); \
         `iterative` (kMQ in rounds: a model trained on the rows chosen so far is scored on unchosen rows of \
         every cluster, and the next round's budget moves to the clusters it gets wrong; its scoring models \
         cost about one more training); `kcenter` (greedy farthest-point coverage of the embeddings); \
         `dedup+kmq` (kMQ on the rows MinHash near-dedup keeps); `kmq-random` (kMQ drawing at random inside \
         a cluster, as the paper's code does: `iterative` without its feedback); `by-skill` (the budget split \
         evenly over the skill labels, which a user does not have: what a skill-aware selection could reach).\n",
    );
    text.push_str(&format!(
        "\nThe dedup stage (MinHash, Jaccard 0.8) dropped {} rows, {} of them among the {} injected near-copies. \
         Rare skills: {}. Raw results: `results.parquet` (one row per seed, method and skill). Selecting and \
         training took {:.0} s in all (the sum over results, which a later run reads back instead of redoing).\n",
        r.dedup_dropped,
        r.dedup_dropped_copies,
        r.near_copies,
        skills::rare().into_iter().collect::<Vec<_>>().join(", "),
        r.results.iter().map(|m| m.train_seconds).sum::<f64>()
    ));
    text
}

/// One row of `results.parquet`.
#[derive(Serialize)]
struct ResultRow<'a> {
    seed: u64,
    method: &'a str,
    skill: &'a str,
    selected: u64,
    test_rows: u64,
    correct: u64,
    accuracy: f64,
}

/// `selection.md`, `selection.svg`, `results.parquet` (and `.jsonl`) and `report.json`.
fn write_report(r: &BenchReport) -> Result<()> {
    let rows: Vec<ResultRow> = r
        .results
        .iter()
        .flat_map(|m| {
            m.skills.iter().map(move |s| ResultRow {
                seed: m.seed,
                method: &m.method,
                skill: &s.skill,
                selected: s.selected as u64,
                test_rows: s.test_rows as u64,
                correct: s.correct as u64,
                accuracy: s.accuracy,
            })
        })
        .collect();
    crate::rounds::report::write_rows(&rows, &r.out.join("results.parquet"))?;
    let write = |name: &str, text: &str| whetstone_datasets::write::write_atomic(&r.out.join(name), text.as_bytes());
    write("selection.md", &markdown(r))?;
    write("report.json", &serde_json::to_string_pretty(r)?)?;
    let series: Vec<(String, Vec<(usize, f64)>)> =
        r.summary.iter().map(|m| (m.method.clone(), m.per_skill.iter().copied().enumerate().collect())).collect();
    let names: Vec<String> = skills::names().into_iter().map(String::from).collect();
    let svg = crate::rounds::report::chart_over(
        "whet bench selection: accuracy per skill (skills from most to least frequent)",
        "accuracy (%)",
        &names,
        &series,
    )?;
    write("selection.svg", &svg)?;
    Ok(())
}
