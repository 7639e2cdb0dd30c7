//! The trainer: supervised fine-tuning with LoRA adapters, or all weights (pre-training a tiny model from
//! scratch), on candle, the candle inside mistral.rs.
//!
//! - [`llama`]: the trainable forward pass; [`lora`]: adapters in the PEFT layout and merged folders;
//!   [`optim`]: AdamW; [`schedule`]: learning rates for rounds; [`data`]: examples, packing, batches;
//!   [`preference`]: DPO on chosen/rejected pairs; [`ranking`]: reward models (a head that ranks answers);
//!   [`order`]: the order examples come in (random, the file's, easy-to-hard, skill-it).
//! - What is learned ([`Objective`]): SFT on responses (below), DPO, or a reward model; all three share the
//!   step loop, the optimizer, checkpoints and metrics.
//! - The loss covers response tokens only (the prompt is masked), averaged over the response tokens of an
//!   optimizer step (all its micro-batches together). Optional terms: β·KL(model ‖ frozen reference), SuperHF's
//!   guard against drifting from the base, and distillation: α × the gold answer's cross-entropy + (1 − α) ×
//!   KL(teacher ‖ model) over the whole vocabulary ("Even your Teacher Needs Guidance").
//! - A run is resumable: a checkpoint (trainable weights, optimizer moments, step, metrics) is written beside
//!   the output every `checkpoint_every` steps; the same command started again continues from it and ends
//!   with the same weights as an uninterrupted run (dropout masks and data order are functions of the seed
//!   and the step).

pub mod data;
pub mod llama;
pub mod lora;
pub mod optim;
pub mod order;
pub mod preference;
pub mod ranking;
pub mod schedule;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use serde_json::json;
use whetstone_datasets::read::Rejections;
pub use whetstone_datasets::OnError;

use crate::chart::{self, Axes, Line};
use crate::error::{Error, Result};
use crate::folder::{load_tensors, save_tensors, write_folder, write_json};
use crate::prompt::{PromptMode, PromptTokenizer};
use crate::ModelFolder;
use data::{Example, Examples};
use llama::{Dropout, Inputs, Llama, Trainable};
use lora::LoraSpec;
use optim::{AdamW, AdamWConfig};
use order::{Curriculum, Measure, Order, OrderState, OrderUpdate, Skills};
use preference::{PairMetrics, PairSums};
use ranking::Ranked;
use schedule::Schedule;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// LoRA adapters; the output is a PEFT adapter folder.
    Lora,
    /// Every weight; the output is a complete model folder.
    Full,
}

impl Method {
    pub const NAMES: [&'static str; 2] = ["lora", "full"];
}

/// What is learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Supervised fine-tuning: the responses of prompt/response rows.
    #[default]
    Sft,
    /// Direct preference optimisation on chosen/rejected pairs ([`preference`]): `data` and `eval` are pairs
    /// files, as `whet keep --pairs` writes them.
    Dpo,
    /// A reward model ([`ranking`]): a head on the last hidden state that ranks a pairs file's chosen answers
    /// above its rejected ones, or a prompt's scored samples by their rewards.
    Reward,
}

impl Objective {
    pub const NAMES: [&'static str; 3] = ["sft", "dpo", "reward"];
}

/// LoRA's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, targets: ["q_proj", "v_proj"].map(String::from).to_vec() }
    }
}

/// A training run, as `whet train CONFIG.toml` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The model folder trained (LoRA's base).
    pub base: PathBuf,
    /// The training dataset (file, folder or glob): prompt and response, or conversations.
    pub data: PathBuf,
    /// A held-out dataset: its loss is measured before training, every `eval_every` steps and at the end.
    pub eval: Option<PathBuf>,
    /// The output folder: an adapter (LoRA) or a model folder (full).
    pub out: PathBuf,
    pub method: Method,
    pub objective: Objective,
    /// DPO's β: how far the policy may move from the reference for a given preference (TRL's default 0.1).
    pub beta: f64,
    /// DPO: weight of the chosen answers' cross-entropy added to the loss (RPO; 0: none).
    pub rpo_alpha: f64,
    pub prompt_mode: PromptMode,
    pub lora: LoraConfig,
    pub schedule: Schedule,
    pub optimizer: AdamWConfig,
    pub epochs: usize,
    /// Optimizer steps; overrides `epochs` when set.
    pub steps: Option<usize>,
    /// Rows per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accumulation: usize,
    /// Tokens in a training row; the model's context when unset.
    pub max_len: Option<usize>,
    /// Lay short examples end to end in a row (each still sees only itself).
    pub packing: bool,
    /// Learn the prompt's tokens too (pre-training on plain text).
    pub train_on_prompt: bool,
    pub seed: u64,
    /// Steps between checkpoints (0: none).
    pub checkpoint_every: usize,
    /// Steps between held-out measurements (0: only before and after).
    pub eval_every: usize,
    /// Weight β of KL(model ‖ reference); the reference is the base (LoRA: the model without adapters).
    pub kl_beta: f64,
    /// A teacher model folder (same tokenizer) for distillation.
    pub teacher: Option<PathBuf>,
    /// Weight α of the gold answer against the teacher's distribution (1: gold only).
    pub distill_alpha: f64,
    /// `auto` (f32 on the CPU and for full training; bf16 for LoRA's base on a GPU), `f32` or `bf16`.
    pub dtype: String,
    /// Train on the CPU even in a CUDA build.
    pub cpu: bool,
    /// Rows that cannot be trained on: `fail` (an error naming the row) or `skip` (counted).
    pub on_error: OnError,
    /// The order examples come in (SFT): random, file, easy-to-hard or skill-it ([`order`]).
    pub order: Order,
    /// skill-it: the column of `data` and `eval` that names each row's skill (a source, or `cluster`).
    pub skill_column: Option<String>,
    /// easy-to-hard and skill-it: steps between re-orderings (0: a tenth of the run).
    pub order_every: usize,
    /// skill-it's η: how strongly a skill's held-out loss raises its weight.
    pub skill_it_eta: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            base: PathBuf::new(),
            data: PathBuf::new(),
            eval: None,
            out: PathBuf::new(),
            method: Method::Lora,
            objective: Objective::Sft,
            beta: 0.1,
            rpo_alpha: 0.0,
            prompt_mode: PromptMode::Chat,
            lora: LoraConfig::default(),
            schedule: Schedule::default(),
            optimizer: AdamWConfig::default(),
            epochs: 1,
            steps: None,
            batch: 8,
            accumulation: 1,
            max_len: None,
            packing: true,
            train_on_prompt: false,
            seed: 0,
            checkpoint_every: 0,
            eval_every: 0,
            kl_beta: 0.0,
            teacher: None,
            distill_alpha: 1.0,
            dtype: "auto".into(),
            cpu: !cfg!(feature = "cuda"),
            on_error: OnError::Fail,
            order: Order::Random,
            skill_column: None,
            order_every: 0,
            skill_it_eta: 0.5,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; relative paths in it are taken from the file's folder.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: TrainConfig =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut config.base);
        fix(&mut config.data);
        fix(&mut config.out);
        config.eval.iter_mut().for_each(fix);
        config.teacher.iter_mut().for_each(fix);
        Ok(config)
    }

    fn trainable(&self) -> Trainable {
        match self.method {
            Method::Full => Trainable::Full,
            Method::Lora => Trainable::Lora {
                targets: self.lora.targets.clone(),
                rank: self.lora.r,
                alpha: self.lora.alpha,
                dropout: self.lora.dropout,
                seed: self.seed,
            },
        }
    }

    /// Refuses settings that cannot work before anything is loaded.
    pub fn check(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Invalid(m));
        for (name, path) in [("base", &self.base), ("data", &self.data), ("out", &self.out)] {
            if path.as_os_str().is_empty() {
                return fail(format!("the training run needs `{name}`"));
            }
        }
        if self.out.exists() {
            return fail(format!("{}: already exists; remove it or choose another output folder", self.out.display()));
        }
        if self.batch == 0 || self.accumulation == 0 {
            return fail("batch and accumulation must be at least 1".into());
        }
        if self.steps.is_none() && self.epochs == 0 {
            return fail("train for at least one epoch, or set steps".into());
        }
        if self.steps == Some(0) {
            return fail("steps must be at least 1".into());
        }
        if self.method == Method::Lora {
            llama::check_lora(&self.lora.targets, self.lora.r, self.lora.alpha, self.lora.dropout)?;
        }
        if !(self.kl_beta >= 0.0 && self.kl_beta.is_finite()) {
            return fail(format!("kl_beta {} must be 0 or more", self.kl_beta));
        }
        if !(0.0..=1.0).contains(&self.distill_alpha) {
            return fail(format!("distill_alpha {} must be in [0, 1]", self.distill_alpha));
        }
        if self.distill_alpha < 1.0 && self.teacher.is_none() {
            return fail("distill_alpha below 1 mixes in a teacher's distribution: set `teacher`".into());
        }
        if self.objective != Objective::Sft && (self.kl_beta > 0.0 || self.teacher.is_some() || self.train_on_prompt) {
            return fail(format!(
                "kl_beta, teacher and train_on_prompt are SFT settings; {:?} learns from whole answers{}",
                self.objective,
                if self.objective == Objective::Dpo { " and keeps near its reference through beta" } else { "" }
            ));
        }
        if self.objective == Objective::Dpo {
            if !(self.beta > 0.0 && self.beta.is_finite()) {
                return fail(format!("beta {} must be above 0", self.beta));
            }
            if !(self.rpo_alpha >= 0.0 && self.rpo_alpha.is_finite()) {
                return fail(format!("rpo_alpha {} must be 0 or more", self.rpo_alpha));
            }
        }
        if self.order != Order::Random && self.objective != Objective::Sft {
            return fail(format!(
                "order {}: only SFT follows an order; DPO and reward models take their groups at random",
                self.order.name()
            ));
        }
        if self.order == Order::SkillIt && (self.skill_column.is_none() || self.eval.is_none()) {
            return fail(
                "order skill-it weighs skills by their held-out loss: set skill_column (--skill-column) and eval"
                    .into(),
            );
        }
        if self.skill_column.is_some() && self.order != Order::SkillIt {
            return fail(format!("skill_column is skill-it's; order {} takes no skills", self.order.name()));
        }
        if !(self.skill_it_eta >= 0.0 && self.skill_it_eta.is_finite()) {
            return fail(format!("skill_it_eta {} must be 0 or more", self.skill_it_eta));
        }
        self.dtype()?;
        Ok(())
    }

    fn device(&self) -> Result<Device> {
        if self.cpu {
            return Ok(Device::Cpu);
        }
        Device::cuda_if_available(0).map_err(Error::from).and_then(|d| {
            if d.is_cpu() {
                Err(Error::Invalid("no GPU found: train with cpu = true (--cpu)".into()))
            } else {
                Ok(d)
            }
        })
    }

    fn dtype(&self) -> Result<DType> {
        match self.dtype.as_str() {
            // Full training keeps f32 weights: a bf16 weight rounds away updates smaller than its spacing (norm
            // gains near 1 would not move below a rate of about 4e-3). LoRA keeps its adapters in f32 anyway.
            "auto" if self.cpu || self.method == Method::Full => Ok(DType::F32),
            "bf16" if self.cpu => Err(Error::Invalid(
                "dtype bf16 trains on a GPU only (candle's CPU matrix product has no bf16): use f32 on the CPU".into(),
            )),
            "auto" | "bf16" => Ok(DType::BF16),
            "f32" => Ok(DType::F32),
            other => Err(Error::Invalid(format!("dtype {other:?}: use auto, f32 or bf16"))),
        }
    }
}

/// The log of an adaptive order's re-orderings in the output folder (one [`OrderUpdate`] a line).
pub const ORDER_LOG: &str = "order.jsonl";

/// One optimizer step, as recorded in `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: f64,
    /// Mean cross-entropy of the gold tokens (nats per response token).
    pub loss: f64,
    /// The whole objective (with KL and distillation terms).
    pub objective: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens processed (not padding).
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// DPO: the step's pairs (`loss` is their DPO loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<PairMetrics>,
    /// DPO: the held-out pairs, where they were measured (`eval_loss` is their DPO loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_pairs: Option<PairMetrics>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub out: PathBuf,
    pub method: Method,
    pub objective: Objective,
    pub steps: usize,
    pub resumed_at: usize,
    pub trainable_parameters: usize,
    pub rows_in: u64,
    pub examples: usize,
    pub rejected: Rejections,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub first_loss: f64,
    pub final_loss: f64,
    pub eval_loss_before: Option<f64>,
    pub eval_loss_after: Option<f64>,
    /// Held-out rows measured, and those skipped (with reasons).
    pub eval_examples: usize,
    pub eval_rejected: Rejections,
    /// DPO: the held-out pairs before and after training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_pairs_before: Option<PairMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_pairs_after: Option<PairMetrics>,
    /// The order followed; for easy-to-hard and skill-it, its re-orderings (each in `order.jsonl`), the
    /// seconds they spent measuring, and the last one.
    #[serde(default)]
    pub order: Order,
    #[serde(default)]
    pub order_updates: usize,
    #[serde(default)]
    pub order_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_order_update: Option<OrderUpdate>,
}

/// The training objective's parts for one micro-batch: (objective summed over weighted tokens, cross-entropy
/// summed over them).
struct Losses {
    objective: Tensor,
    cross_entropy: Tensor,
}

fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(&logits.to_dtype(llama::at_least_f32(logits.dtype()))?, D::Minus1)?)
}

/// The frozen models some objectives compare with.
struct Frozen {
    reference: Option<Llama>,
    teacher: Option<Llama>,
}

/// A batch's forward pass: its inputs, the log-probabilities `[batch, time, vocab]`, each token's
/// negative log-likelihood of its target and its loss weight (`[batch, time]`).
struct TokenLosses {
    inputs: Inputs,
    logp: Tensor,
    nll: Tensor,
    weights: Tensor,
}

fn token_losses(model: &Llama, batch: &data::Batch, dropout: Option<&mut Dropout>) -> Result<TokenLosses> {
    let inputs = Inputs::new(&batch.tokens, &batch.segments, &model.device, model.dtype)?;
    let logp = log_softmax(&model.forward(&inputs, true, dropout)?)?;
    let (target, weights) = target_log_probs(&logp, batch)?;
    Ok(TokenLosses { inputs, logp, nll: target.neg()?, weights })
}

/// From log-probabilities `[batch, time, vocab]`: each token's target's `[batch, time]`, and its loss weight
/// (in the same type).
fn target_log_probs(logp: &Tensor, batch: &data::Batch) -> Result<(Tensor, Tensor)> {
    let (b, t) = (batch.tokens.len(), batch.tokens.first().map_or(0, Vec::len));
    let targets = Tensor::from_vec(batch.targets.concat(), (b, t, 1), logp.device())?;
    let weights = Tensor::from_vec(batch.weights.concat(), (b, t), logp.device())?.to_dtype(logp.dtype())?;
    Ok((logp.gather(&targets, D::Minus1)?.squeeze(D::Minus1)?, weights))
}

/// The trainer's record of a finished run (its settings and report): `whetstone-trained.json` in a model
/// folder, or `whetstone-adapter.json` beside an adapter.
pub fn read_record(out: &Path) -> Result<serde_json::Value> {
    ["whetstone-trained.json", "whetstone-adapter.json"]
        .iter()
        .find_map(|f| crate::folder::read_json(&out.join(f)).ok())
        .ok_or_else(|| Error::Invalid(format!("{}: no training record (whetstone-trained.json)", out.display())))
}

fn micro_batch_losses(
    model: &Llama,
    frozen: &Frozen,
    config: &TrainConfig,
    batch: &data::Batch,
    dropout: Option<&mut Dropout>,
) -> Result<Losses> {
    let TokenLosses { inputs, logp, nll, weights } = token_losses(model, batch, dropout)?;
    let cross_entropy = (&nll * &weights)?.sum_all()?;
    let mut objective = (&cross_entropy * config.distill_alpha)?;
    // KL(p ‖ q) per token over the vocabulary, weighted like the cross-entropy.
    let kl = |p_log: &Tensor, q_log: &Tensor| -> Result<Tensor> {
        Ok((p_log.exp()? * (p_log - q_log)?)?.sum(D::Minus1)?.mul(&weights)?.sum_all()?)
    };
    if let Some(teacher) = &frozen.teacher {
        let teacher_logp = log_softmax(&teacher.forward(&inputs, false, None)?)?.detach();
        objective = (objective + (kl(&teacher_logp, &logp)? * (1.0 - config.distill_alpha))?)?;
    }
    if config.kl_beta > 0.0 {
        let reference = frozen.reference.as_ref().unwrap_or(model);
        let reference_logp = log_softmax(&reference.forward(&inputs, false, None)?)?.detach();
        objective = (objective + (kl(&logp, &reference_logp)? * config.kl_beta)?)?;
    }
    Ok(Losses { objective, cross_entropy })
}

/// Mean cross-entropy of the response tokens of `examples` (no dropout, nothing learned).
pub fn eval_loss(
    model: &Llama,
    examples: &[Example],
    batch: usize,
    max_len: usize,
    train_on_prompt: bool,
) -> Result<f64> {
    let order: Vec<usize> = (0..examples.len()).collect();
    let rows = data::pack(examples, &order, max_len, true);
    let (mut sum, mut count) = (0f64, 0f64);
    for rows in rows.chunks(batch.max(1)) {
        let b = data::batch(examples, rows, 0, train_on_prompt);
        let TokenLosses { nll, weights, .. } = token_losses(model, &b, None)?;
        sum += (nll * &weights)?.sum_all()?.to_scalar::<f32>()? as f64;
        count += b.weights.iter().flatten().sum::<f32>() as f64;
    }
    Ok(if count > 0.0 { sum / count } else { f64::NAN })
}

/// Each of the examples `which`'s summed cross-entropy over its learned tokens, and how many tokens that is
/// (no dropout, nothing learned).
pub fn example_losses(
    model: &Llama,
    examples: &[Example],
    which: &[usize],
    batch: usize,
    max_len: usize,
    train_on_prompt: bool,
) -> Result<Vec<(f64, f64)>> {
    let rows = data::pack(examples, which, max_len, true);
    let mut out = Vec::with_capacity(which.len());
    for rows in rows.chunks(batch.max(1)) {
        let b = data::batch(examples, rows, 0, train_on_prompt);
        let width = b.tokens.first().map_or(0, Vec::len);
        let TokenLosses { nll, weights, .. } = token_losses(model, &b, None)?;
        let nll: Vec<f32> = (nll * &weights)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let weights = b.weights.concat();
        for span in data::spans(examples, rows, width) {
            let sum: f64 = nll[span.clone()].iter().map(|&x| x as f64).sum();
            out.push((sum, weights[span].iter().map(|&w| w as f64).sum()));
        }
    }
    Ok(out)
}

/// The folder's weights as the trainer reads them: a GGUF file (quantised) is refused, with how to import it.
pub fn unquantised(folder: &ModelFolder, given: &Path) -> Result<PathBuf> {
    if folder.gguf.is_some() {
        return Err(Error::Invalid(format!(
            "{}: the trainer needs the weights unquantised: import the file with `whet model import {0} FOLDER` \
             and train FOLDER",
            given.display()
        )));
    }
    Ok(folder.path.clone())
}

/// Whether greedy decoding would give each example's response exactly, end-of-turn token included: true
/// when at every response position the most likely next token is the response's own. Greedy decoding
/// emits the response's first token iff it is the argmax after the prompt, then (having emitted it) the
/// second iff it is the argmax after that, and so on, so one teacher-forced pass decides it for a batch of
/// examples at once.
pub fn greedy_exact(model: &Llama, examples: &[Example], batch: usize, max_len: usize) -> Result<Vec<bool>> {
    let order: Vec<usize> = (0..examples.len()).collect();
    let rows = data::pack(examples, &order, max_len, true);
    let mut right = vec![true; examples.len()];
    for rows in rows.chunks(batch.max(1)) {
        let b = data::batch(examples, rows, 0, false);
        let inputs = Inputs::new(&b.tokens, &b.segments, &model.device, model.dtype)?;
        let best: Vec<Vec<u32>> = model.forward(&inputs, true, None)?.argmax(D::Minus1)?.to_vec2()?;
        for (r, row) in rows.iter().enumerate() {
            let mut position = 0;
            for &i in row {
                let n = examples[i].tokens.len();
                right[i] = (position..position + n).all(|p| b.weights[r][p] == 0.0 || best[r][p] == b.targets[r][p]);
                position += n;
            }
        }
    }
    Ok(right)
}

/// The checkpoint folder beside `out`.
fn checkpoint_dir(out: &Path) -> Result<PathBuf> {
    let name = out.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a folder name", out.display())))?;
    Ok(out.with_file_name(format!(".{}.checkpoint", name.to_string_lossy())))
}

/// Identifies a run: its settings and its examples (and their skills). A checkpoint of another run is not
/// resumed.
fn fingerprint(config: &TrainConfig, labels: &Ranked, skills: Option<&Skills>) -> Result<String> {
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    hash.update(serde_json::to_string(config)?.as_bytes());
    if let Some(skills) = skills {
        hash.update(serde_json::to_string(&skills.names)?.as_bytes());
        skills.train.iter().chain(&skills.held_out).for_each(|s| hash.update(&(*s as u64).to_le_bytes()));
    }
    // A reward model's labels: the same texts scored again are another run.
    for r in &labels.rewards {
        hash.update(&r.to_le_bytes());
    }
    for g in &labels.groups {
        g.iter().for_each(|i| hash.update(&(*i as u64).to_le_bytes()));
        hash.update(b"/");
    }
    for e in &labels.examples.examples {
        hash.update(&(e.prompt_len as u64).to_le_bytes());
        for t in &e.tokens {
            hash.update(&t.to_le_bytes());
        }
        hash.update(b"|");
    }
    Ok(format!("{:032x}", hash.digest128()))
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    fingerprint: String,
    step: usize,
    metrics: Vec<StepMetrics>,
    eval_loss_before: Option<f64>,
    #[serde(default)]
    eval_pairs_before: Option<PairMetrics>,
    /// An adaptive order's state.
    #[serde(default)]
    order: Option<OrderState>,
}

fn save_checkpoint(
    dir: &Path,
    params: &BTreeMap<String, Var>,
    optimizer: &AdamW,
    state: &CheckpointState,
) -> Result<()> {
    write_folder(dir, |d| {
        let params: BTreeMap<String, Tensor> = params.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        save_tensors(&params, &d.join("trainable.safetensors"))?;
        save_tensors(&optimizer.state(), &d.join("optimizer.safetensors"))?;
        write_json(&d.join("state.json"), &serde_json::to_value(state)?)
    })
}

/// Resumes from `dir` if it holds a checkpoint of this run.
fn load_checkpoint(
    dir: &Path,
    fingerprint: &str,
    params: &BTreeMap<String, Var>,
    optimizer: &mut AdamW,
) -> Result<Option<CheckpointState>> {
    let path = dir.join("state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let state: CheckpointState = serde_json::from_slice(&text)?;
    if state.fingerprint != fingerprint {
        return Err(Error::Invalid(format!(
            "{}: a checkpoint of another run (other settings or data); remove it to start afresh",
            dir.display()
        )));
    }
    let device = params.values().next().map_or(Device::Cpu, |v| v.device().clone());
    let saved = load_tensors(&dir.join("trainable.safetensors"), &device)?;
    for (name, var) in params {
        let t = saved.get(name).ok_or_else(|| {
            Error::Invalid(format!("{}: the checkpoint has no {name}; remove it to start afresh", dir.display()))
        })?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    optimizer.restore(&load_tensors(&dir.join("optimizer.safetensors"), &device)?, state.step)?;
    Ok(Some(state))
}

/// A seed for step `step`'s dropout masks.
fn step_seed(seed: u64, step: usize) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&[seed.to_le_bytes(), (step as u64).to_le_bytes()].concat())
}

/// Runs the training described by `config`; `on_step(metrics, steps)` after each optimizer step returns
/// whether to go on (stopping leaves the last checkpoint, from which the same call resumes).
pub fn train(config: &TrainConfig, on_step: &mut dyn FnMut(&StepMetrics, usize) -> bool) -> Result<TrainReport> {
    let started = Instant::now();
    config.check()?;
    let folder = ModelFolder::open(&config.base)?;
    // The folder as resolved (a Hugging Face repo id names a snapshot in the local cache).
    let base = unquantised(&folder, &config.base)?;
    let shape = llama::LlamaConfig::read(&base)?;
    let max_len = config.max_len.unwrap_or(shape.context.min(shape.sliding_window.unwrap_or(usize::MAX)));
    if max_len > shape.context {
        return Err(Error::Invalid(format!(
            "max_len {max_len} is longer than the model's context ({} tokens, max_position_embeddings)",
            shape.context
        )));
    }
    if let Some(window) = shape.sliding_window.filter(|&w| max_len > w) {
        return Err(Error::Invalid(format!(
            "max_len {max_len} is longer than the model's sliding attention window ({window} tokens): the \
             trainer attends to whole rows, so keep them within it"
        )));
    }
    let tokenizer = PromptTokenizer::new(&folder)?;
    // Examples, and for DPO and reward models the groups compared within.
    // skill-it: each example's skill too.
    let read = |path: &Path, on_error: OnError| -> Result<(Ranked, Vec<String>)> {
        let mode = config.prompt_mode;
        let mut labels = Vec::new();
        let ranked = match config.objective {
            Objective::Sft => {
                let examples = match &config.skill_column {
                    Some(column) => {
                        let (examples, skills) =
                            data::read_labelled_examples(path, &tokenizer, mode, max_len, on_error, column)?;
                        labels = skills;
                        examples
                    }
                    None => data::read_examples(path, &tokenizer, mode, max_len, on_error)?,
                };
                Ranked { rows_used: examples.examples.len(), examples, groups: vec![], rewards: vec![] }
            }
            Objective::Dpo => {
                let examples = data::read_pair_examples(path, &tokenizer, mode, max_len, on_error)?;
                let groups = data::pair_groups(&examples.examples);
                Ranked { rows_used: groups.len(), examples, groups, rewards: vec![] }
            }
            Objective::Reward => ranking::read_ranked(path, &tokenizer, mode, max_len, on_error)?,
        };
        Ok((ranked, labels))
    };
    let (train_set, train_labels) = read(&config.data, config.on_error)?;
    let Examples { examples, rows_in, rejected } = &train_set.examples;
    let (rows_in, group_of) = (*rows_in, train_set.group_of());
    if train_set.rows_used == 0 {
        return Err(Error::Invalid(format!(
            "{}: no examples to train on ({rows_in} rows read, {} rejected)",
            config.data.display(),
            rejected.total()
        )));
    }
    // Held-out rows that cannot be used (no response, too long) are skipped and counted in the report.
    let (eval_set, eval_labels) = match &config.eval {
        Some(path) => {
            let (set, labels) = read(path, OnError::Skip)?;
            (Some(set), labels)
        }
        None => (None, vec![]),
    };
    let skills = match config.order {
        Order::SkillIt => Some(Skills::new(&train_labels, &eval_labels)?),
        _ => None,
    };
    let eval: &[Example] = eval_set.as_ref().map_or(&[], |e| &e.examples.examples);
    let batching =
        data::Batching { batch: config.batch, accumulation: config.accumulation, max_len, packing: config.packing };
    let plan = match config.objective {
        // An adaptive order decides its steps as it goes; a random one's plan gives their number.
        Objective::Sft => {
            let seed = (config.order != Order::File).then_some(config.seed);
            data::plan(examples, batching, config.epochs, config.steps, seed)
        }
        Objective::Dpo | Objective::Reward => {
            data::plan_groups(&train_set.groups, examples, batching, config.epochs, config.steps, config.seed)
        }
    };
    let steps = plan.len();
    config.schedule.check(steps)?;
    let device = config.device()?;
    let dtype = config.dtype()?;
    let model = Llama::load(&base, &device, dtype, &config.trainable())?;
    let frozen = Frozen {
        // LoRA's reference is the model with its adapters off; full training keeps a frozen copy.
        reference: if (config.kl_beta > 0.0 || config.objective == Objective::Dpo) && config.method == Method::Full {
            Some(Llama::load(&base, &device, dtype, &Trainable::Frozen)?)
        } else {
            None
        },
        teacher: match &config.teacher {
            Some(path) => {
                let teacher = Llama::load(path, &device, dtype, &Trainable::Frozen)?;
                if teacher.config.vocab != model.config.vocab {
                    return Err(Error::Invalid(format!(
                        "{}: the teacher's vocabulary ({}) differs from the model's ({}); distillation needs one tokenizer",
                        path.display(),
                        teacher.config.vocab,
                        model.config.vocab
                    )));
                }
                Some(teacher)
            }
            None => None,
        },
    };
    // What is learned: the model's trainable weights, and a reward model's head (zero: every score 0 at first).
    let mut params = model.trainable.clone();
    let head = match config.objective {
        Objective::Reward => {
            let head = Var::zeros((1, model.config.hidden), DType::F32, &device)?;
            params.insert(ranking::HEAD.to_string(), head.clone());
            Some(head.as_tensor().clone())
        }
        _ => None,
    };
    let mut optimizer = AdamW::new(config.optimizer, &params)?;
    let fingerprint = fingerprint(config, &train_set, skills.as_ref())?;
    let checkpoint = checkpoint_dir(&config.out)?;
    let resumed = load_checkpoint(&checkpoint, &fingerprint, &params, &mut optimizer)?;
    let resumed_at = resumed.as_ref().map_or(0, |s| s.step);
    let mut metrics = resumed.as_ref().map(|s| s.metrics.clone()).unwrap_or_default();
    let pad = tokenizer.tokenizer.token_to_id(crate::model::tiny::PAD).or(tokenizer.eos_id).unwrap_or(0);
    // The held-out measure: cross-entropy (SFT), the pairs' DPO loss and rewards, or a reward model's ranking.
    let measure = |model: &Llama| -> Result<(f64, Option<PairMetrics>)> {
        let m = match (config.objective, &head, &eval_set) {
            (Objective::Sft, _, _) => {
                return Ok((eval_loss(model, eval, config.batch, max_len, config.train_on_prompt)?, None))
            }
            (Objective::Dpo, _, _) => {
                let reference = frozen.reference.as_ref();
                preference::eval_pairs(model, reference, eval, config.batch, max_len, config.beta, pad)?
            }
            (Objective::Reward, Some(head), Some(set)) => {
                ranking::eval_ranking(model, head, set, config.batch, max_len)?
            }
            (Objective::Reward, _, _) => unreachable!("a reward model has a head, and is measured with a held-out set"),
        };
        Ok((m.loss, Some(m)))
    };
    let mut curriculum = config.order.adaptive().then(|| Curriculum {
        order: config.order,
        examples,
        skills: skills.as_ref(),
        batching,
        seed: config.seed,
        every: if config.order_every > 0 { config.order_every } else { (steps / 10).max(1) },
        eta: config.skill_it_eta,
        state: resumed.as_ref().and_then(|s| s.order.clone()).unwrap_or_default(),
    });
    // What an adaptive order measures: training examples' losses, or each skill's held-out loss.
    let mut measure_order = |m: Measure| -> Result<Vec<f64>> {
        let mean = |(sum, count): (f64, f64)| if count > 0.0 { sum / count } else { f64::NAN };
        let on_prompt = config.train_on_prompt;
        match m {
            Measure::Examples(which) => Ok(example_losses(&model, examples, which, config.batch, max_len, on_prompt)?
                .into_iter()
                .map(mean)
                .collect()),
            Measure::Skills => {
                let skills = skills.as_ref().expect("skill-it has skills");
                let which: Vec<usize> = (0..eval.len()).filter(|&i| skills.held_out[i] != usize::MAX).collect();
                let mut sums = vec![(0.0, 0.0); skills.names.len()];
                for (&i, (sum, count)) in
                    which.iter().zip(example_losses(&model, eval, &which, config.batch, max_len, on_prompt)?)
                {
                    let s = &mut sums[skills.held_out[i]];
                    (s.0, s.1) = (s.0 + sum, s.1 + count);
                }
                Ok(sums.into_iter().map(mean).collect())
            }
        }
    };
    let (eval_loss_before, eval_pairs_before) = match &resumed {
        Some(state) => (state.eval_loss_before, state.eval_pairs_before),
        None if !eval.is_empty() => {
            let (loss, pairs) = measure(&model)?;
            (Some(loss), pairs)
        }
        None => (None, None),
    };

    for step in resumed_at..steps {
        let step_started = Instant::now();
        let decided;
        let planned = match &mut curriculum {
            Some(c) => {
                decided = c.next_step(step, &mut measure_order)?;
                &decided
            }
            None => &plan[step],
        };
        let all_rows = || planned.micro_batches.iter().flatten();
        // What the step's objective is a mean over: learned tokens (SFT), or pairs and the chosen answers'
        // tokens (DPO with RPO).
        let learned: f64 = match config.objective {
            Objective::Sft => all_rows()
                .flatten()
                .map(|&i| {
                    let first = if config.train_on_prompt { 1 } else { examples[i].prompt_len.max(1) };
                    examples[i].tokens.len().saturating_sub(first) as f64
                })
                .sum(),
            Objective::Dpo => all_rows().map(|r| r.len()).sum::<usize>() as f64 / 2.0,
            Objective::Reward => {
                all_rows().flatten().map(|&i| group_of[i]).collect::<std::collections::BTreeSet<_>>().len() as f64
            }
        };
        let chosen_tokens: usize =
            planned.micro_batches.iter().map(|rows| preference::chosen_tokens(examples, rows)).sum();
        let mut dropout = Dropout::new(step_seed(config.seed, step));
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let (mut objective, mut loss, mut tokens, mut cross_entropy) = (0f64, 0f64, 0usize, 0f64);
        let mut pair_sums = PairSums::default();
        for rows in &planned.micro_batches {
            let scaled = match config.objective {
                Objective::Sft => {
                    let batch = data::batch(examples, rows, pad, config.train_on_prompt);
                    let losses = micro_batch_losses(&model, &frozen, config, &batch, Some(&mut dropout))?;
                    cross_entropy += losses.cross_entropy.to_scalar::<f32>()? as f64;
                    (losses.objective / learned.max(1.0))?
                }
                Objective::Dpo => {
                    let reference = frozen.reference.as_ref();
                    let l = preference::pair_losses(
                        &model,
                        reference,
                        examples,
                        rows,
                        config.beta,
                        pad,
                        Some(&mut dropout),
                    )?;
                    loss += l.sums.loss / learned;
                    pair_sums.add(l.sums);
                    preference::objective(&l, learned as usize, chosen_tokens, config.rpo_alpha)?
                }
                Objective::Reward => {
                    let head = head.as_ref().expect("a reward model's head");
                    let (sum, _, sums) =
                        ranking::ranking_losses(&model, head, &train_set, &group_of, rows, Some(&mut dropout))?;
                    pair_sums.add(sums);
                    let scaled = (sum / learned)?;
                    loss += scaled.to_scalar::<f32>()? as f64;
                    scaled
                }
            };
            let store = scaled.backward()?;
            objective += scaled.to_scalar::<f32>()? as f64;
            tokens += rows.iter().flatten().map(|&i| examples[i].tokens.len()).sum::<usize>();
            for (name, var) in &params {
                if let Some(g) = store.get(var.as_tensor()) {
                    let g = match grads.remove(name) {
                        Some(sum) => (sum + g)?,
                        None => g.clone(),
                    };
                    grads.insert(name.clone(), g);
                }
            }
        }
        if config.objective == Objective::Sft {
            // Summed first, divided once: the same bits as before DPO shared this loop.
            loss = cross_entropy / learned.max(1.0);
        }
        let lr = config.schedule.lr_at(step, steps);
        let grad_norm = optimizer.step(&params, &grads, lr)?;
        let seconds = step_started.elapsed().as_secs_f64();
        let last = step + 1 == steps;
        let eval_now = !eval.is_empty() && (last || (config.eval_every > 0 && (step + 1) % config.eval_every == 0));
        let (eval_loss, eval_pairs) = if eval_now { measure(&model).map(|(l, p)| (Some(l), p))? } else { (None, None) };
        let m = StepMetrics {
            step: step + 1,
            epoch: planned.epoch,
            loss,
            objective,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            seconds,
            eval_loss,
            pairs: (config.objective != Objective::Sft).then(|| pair_sums.metrics()),
            eval_pairs,
        };
        let go_on = on_step(&m, steps);
        metrics.push(m);
        if config.checkpoint_every > 0 && (step + 1) % config.checkpoint_every == 0 && !last {
            let state = CheckpointState {
                fingerprint: fingerprint.clone(),
                step: step + 1,
                metrics: metrics.clone(),
                eval_loss_before,
                eval_pairs_before,
                order: curriculum.as_ref().map(|c| c.state.clone()),
            };
            save_checkpoint(&checkpoint, &params, &optimizer, &state)?;
        }
        if !go_on && !last {
            return Err(Error::Stopped(format!(
                "training stopped after step {} of {steps}; run it again to resume from the last checkpoint",
                step + 1
            )));
        }
    }

    let order_updates = curriculum.map(|c| c.state.updates).unwrap_or_default();
    let train_seconds: f64 = metrics.iter().map(|m| m.seconds).sum();
    let tokens: usize = metrics.iter().map(|m| m.tokens).sum();
    let report = TrainReport {
        out: config.out.clone(),
        method: config.method,
        objective: config.objective,
        steps,
        resumed_at,
        trainable_parameters: params.values().map(|v| v.elem_count()).sum(),
        rows_in,
        examples: train_set.rows_used,
        rejected: rejected.clone(),
        tokens,
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_s: tokens as f64 / train_seconds.max(1e-9),
        first_loss: metrics.first().map_or(f64::NAN, |m| m.loss),
        final_loss: metrics.last().map_or(f64::NAN, |m| m.loss),
        eval_loss_before,
        eval_loss_after: metrics.last().and_then(|m| m.eval_loss),
        eval_examples: eval_set.as_ref().map_or(0, |e| e.rows_used),
        eval_rejected: eval_set.map(|e| e.examples.rejected).unwrap_or_default(),
        eval_pairs_before,
        eval_pairs_after: metrics.last().and_then(|m| m.eval_pairs),
        order: config.order,
        order_updates: order_updates.len(),
        // Folded from +0: an empty f64 sum is −0.
        order_seconds: order_updates.iter().fold(0.0, |sum, u| sum + u.seconds),
        last_order_update: order_updates.last().cloned(),
    };
    let record = json!({
        "made_by": "whet train",
        "base": config.base.display().to_string(),
        "base_xxh3": folder.xxh3,
        "config": config,
        "report": report,
    });
    write_folder(&config.out, |dir| {
        match config.method {
            Method::Lora => {
                let spec = LoraSpec {
                    r: config.lora.r,
                    lora_alpha: config.lora.alpha,
                    lora_dropout: config.lora.dropout,
                    target_modules: config.lora.targets.clone(),
                    base_model_name_or_path: config.base.display().to_string(),
                };
                lora::save_adapter(&model, &spec, dir, &record)?;
            }
            Method::Full => {
                lora::write_model_files(&model, &base, dir)?;
                write_json(&dir.join("whetstone-trained.json"), &record)?;
            }
        }
        if let Some(head) = &head {
            save_tensors(&BTreeMap::from([(ranking::HEAD.to_string(), head.clone())]), &dir.join(ranking::HEAD_FILE))?;
        }
        let lines = crate::folder::json_lines(&metrics)?;
        std::fs::write(dir.join("metrics.jsonl"), lines).map_err(|e| Error::io(dir.join("metrics.jsonl"), e))?;
        if !order_updates.is_empty() {
            let lines = crate::folder::json_lines(&order_updates)?;
            std::fs::write(dir.join(ORDER_LOG), lines).map_err(|e| Error::io(dir.join(ORDER_LOG), e))?;
        }
        std::fs::write(dir.join("loss.svg"), loss_chart(&metrics, config.objective)?)
            .map_err(|e| Error::io(dir.join("loss.svg"), e))
    })?;
    if checkpoint.exists() {
        std::fs::remove_dir_all(&checkpoint).map_err(|e| Error::io(&checkpoint, e))?;
    }
    Ok(report)
}

/// The loss curve as SVG: training loss per step, and the held-out loss where it was measured.
pub fn loss_chart(metrics: &[StepMetrics], objective: Objective) -> Result<String> {
    let train: Vec<(f64, f64)> = metrics.iter().map(|m| (m.step as f64, m.loss)).filter(|p| p.1.is_finite()).collect();
    let eval: Vec<(f64, f64)> = metrics.iter().filter_map(|m| Some((m.step as f64, m.eval_loss?))).collect();
    let all = train.iter().chain(&eval);
    let (x1, y0, y1) =
        all.fold((1f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), p| (x.max(p.0), lo.min(p.1), hi.max(p.1)));
    let (y0, y1) = if y0.is_finite() { (y0.min(y1 - 1e-3) * 0.95, y1 * 1.05) } else { (0.0, 1.0) };
    let axes = Axes {
        x: 0.0..x1.max(1.0),
        y: y0..y1,
        x_desc: "optimizer step",
        y_desc: match objective {
            Objective::Sft => "cross-entropy (nats/token)",
            Objective::Dpo => "DPO loss (nats/pair)",
            Objective::Reward => "ranking loss (nats/pair)",
        },
        x_ticks: None,
    };
    let mut lines = vec![Line { name: "training".into(), points: train, dots: None }];
    if !eval.is_empty() {
        lines.push(Line { name: "held out".into(), points: eval, dots: Some(3) });
    }
    chart::lines("training loss", &axes, &lines)
}
