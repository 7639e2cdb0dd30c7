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
//! 6. `mix`: the training set: kept samples (with `accumulate`, those of every round so far) plus a share of
//!    the original human data (replay);
//! 7. `train`: LoRA or full training from the previous round's model (or from the base each round), with the
//!    schedule warmed up afresh; optional self-distillation against the round's starting model;
//! 8. `model`: the LoRA adapter merged into its base, the model of the next round. With `[preference]`
//!    `method = "dpo"` the SFT model (merged into `sft-model`) is then trained with DPO on the round's pairs (`prefer`), with
//!    itself as the reference, and that is the round's model;
//! 9. `eval`: greedy answers to the held-out prompts, scored by the same rewards.
//!
//! Every step writes under `OUT/round-<r>/<step>/` and appears whole or not at all, so a run killed at any
//! point (`kill -9` included) and started again redoes no finished step; training resumes from its checkpoint.
//! Every random choice is a function of the seed and the round, so the resumed run ends with the same model
//! and metrics as an uninterrupted one. After each round `metrics.jsonl`/`metrics.parquet` (one row per
//! round), `rounds.svg` and `report.md` are rewritten; a learning curve fitted to held-out accuracy
//! ([`curve`]) predicts the next round's gain and can stop the loop.

pub mod curve;
#[cfg(feature = "llm")]
pub mod demo;
#[cfg(feature = "llm")]
pub mod first_error;
pub mod report;
#[cfg(feature = "llm")]
mod runner;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use whetstone_curation::pipeline::{DedupMethod, DedupStep, Step as CurationStep};
use whetstone_curation::select::WeightUpdate;

use crate::error::{Error, Result};
use crate::keep::Keep;
use crate::prompt::PromptMode;
use crate::reward::stage::RewardSpec;
use crate::sampling::Sampling;
use crate::train::{Objective, StepMetrics, TrainConfig};

#[cfg(feature = "llm")]
pub use runner::run;

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

/// What a round learns from its chosen/rejected pairs, after SFT on its kept samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    /// Nothing: the pairs are written for other trainers.
    #[default]
    None,
    /// DPO from the SFT model (its own reference).
    Dpo,
}

/// How a round's chosen/rejected pairs are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pairing {
    /// A prompt's best sample against its worst (`whet keep --pairs`).
    #[default]
    BestWorst,
    /// The worst sample against a roll-out that shares its steps up to its first error ([`first_error`]):
    /// costs generation.
    FirstError,
}

/// The `[preference]` table: DPO on each round's pairs after its SFT, with `[train]`'s settings but these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferenceSettings {
    pub method: Preference,
    /// DPO's β.
    pub beta: f64,
    /// Weight of the chosen answers' cross-entropy (RPO; 1 in "Iterative Reasoning Preference Optimization").
    pub rpo_alpha: f64,
    /// Optimizer steps of DPO (`[train]`'s when unset).
    pub steps: Option<usize>,
    /// Peak learning rate of DPO (`[train]`'s when unset; DPO usually wants a smaller one).
    pub lr: Option<f64>,
    /// `best-worst` or `first-error` (roll-outs from each step of the rejected answer).
    pub pairing: Pairing,
    /// first-error: roll-outs from each prefix.
    pub rollouts: usize,
}

impl Default for PreferenceSettings {
    fn default() -> Self {
        PreferenceSettings {
            method: Preference::None,
            beta: 0.1,
            rpo_alpha: 1.0,
            steps: None,
            lr: None,
            pairing: Pairing::BestWorst,
            rollouts: 4,
        }
    }
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
    /// Train each round on the kept samples of every round so far (each text once), not only its own.
    pub accumulate: bool,
    /// Per round, the weight of the training targets against the distribution of the round's starting model
    /// (self-distillation; `distill_alpha` of the trainer). Empty: targets only. The last value repeats.
    pub distill: Vec<f64>,
    pub from: TrainFrom,
    /// The trainer's settings; `base`, `data` and `out` are set by each round.
    pub train: TrainConfig,
    /// DPO on each round's pairs after its SFT (`[preference] method = "dpo"`), or none.
    pub preference: PreferenceSettings,
    /// The rewards that measure held-out answers (`reward` when empty): a verifier where the rounds keep
    /// samples by a reward model.
    pub eval_reward: Vec<String>,
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
            accumulate: false,
            distill: Vec::new(),
            from: TrainFrom::Previous,
            train: TrainConfig::default(),
            preference: PreferenceSettings::default(),
            eval_reward: Vec::new(),
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
        // A reward model's folder (`rm:FOLDER[=WEIGHT]`) is a path too.
        for reward in config.reward.iter_mut().chain(&mut config.eval_reward) {
            let Some(rest) = reward.strip_prefix("rm:") else { continue };
            let (folder, weight) = match rest.rsplit_once('=') {
                Some((f, w)) if w.parse::<f64>().is_ok() => (f, format!("={w}")),
                _ => (rest, String::new()),
            };
            let mut folder = PathBuf::from(folder);
            fix(&mut folder);
            *reward = format!("rm:{}{weight}", folder.display());
        }
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
        if t.objective != Objective::Sft {
            return fail(
                "[train] objective: a round trains SFT on its kept samples; set `[preference] method = \"dpo\"` to add \
                 DPO on its pairs"
                    .into(),
            );
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
        for r in self.reward.iter().chain(&self.eval_reward) {
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
        let p = &self.preference;
        if p.pairing == Pairing::FirstError {
            if p.method != Preference::Dpo {
                return fail(
                    "[preference] pairing = \"first-error\" re-makes the pairs DPO trains on: set method = \"dpo\""
                        .into(),
                );
            }
            if p.rollouts == 0 || !(self.generate.temperature > 0.0) {
                return fail(format!(
                    "[preference] first-error pairing needs rollouts of 1 or more ({}) and sampling that can differ \
                     ([generate] temperature {} must be above 0)",
                    p.rollouts, self.generate.temperature
                ));
            }
        }
        if p.method == Preference::Dpo {
            if !(p.beta > 0.0 && p.beta.is_finite()) || !(p.rpo_alpha >= 0.0 && p.rpo_alpha.is_finite()) {
                return fail(format!(
                    "[preference] beta {} must be above 0 and rpo_alpha {} 0 or more",
                    p.beta, p.rpo_alpha
                ));
            }
            if p.lr.is_some_and(|lr| !(lr > 0.0 && lr.is_finite())) {
                return fail("[preference] lr must be above 0".into());
            }
            let steps = p.steps.or(t.steps);
            if steps == Some(0) || steps.is_some_and(|s| s <= self.train.schedule.warmup) {
                return fail(format!(
                    "[preference] steps {steps:?} must be more than [train]'s schedule warmup ({})",
                    self.train.schedule.warmup
                ));
            }
        }
        if self.eval_max_tokens == 0 {
            return fail("eval_max_tokens must be at least 1".into());
        }
        Ok(())
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
    /// DPO (`[preference]`): the pairs trained on, and the last step's loss, reward margin and accuracy.
    #[serde(default)]
    pub dpo_pairs: u64,
    #[serde(default)]
    pub dpo_loss: Option<f64>,
    #[serde(default)]
    pub dpo_margin: Option<f64>,
    #[serde(default)]
    pub dpo_accuracy: Option<f64>,
    /// first-error pairing: the roll-outs generated and the seconds they took.
    #[serde(default)]
    pub first_error_rollouts: u64,
    #[serde(default)]
    pub first_error_seconds: f64,
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

/// The per-round metrics a run wrote in `out` (its `metrics.jsonl`), for notebooks and reports.
pub fn read_metrics(out: impl AsRef<Path>) -> Result<Vec<RoundMetrics>> {
    crate::folder::read_json_lines(&out.as_ref().join("metrics.jsonl"))
}
