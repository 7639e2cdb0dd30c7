//! `whet rounds`: self-improvement in rounds, resumable step by step.
//!
//! Round 0 measures the base model on the held-out set. Each round `r` then:
//!
//! 1. `select`: chooses prompts from the pool: `iterative` (Diversify and Conquer: k-means clusters of the
//!    pool, each cluster's weight updated from last round's mean reward of its prompts; prompts are not chosen
//!    twice), `random`, or `all`;
//! 2. `generate`: N samples per prompt from the current model (mistral.rs, seeded per round);
//! 3. `reward`: scores each sample against the prompt's reference (the verifiers of [`crate::reward`]);
//! 4. `keep`: keeps samples by reward (best-of-n, top-k, threshold, superbatch, or all as a control) and
//!    writes chosen/rejected pairs of the same prompt for DPO trainers;
//! 5. `curate`: curation stages over the kept samples (exact dedup by default);
//! 6. `mix`: the training set: kept samples plus a share of the original human data (replay);
//! 7. `train`: LoRA or full training from the previous round's model (or from the base each round), with the
//!    schedule warmed up afresh; optional self-distillation against the round's starting model;
//! 8. `model`: the LoRA adapter merged into its base, the model of the next round;
//! 9. `eval`: greedy answers to the held-out prompts, scored by the same rewards.
//!
//! Every step writes under `OUT/round-<r>/<step>/` and appears whole or not at all, so a run killed at any
//! point (`kill -9` included) and started again redoes no finished step; training resumes from its checkpoint.
//! Every random choice is a function of the seed and the round, so the resumed run ends with the same model
//! and metrics as an uninterrupted one. After each round `metrics.jsonl`/`metrics.parquet` (one row per
//! round), `rounds.svg` and `report.md` are rewritten; a learning curve fitted to held-out accuracy
//! ([`curve`]) predicts the next round's gain and can stop the loop.

pub mod curve;
pub mod demo;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, Float32Array, UInt32Array};
use arrow::datatypes::Float32Type;
use serde::{Deserialize, Serialize};
use whetstone_curation::pipeline::{ClusterStep, DedupMethod, DedupStep, EmbedStep, Step as CurationStep};
use whetstone_curation::select::{Budget, Method as SelectMethod, WeightUpdate};
use whetstone_curation::stages::{select_dataset, SelectOptions};
use whetstone_datasets::schema::{self, stage};
use whetstone_datasets::stage::with_column;
use whetstone_datasets::{read_all, Manifest, ReadOptions, StageRun};

use crate::engine::{Engine, EngineOptions, PromptMode};
use crate::error::{Error, Result};
use crate::folder::{read_json, write_folder};
use crate::generate::{Counter, GenerateStep};
use crate::prompt::{column_or_meta, row_response, text_at};
use crate::reward::filter::{pairs, Keep, KeepStep};
use crate::reward::stage::{RewardSpec, RewardStep};
use crate::sampling::Sampling;
use crate::train::{lora, train, Method, StepMetrics, TrainConfig};
use crate::ModelFolder;

/// How a round's prompts are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectSettings {
    /// `iterative`, `random` or `all`.
    pub method: String,
    /// Prompts per round.
    pub prompts: usize,
    /// k-means clusters of the pool (hashing embeddings of the prompts).
    pub clusters: usize,
    /// How cluster weights follow last round's mean rewards (`softmax` accepts clusters that scored 0).
    pub update: WeightUpdate,
}

impl Default for SelectSettings {
    fn default() -> Self {
        SelectSettings { method: "iterative".into(), prompts: 256, clusters: 16, update: WeightUpdate::Softmax }
    }
}

/// Which samples are trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepSettings {
    /// `best-of-n`, `top-k:K`, `threshold`, `superbatch:SIZE` or `all` (no reward filter: a control).
    pub by: String,
    pub min_reward: f64,
}

impl Default for KeepSettings {
    fn default() -> Self {
        KeepSettings { by: "best-of-n".into(), min_reward: 1.0 }
    }
}

/// What each round trains from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainFrom {
    /// The previous round's model (iterated SFT).
    Previous,
    /// The base model every round, on data from the latest model (ReST-EM).
    Base,
}

/// A run of rounds, as `whet rounds CONFIG.toml` reads it (paths relative to the file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoundsConfig {
    /// Round 0's model folder.
    pub base: PathBuf,
    /// The prompt pool: rows with a prompt (or messages) and a reference answer (the response column).
    pub prompts: PathBuf,
    /// The held-out set: prompts with reference answers, never trained on.
    pub eval: PathBuf,
    /// Original human data (prompt and response) mixed into every round's training set.
    pub replay: Option<PathBuf>,
    /// The round folder.
    pub out: PathBuf,
    pub rounds: usize,
    pub seed: u64,
    pub prompt_mode: PromptMode,
    /// Rewards (`whet reward --with` names; `NAME=WEIGHT`).
    pub reward: Vec<String>,
    pub select: SelectSettings,
    /// Sampling of each round (its `seed` is replaced by one derived from the run's seed and the round).
    pub generate: Sampling,
    pub keep: KeepSettings,
    /// Curation stages applied to each round's kept samples, in order (`[[curate]]` tables as in
    /// `whet curate`); by default exact dedup.
    pub curate: Vec<CurationStep>,
    /// Share of each round's training set drawn from `replay` (0 ≤ f < 1).
    pub replay_fraction: f64,
    /// Per round, the weight of the training targets against the distribution of the round's starting model
    /// (self-distillation; `distill_alpha` of the trainer). Empty: targets only. The last value repeats.
    pub distill: Vec<f64>,
    pub from: TrainFrom,
    /// The trainer's settings; `base`, `data` and `out` are set by each round.
    pub train: TrainConfig,
    /// New tokens of a held-out answer.
    pub eval_max_tokens: usize,
    /// Stop when the learning curve predicts the next round adds less held-out accuracy than this.
    pub stop_gain: Option<f64>,
}

impl Default for RoundsConfig {
    fn default() -> Self {
        RoundsConfig {
            base: PathBuf::new(),
            prompts: PathBuf::new(),
            eval: PathBuf::new(),
            replay: None,
            out: PathBuf::new(),
            rounds: 3,
            seed: 0,
            prompt_mode: PromptMode::Chat,
            reward: vec!["exact".into()],
            select: SelectSettings::default(),
            generate: Sampling { n: 4, temperature: 1.0, max_tokens: 64, ..Default::default() },
            keep: KeepSettings::default(),
            curate: vec![CurationStep::Dedup(DedupStep { method: DedupMethod::Exact, ..Default::default() })],
            replay_fraction: 0.25,
            distill: Vec::new(),
            from: TrainFrom::Previous,
            train: TrainConfig::default(),
            eval_max_tokens: 64,
            stop_gain: None,
        }
    }
}

impl RoundsConfig {
    /// Reads a TOML file; relative paths are taken from its folder.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: RoundsConfig =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for p in [&mut config.base, &mut config.prompts, &mut config.eval, &mut config.out] {
            fix(p);
        }
        config.replay.iter_mut().for_each(fix);
        config.train.teacher.iter_mut().for_each(fix);
        Ok(config)
    }

    /// Refuses settings that cannot work, before any round starts.
    pub fn check(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Invalid(m));
        for (name, path) in [("base", &self.base), ("prompts", &self.prompts), ("eval", &self.eval), ("out", &self.out)]
        {
            if path.as_os_str().is_empty() {
                return fail(format!("the rounds need `{name}`"));
            }
        }
        for (name, path) in [("base", &self.base), ("prompts", &self.prompts), ("eval", &self.eval)] {
            if !path.exists() {
                return fail(format!("{name} {}: no such file or folder", path.display()));
            }
        }
        let t = &self.train;
        if !t.base.as_os_str().is_empty() || !t.data.as_os_str().is_empty() || !t.out.as_os_str().is_empty() {
            return fail("[train] takes no base, data or out: each round sets them".into());
        }
        if !["iterative", "random", "all"].contains(&self.select.method.as_str()) {
            return fail(format!("select method {:?}: use iterative, random or all", self.select.method));
        }
        if self.select.method != "all" && (self.select.prompts == 0 || self.select.clusters == 0) {
            return fail("select.prompts and select.clusters must be at least 1".into());
        }
        if self.reward.is_empty() {
            return fail(format!("name at least one reward: {:?}", RewardSpec::NAMES));
        }
        for r in &self.reward {
            RewardSpec::parse(r)?;
        }
        Keep::parse(&self.keep.by)?;
        self.generate.check()?;
        if !(0.0..1.0).contains(&self.replay_fraction) {
            return fail(format!("replay_fraction {} must be in [0, 1)", self.replay_fraction));
        }
        if self.replay_fraction > 0.0 && self.replay.is_none() {
            return fail("replay_fraction above 0 needs `replay` (the original human data)".into());
        }
        if let Some(a) = self.distill.iter().find(|a| !(0.0..=1.0).contains(*a)) {
            return fail(format!("distill weight {a} must be in [0, 1]"));
        }
        if self.eval_max_tokens == 0 {
            return fail("eval_max_tokens must be at least 1".into());
        }
        Ok(())
    }

    fn distill_alpha(&self, round: usize) -> f64 {
        self.distill.get(round - 1).or(self.distill.last()).copied().unwrap_or(1.0)
    }

    /// The seed of one step of one round.
    fn seed_of(&self, round: usize, step: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(
            &[self.seed.to_le_bytes(), (round as u64).to_le_bytes(), step.to_le_bytes()].concat(),
        )
    }
}

/// One round's measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    pub round: usize,
    /// The model measured (after this round's training; round 0: the base).
    pub model: PathBuf,
    pub prompts: u64,
    pub samples: u64,
    pub reward_mean: f64,
    /// Share of samples with at least `min_reward`.
    pub pass_rate: f64,
    pub kept: u64,
    pub kept_fraction: f64,
    /// Distinct responses per prompt, over the samples asked for (1: all differ).
    pub distinct: f64,
    /// Share of the pool's clusters that the kept samples' prompts cover.
    pub diversity: f64,
    pub pairs: u64,
    pub replay_rows: u64,
    pub train_rows: u64,
    pub train_loss: Option<f64>,
    pub held_out_loss: Option<f64>,
    pub held_out_accuracy: f64,
    pub held_out_reward: f64,
    /// The learning curve's prediction of the next round's gain in held-out accuracy.
    pub predicted_gain: Option<f64>,
    pub seconds: f64,
}

/// What the loop reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step starts (`resumed`: a partial training run continues from its checkpoint).
    Step {
        round: usize,
        step: &'static str,
    },
    /// A step was already done by an earlier run.
    Skipped {
        round: usize,
        step: &'static str,
    },
    /// A training step finished (of `steps`).
    Train {
        round: usize,
        metrics: &'a StepMetrics,
        steps: usize,
    },
    Round(&'a RoundMetrics),
    /// The learning curve stopped the loop early.
    Stopped {
        round: usize,
        predicted_gain: f64,
    },
}

/// The whole run: every round's metrics, in order.
#[derive(Debug, Clone, Serialize)]
pub struct RoundsReport {
    pub out: PathBuf,
    pub rounds: Vec<RoundMetrics>,
    pub stopped_early: Option<String>,
}

const SETTINGS_FILE: &str = "rounds.json";

/// The loop's state between steps: the engine of the model that generates now.
struct Runner<'a> {
    config: &'a RoundsConfig,
    engine: Option<Engine>,
    on_event: &'a mut dyn FnMut(Event),
}

fn round_dir(config: &RoundsConfig, round: usize) -> PathBuf {
    config.out.join(format!("round-{round}"))
}

/// The model of round `round` (0: the base).
fn model_of(config: &RoundsConfig, round: usize) -> PathBuf {
    if round == 0 {
        return config.base.clone();
    }
    let dir = round_dir(config, round);
    match config.train.method {
        Method::Lora => dir.join("model"),
        Method::Full => dir.join("train"),
    }
}

fn read_options() -> ReadOptions {
    ReadOptions::default()
}

fn manifest(path: &Path) -> Result<Manifest> {
    Ok(Manifest::read_beside(path)?)
}

fn number(m: &Manifest, key: &str) -> f64 {
    m.results[key].as_f64().unwrap_or(0.0)
}

impl Runner<'_> {
    /// Runs `fill` into `OUT/round-<r>/<step>/` unless an earlier run finished it.
    fn step(
        &mut self,
        round: usize,
        step: &'static str,
        fill: impl FnOnce(&mut Self, &Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dir = round_dir(self.config, round).join(step);
        if dir.is_dir() {
            (self.on_event)(Event::Skipped { round, step });
            return Ok(dir);
        }
        (self.on_event)(Event::Step { round, step });
        let parent = dir.parent().expect("a round folder");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        write_folder(&dir, |partial| fill(self, partial))?;
        Ok(dir)
    }

    /// The engine of `model`, loaded once while it is the one generating.
    fn engine(&mut self, model: &Path) -> Result<&Engine> {
        if self.engine.as_ref().is_none_or(|e| e.folder().path != model) {
            self.engine = None; // one model in memory at a time
            let options = EngineOptions { cpu: self.config.train.cpu, ..Default::default() };
            self.engine = Some(Engine::load(ModelFolder::open(model)?, options)?);
        }
        Ok(self.engine.as_ref().expect("loaded above"))
    }

    fn rewards(&self) -> Result<RewardStep> {
        Ok(RewardStep { rewards: self.config.reward.iter().map(|r| RewardSpec::parse(r)).collect::<Result<_>>()? })
    }

    /// Greedy answers of `model` to the held-out prompts, scored: (accuracy, mean reward).
    fn eval(&mut self, round: usize, model: &Path) -> Result<(f64, f64)> {
        let dir = self.step(round, "eval", |runner, dir| {
            let sampling =
                Sampling { n: 1, temperature: 0.0, max_tokens: runner.config.eval_max_tokens, ..Default::default() };
            let step = GenerateStep { sampling, mode: runner.config.prompt_mode };
            let eval = runner.config.eval.clone();
            let answers = dir.join("answers.parquet");
            step.run(runner.engine(model)?, &eval, &answers, read_options(), &Counter::default(), |_, _| {})?;
            runner.rewards()?.run(&answers, &dir.join("scored.parquet"), read_options())?;
            Ok(())
        })?;
        let m = manifest(&dir.join("scored.parquet"))?;
        let rows = m.results["rows"].as_u64().unwrap_or(0).max(1) as f64;
        Ok((m.results["full_reward"].as_u64().unwrap_or(0) as f64 / rows, number(&m, "mean_reward")))
    }

    /// The pool with embeddings and clusters, made once for the whole run.
    fn pool(&mut self) -> Result<PathBuf> {
        let dir = self.step(0, "pool", |runner, dir| {
            let config = runner.config;
            let embedded = dir.join("embedded.parquet");
            let embed = EmbedStep { dim: 256, ..Default::default() };
            CurationStep::Embed(embed).run(&config.prompts, &embedded, read_options(), config.seed, |_| {})?;
            let cluster = ClusterStep { k: config.select.clusters, ..Default::default() };
            CurationStep::Cluster(cluster).run(
                &embedded,
                &dir.join("pool.parquet"),
                read_options(),
                config.seed,
                |_| {},
            )?;
            std::fs::remove_file(&embedded).map_err(|e| Error::io(&embedded, e))?;
            let _ = std::fs::remove_file(whetstone_datasets::write::manifest_path(&embedded));
            Ok(())
        })?;
        Ok(dir.join("pool.parquet"))
    }

    /// Round `round`'s prompts. Iterative selection first marks the pool with the rounds that chose each
    /// prompt and last round's mean reward of each.
    fn select(&mut self, round: usize) -> Result<PathBuf> {
        let config = self.config;
        if config.select.method == "all" {
            return Ok(config.prompts.clone());
        }
        let pool = self.pool()?;
        let previous_pool =
            if round == 1 { pool.clone() } else { round_dir(config, round - 1).join("select/pool.parquet") };
        let dir = self.step(round, "select", |_, dir| {
            let marked = dir.join("pool.parquet");
            let mut weights = None;
            if round == 1 {
                mark_pool(&previous_pool, None, &marked, 0)?;
            } else {
                let last = round_dir(config, round - 1);
                let selected = last.join("select/prompts.parquet");
                mark_pool(&previous_pool, Some((&selected, &last.join("reward/scored.parquet"))), &marked, round - 1)?;
                weights = serde_json::from_value(manifest(&selected)?.results["cluster_weights"].clone()).ok();
            }
            let method = if config.select.method == "random" { SelectMethod::Random } else { SelectMethod::Iterative };
            let mut opts = SelectOptions::new(method, Budget::Count(config.select.prompts), config.seed_of(round, 1));
            opts.round = round;
            opts.previous_weights = weights;
            opts.update = config.select.update;
            select_dataset(&marked, &dir.join("prompts.parquet"), &opts, read_options(), |_| {})?;
            Ok(())
        })?;
        Ok(dir.join("prompts.parquet"))
    }

    fn round(&mut self, round: usize, started: Instant) -> Result<RoundMetrics> {
        let config = self.config;
        let generator = model_of(config, round - 1);
        let prompts = self.select(round)?;

        let dir = self.step(round, "generate", |runner, dir| {
            let sampling = Sampling { seed: config.seed_of(round, 2), ..config.generate.clone() };
            let step = GenerateStep { sampling, mode: config.prompt_mode };
            let out = dir.join("samples.parquet");
            step.run(runner.engine(&generator)?, &prompts, &out, read_options(), &Counter::default(), |_, _| {})?;
            Ok(())
        })?;
        let samples = dir.join("samples.parquet");
        let generated = manifest(&samples)?;

        let dir = self.step(round, "reward", |runner, dir| {
            runner.rewards()?.run(&samples, &dir.join("scored.parquet"), read_options())?;
            Ok(())
        })?;
        let scored = dir.join("scored.parquet");
        let rewarded = manifest(&scored)?;

        let dir = self.step(round, "keep", |_, dir| {
            let step = KeepStep { keep: Keep::parse(&config.keep.by)?, min_reward: config.keep.min_reward };
            step.run(&scored, &dir.join("kept.parquet"), read_options())?;
            pairs(&scored, &dir.join("pairs.jsonl"), read_options())?;
            Ok(())
        })?;
        let kept = dir.join("kept.parquet");
        let kept_manifest = manifest(&kept)?;
        let pairs_written = std::fs::read_to_string(dir.join("pairs.jsonl")).map_or(0, |t| t.lines().count() as u64);

        let dir = self.step(round, "curate", |_, dir| {
            let mut input = kept.clone();
            for (i, step) in config.curate.iter().enumerate() {
                let output = dir.join(format!("{:02}-{}.parquet", i + 1, step.name()));
                step.run(&input, &output, read_options(), config.seed_of(round, 3), |_| {})?;
                input = output;
            }
            let last = dir.join("curated.parquet");
            std::fs::copy(&input, &last).map_err(|e| Error::io(&last, e))?;
            Ok(())
        })?;
        let curated = dir.join("curated.parquet");

        let dir = self.step(round, "mix", |_, dir| mix(config, round, &curated, dir))?;
        let mix_record = read_json(&dir.join("mix.json"))?;
        let (train_rows, replay_rows) =
            (mix_record["rows"].as_u64().unwrap_or(0), mix_record["replay_rows"].as_u64().unwrap_or(0));

        // Training: the trainer writes its output whole and resumes from its checkpoint beside it.
        let base = match config.from {
            TrainFrom::Previous => generator.clone(),
            TrainFrom::Base => config.base.clone(),
        };
        let trained = round_dir(config, round).join("train");
        let mut train_loss = None;
        let mut held_out_loss = None;
        if train_rows == 0 {
            // Nothing survived the filter: this round's model is its starting model.
            if !trained.exists() {
                write_folder(&trained, |d| {
                    std::fs::write(d.join("no-data.txt"), "no sample passed the filter; the model is unchanged\n")
                        .map_err(|e| Error::io(d, e))
                })?;
            }
        } else if trained.is_dir() {
            (self.on_event)(Event::Skipped { round, step: "train" });
        } else {
            (self.on_event)(Event::Step { round, step: "train" });
            let alpha = config.distill_alpha(round);
            let train_config = TrainConfig {
                base: base.clone(),
                data: dir.join("train.jsonl"),
                eval: Some(config.eval.clone()),
                out: trained.clone(),
                prompt_mode: config.prompt_mode,
                seed: config.seed_of(round, 4),
                distill_alpha: alpha,
                teacher: if alpha < 1.0 {
                    Some(config.train.teacher.clone().unwrap_or_else(|| generator.clone()))
                } else {
                    None
                },
                ..config.train.clone()
            };
            let on_event = &mut *self.on_event;
            train(&train_config, &mut |m, steps| {
                on_event(Event::Train { round, metrics: m, steps });
                true
            })?;
        }
        // The trainer's record: in the model folder (full) or beside the adapter (LoRA).
        let record =
            ["whetstone-trained.json", "whetstone-adapter.json"].iter().find_map(|f| read_json(&trained.join(f)).ok());
        if let Some(record) = record {
            train_loss = record["report"]["final_loss"].as_f64();
            held_out_loss = record["report"]["eval_loss_after"].as_f64();
        }

        let model = if train_rows == 0 {
            // Unchanged: the next round generates with the same model.
            let model = round_dir(config, round).join("model");
            if !model.exists() {
                copy_model(&generator, &model)?;
            }
            model
        } else {
            match config.train.method {
                Method::Full => trained.clone(),
                Method::Lora => {
                    let model = round_dir(config, round).join("model");
                    if model.is_dir() {
                        (self.on_event)(Event::Skipped { round, step: "model" });
                    } else {
                        (self.on_event)(Event::Step { round, step: "model" });
                        lora::merge(&base, &trained, &model)?;
                    }
                    model
                }
            }
        };
        let (accuracy, eval_reward) = self.eval(round, &model)?;

        let samples_n = generated.rows.rows_out;
        let n = config.generate.n.max(1) as f64;
        let prompts_n = generated.rows.rows_in - generated.rows.rows_rejected;
        let pass = passing(&scored, config.keep.min_reward)?;
        Ok(RoundMetrics {
            round,
            model,
            prompts: prompts_n,
            samples: samples_n,
            reward_mean: number(&rewarded, "mean_reward"),
            pass_rate: pass as f64 / samples_n.max(1) as f64,
            kept: kept_manifest.rows.rows_out,
            kept_fraction: kept_manifest.rows.rows_out as f64 / samples_n.max(1) as f64,
            distinct: generated.results["distinct"].as_f64().unwrap_or(0.0) / (prompts_n.max(1) as f64 * n),
            diversity: cluster_coverage(&kept, config.select.clusters)?,
            pairs: pairs_written,
            replay_rows,
            train_rows,
            train_loss,
            held_out_loss,
            held_out_accuracy: accuracy,
            held_out_reward: eval_reward,
            predicted_gain: None,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Samples with at least `min_reward`.
fn passing(scored: &Path, min_reward: f64) -> Result<u64> {
    let (batches, _) = read_all(scored, read_options())?;
    Ok(batches
        .iter()
        .map(|b| {
            let r = b.column_by_name(stage::REWARD).map(|c| c.as_primitive::<Float32Type>().clone());
            r.map_or(0, |r| r.iter().filter(|v| v.is_some_and(|v| v as f64 >= min_reward)).count() as u64)
        })
        .sum())
}

/// The share of `clusters` that the rows of `kept` come from (0 without a cluster column).
fn cluster_coverage(kept: &Path, clusters: usize) -> Result<f64> {
    let (batches, _) = read_all(kept, read_options())?;
    let mut seen = BTreeSet::new();
    for b in &batches {
        if let Some(c) =
            b.column_by_name(stage::CLUSTER).and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt32Type>().cloned())
        {
            seen.extend(c.iter().flatten());
        }
    }
    Ok(seen.len() as f64 / clusters.max(1) as f64)
}

/// A model folder copied file by file (a round that trained on nothing keeps its model).
fn copy_model(from: &Path, to: &Path) -> Result<()> {
    write_folder(to, |dir| {
        for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
            let path = entry.map_err(|e| Error::io(from, e))?.path();
            if path.is_file() {
                let target = dir.join(path.file_name().expect("a file name"));
                std::fs::copy(&path, &target).map_err(|e| Error::io(&target, e))?;
            }
        }
        Ok(())
    })
}

/// The pool of round `round + 1`: `previous` with `round` set on the rows that round `round` chose
/// (`selected`) and `reward` set to each such prompt's mean sample reward (in `scored`); with neither, the
/// pool gets the two columns empty.
fn mark_pool(previous: &Path, last: Option<(&Path, &Path)>, output: &Path, round: usize) -> Result<()> {
    let mut chosen = BTreeSet::new();
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    if let Some((selected, scored)) = last {
        for b in read_all(selected, read_options())?.0 {
            let ids = b.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
            chosen.extend(ids.iter().flatten().map(str::to_owned));
        }
        for b in read_all(scored, read_options())?.0 {
            let reward = b.column_by_name(stage::REWARD).expect("scored").as_primitive::<Float32Type>().clone();
            for row in 0..b.num_rows() {
                let id = column_or_meta(&b, stage::PROMPT_ID, row).unwrap_or_default();
                let e = sums.entry(id).or_default();
                (e.0, e.1) = (e.0 + reward.value(row) as f64, e.1 + 1);
            }
        }
    }
    let run = StageRun {
        stage: "mark-pool",
        parameters: serde_json::json!({"round": round, "selected": last.map(|l| l.0), "scored": last.map(|l| l.1)}),
        input: previous,
        output,
        format: None,
        read: read_options(),
    };
    run.map(
        |_, _| {},
        |batch| {
            let ids = batch.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
            let old_round =
                batch.column_by_name(stage::ROUND).map(|c| c.as_primitive::<arrow::datatypes::UInt32Type>().clone());
            let old_reward = batch.column_by_name(stage::REWARD).map(|c| c.as_primitive::<Float32Type>().clone());
            let mut rounds = Vec::with_capacity(ids.len());
            let mut rewards = Vec::with_capacity(ids.len());
            for row in 0..ids.len() {
                let id = ids.value(row);
                let previous_round = old_round.as_ref().filter(|r| r.is_valid(row)).map(|r| r.value(row));
                rounds.push(if chosen.contains(id) { Some(round as u32) } else { previous_round });
                let previous_reward = old_reward.as_ref().filter(|r| r.is_valid(row)).map(|r| r.value(row));
                rewards.push(match sums.get(id) {
                    Some((s, n)) => Some((s / *n as f64) as f32),
                    None => previous_reward,
                });
            }
            let out = with_column(
                &batch,
                stage::field(stage::ROUND, 0).expect("a stage column"),
                Arc::new(UInt32Array::from(rounds)),
            )?;
            Ok(with_column(
                &out,
                stage::field(stage::REWARD, 0).expect("a stage column"),
                Arc::new(Float32Array::from(rewards)),
            )?)
        },
    )?;
    Ok(())
}

/// One training row as JSON: the conversation when the row has one, else prompt and response; `None` for a
/// row without a prompt or with an empty response.
fn training_row(batch: &arrow::array::RecordBatch, row: usize, id: String, source: &str) -> Option<serde_json::Value> {
    if let Some(turns) = whetstone_datasets::messages_at(batch, row) {
        let turns: Vec<_> = turns.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect();
        return Some(serde_json::json!({"id": id, "messages": turns, "source": source}));
    }
    let prompt = text_at(batch, schema::PROMPT, row)?;
    let response = row_response(batch, row).filter(|r| !r.trim().is_empty())?;
    Some(serde_json::json!({"id": id, "prompt": prompt, "response": response, "source": source}))
}

/// The round's training set: the curated samples, then replay rows drawn (seeded) from the human data so
/// that they make up `replay_fraction` of the whole. Samples with an empty answer are left out and counted.
fn mix(config: &RoundsConfig, round: usize, curated: &Path, dir: &Path) -> Result<()> {
    let mut lines = Vec::new();
    let mut empty = 0;
    for b in read_all(curated, read_options())?.0 {
        let ids = b.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
        for row in 0..b.num_rows() {
            match training_row(&b, row, ids.value(row).to_string(), "self") {
                Some(line) => lines.push(line),
                None => empty += 1, // nothing to learn from an empty answer
            }
        }
    }
    let own = lines.len();
    let mut replay_rows = 0;
    if let (Some(replay), true) = (&config.replay, config.replay_fraction > 0.0) {
        let (batches, _) = read_all(replay, read_options())?;
        let mut human = Vec::new();
        for b in &batches {
            let ids = b.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
            for row in 0..b.num_rows() {
                human.extend(training_row(b, row, format!("replay:{}", ids.value(row)), "replay"));
            }
        }
        let f = config.replay_fraction;
        let want = ((own as f64 * f / (1.0 - f)).round() as usize).min(human.len());
        use rand::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(config.seed_of(round, 5));
        let picked = rand::seq::index::sample(&mut rng, human.len(), want);
        let mut picked: Vec<usize> = picked.into_iter().collect();
        picked.sort_unstable();
        replay_rows = picked.len();
        lines.extend(picked.into_iter().map(|i| human[i].clone()));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = dir.join("train.jsonl");
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    let record = serde_json::json!({"rows": lines.len(), "self_rows": own, "empty_responses_left_out": empty,
        "replay_rows": replay_rows,
        "replay_fraction": config.replay_fraction, "from": curated});
    crate::folder::write_json(&dir.join("mix.json"), &record)
}

/// Removes what killed runs left half-written (`.NAME.partial-PID` folders) in the round folders; training
/// checkpoints stay.
fn remove_partials(out: &Path) -> Result<()> {
    for round in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let round = round.map_err(|e| Error::io(out, e))?.path();
        if !round.is_dir() || !round.file_name().is_some_and(|n| n.to_string_lossy().starts_with("round-")) {
            continue;
        }
        for entry in std::fs::read_dir(&round).map_err(|e| Error::io(&round, e))? {
            let path = entry.map_err(|e| Error::io(&round, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') && name.contains(".partial-") {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// Runs the rounds (resuming a run of the same settings in `config.out`), calling `on_event` as it goes.
pub fn run(config: &RoundsConfig, on_event: &mut dyn FnMut(Event)) -> Result<RoundsReport> {
    config.check()?;
    std::fs::create_dir_all(&config.out).map_err(|e| Error::io(&config.out, e))?;
    let settings = config.out.join(SETTINGS_FILE);
    let recorded = serde_json::to_value(config)?;
    if settings.exists() {
        if read_json(&settings)? != recorded {
            return Err(Error::Invalid(format!(
                "{}: holds rounds run with other settings; choose another out folder or remove it",
                config.out.display()
            )));
        }
    } else {
        let mut text = serde_json::to_string_pretty(&recorded)?;
        text.push('\n');
        whetstone_datasets::write::write_atomic(&settings, text.as_bytes())?;
    }
    remove_partials(&config.out)?;
    let mut runner = Runner { config, engine: None, on_event };
    let started = Instant::now();
    let (accuracy, reward) = runner.eval(0, &config.base)?;
    let mut rounds = vec![RoundMetrics {
        round: 0,
        model: config.base.clone(),
        held_out_accuracy: accuracy,
        held_out_reward: reward,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    }];
    (runner.on_event)(Event::Round(&rounds[0]));
    let mut stopped_early = None;
    for round in 1..=config.rounds {
        let metrics_path = round_dir(config, round).join("metrics.json");
        let mut metrics = match std::fs::read(&metrics_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(_) => {
                let m = runner.round(round, Instant::now())?;
                let text = serde_json::to_string_pretty(&m)?;
                whetstone_datasets::write::write_atomic(&metrics_path, text.as_bytes())?;
                m
            }
        };
        let points: Vec<(f64, f64)> =
            rounds.iter().chain(std::iter::once(&metrics)).map(|m| (m.round as f64, m.held_out_accuracy)).collect();
        metrics.predicted_gain = curve::fit(&points).map(|c| c.next_gain(round as f64));
        (runner.on_event)(Event::Round(&metrics));
        rounds.push(metrics);
        report::write(config, &rounds, None)?;
        let gain = rounds.last().and_then(|m| m.predicted_gain);
        if let (Some(threshold), Some(gain)) = (config.stop_gain, gain) {
            if gain < threshold && round < config.rounds {
                (runner.on_event)(Event::Stopped { round, predicted_gain: gain });
                stopped_early = Some(format!(
                    "stopped after round {round}: the learning curve predicts {:+.1} points from round {} (threshold {:.1})",
                    100.0 * gain,
                    round + 1,
                    100.0 * threshold
                ));
                break;
            }
        }
    }
    report::write(config, &rounds, stopped_early.as_deref())?;
    Ok(RoundsReport { out: config.out.clone(), rounds, stopped_early })
}
