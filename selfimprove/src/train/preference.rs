//! Direct preference optimisation (DPO, Rafailov et al. 2023), as TRL's `DPOTrainer` computes its default
//! (sigmoid) loss. For a pair, with `log π(y)` the policy's summed log-probability of an answer's tokens (masked
//! like SFT: the answer and the token that ends it) and `log π_ref(y)` the reference's:
//!
//! ```text
//! z = (log π(y_c) − log π(y_r)) − (log π_ref(y_c) − log π_ref(y_r)),     loss = −log σ(β z)
//! ```
//!
//! averaged over the pairs of an optimizer step. The implicit rewards `β (log π(y) − log π_ref(y))` of the two
//! answers give what TRL logs: their means, the margin, and the accuracy (the share of pairs whose chosen
//! answer's reward is above the rejected one's). RPO ("Iterative Reasoning Preference Optimization") adds
//! `α ×` the chosen answers' cross-entropy, a mean over their tokens. With LoRA the reference is the same
//! model with its adapters off, so no second copy is held.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::data::{self, Example, Row};
use super::llama::{Dropout, Inputs, Llama};
use super::{log_softmax, target_log_probs};
use crate::error::Result;

/// What a set of pairs shows: the DPO loss and the implicit rewards, means over the pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PairMetrics {
    pub pairs: usize,
    pub loss: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    /// chosen − rejected reward.
    pub margin: f64,
    /// Share of pairs whose chosen answer's reward is above the rejected one's.
    pub accuracy: f64,
}

/// The sums [`PairMetrics`] are means of.
#[derive(Debug, Clone, Copy, Default)]
pub struct PairSums {
    pub pairs: usize,
    pub loss: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    pub right: usize,
}

impl PairSums {
    pub fn add(&mut self, other: PairSums) {
        self.pairs += other.pairs;
        self.loss += other.loss;
        self.chosen_reward += other.chosen_reward;
        self.rejected_reward += other.rejected_reward;
        self.right += other.right;
    }

    /// Pairs' better (chosen) and worse (rejected) rewards, and their losses.
    pub fn of(better: &[f64], worse: &[f64], losses: &[f64]) -> Self {
        PairSums {
            pairs: better.len(),
            loss: losses.iter().sum(),
            chosen_reward: better.iter().sum(),
            rejected_reward: worse.iter().sum(),
            right: better.iter().zip(worse).filter(|(b, w)| b > w).count(),
        }
    }

    pub fn metrics(&self) -> PairMetrics {
        let n = self.pairs.max(1) as f64;
        PairMetrics {
            pairs: self.pairs,
            loss: self.loss / n,
            chosen_reward: self.chosen_reward / n,
            rejected_reward: self.rejected_reward / n,
            margin: (self.chosen_reward - self.rejected_reward) / n,
            accuracy: self.right as f64 / n,
        }
    }
}

/// A micro-batch of pairs: the DPO loss summed over its pairs and the chosen answers' negative
/// log-likelihood summed over their tokens (both with gradients), and the pairs' rewards.
pub struct PairLosses {
    pub dpo: Tensor,
    pub chosen_nll: Tensor,
    pub sums: PairSums,
}

/// The summed log-probability of each example's learned tokens, `[examples]` in the order `rows` lay them
/// out, from per-token log-probabilities `[rows, time]` (already zero where nothing is learned).
fn per_example(token_logp: &Tensor, examples: &[Example], rows: &[Row]) -> Result<Tensor> {
    let (b, t) = token_logp.dims2()?;
    let spans = data::spans(examples, rows, t);
    let members = spans.len();
    let mut membership = vec![0f32; members * b * t];
    for (m, span) in spans.into_iter().enumerate() {
        membership[m * b * t + span.start..m * b * t + span.end].fill(1.0);
    }
    let membership =
        Tensor::from_vec(membership, (members, b * t), token_logp.device())?.to_dtype(token_logp.dtype())?;
    Ok(membership.matmul(&token_logp.reshape((b * t, 1))?)?.squeeze(1)?)
}

/// Log-probabilities of each token's target `[rows, time]`, zero where nothing is learned.
fn token_logp(logits: &Tensor, batch: &data::Batch) -> Result<Tensor> {
    let (target, weights) = target_log_probs(&log_softmax(logits)?, batch)?;
    Ok((target * weights)?)
}

/// `log(1 + e^x)` without overflow: `max(x, 0) + log(1 + e^−|x|)`.
pub(crate) fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?)
}

/// The DPO terms of the pairs in `rows` (which hold examples `2p` and `2p + 1` of each pair `p`, in any
/// order). `reference`: the frozen reference model (full training); `None` is the model without adapters.
pub fn pair_losses(
    model: &Llama,
    reference: Option<&Llama>,
    examples: &[Example],
    rows: &[Row],
    beta: f64,
    pad: u32,
    dropout: Option<&mut Dropout>,
) -> Result<PairLosses> {
    let batch = data::batch(examples, rows, pad, false);
    let inputs = Inputs::new(&batch.tokens, &batch.segments, &model.device, model.dtype)?;
    let policy = per_example(&token_logp(&model.forward(&inputs, true, dropout)?, &batch)?, examples, rows)?;
    let frozen = match reference {
        Some(reference) => reference.forward(&inputs, false, None)?,
        None => model.forward(&inputs, false, None)?,
    };
    let frozen = per_example(&token_logp(&frozen, &batch)?, examples, rows)?.detach();
    // Where each pair's chosen (even) and rejected (odd) example sits in the micro-batch's layout.
    let order: Vec<usize> = rows.concat();
    let at = |i: usize| order.iter().position(|&e| e == i).expect("a pair's answers share a micro-batch") as u32;
    let pairs: Vec<usize> = order.iter().filter(|&&e| e % 2 == 0).map(|e| e / 2).collect();
    let index = |odd: usize| -> Result<Tensor> {
        let at: Vec<u32> = pairs.iter().map(|p| at(2 * p + odd)).collect();
        Ok(Tensor::from_vec(at, pairs.len(), &model.device)?)
    };
    let (chosen, rejected) = (index(0)?, index(1)?);
    let (pc, pr) = (policy.index_select(&chosen, 0)?, policy.index_select(&rejected, 0)?);
    let (rc, rr) = (frozen.index_select(&chosen, 0)?, frozen.index_select(&rejected, 0)?);
    let z = ((&pc - &pr)? - (&rc - &rr)?)?;
    let losses = softplus(&(z * -beta)?)?;
    let values = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
    let (chosen_rewards, rejected_rewards) = (values(&((&pc - &rc)? * beta)?)?, values(&((&pr - &rr)? * beta)?)?);
    let sums = PairSums::of(&chosen_rewards, &rejected_rewards, &values(&losses)?);
    Ok(PairLosses { dpo: losses.sum_all()?, chosen_nll: pc.sum_all()?.neg()?, sums })
}

/// A micro-batch's share of its optimizer step's objective: its DPO losses over the step's `pairs`, plus
/// `rpo_alpha ×` its chosen answers' negative log-likelihood over the step's `chosen_tokens` (RPO; TRL's
/// `loss_type = ["sigmoid", "sft"]` with `loss_weights = [1, rpo_alpha]`).
pub fn objective(losses: &PairLosses, pairs: usize, chosen_tokens: usize, rpo_alpha: f64) -> Result<Tensor> {
    let dpo = (&losses.dpo / pairs.max(1) as f64)?;
    if rpo_alpha == 0.0 {
        return Ok(dpo);
    }
    Ok((dpo + (&losses.chosen_nll * (rpo_alpha / chosen_tokens.max(1) as f64))?)?)
}

/// Tokens learned of the chosen answers in `rows`: RPO's cross-entropy is a mean over them.
pub fn chosen_tokens(examples: &[Example], rows: &[Row]) -> usize {
    rows.iter().flatten().filter(|&&i| i % 2 == 0).map(|&i| examples[i].tokens.len() - examples[i].prompt_len).sum()
}

/// The held-out pairs' loss and rewards (no dropout, nothing learned), `batch` pairs at a time.
pub fn eval_pairs(
    model: &Llama,
    reference: Option<&Llama>,
    examples: &[Example],
    batch: usize,
    max_len: usize,
    beta: f64,
    pad: u32,
) -> Result<PairMetrics> {
    let mut sums = PairSums::default();
    let pairs: Vec<usize> = (0..examples.len() / 2).collect();
    for chunk in pairs.chunks(batch.max(1)) {
        let members: Vec<usize> = chunk.iter().flat_map(|&p| [2 * p, 2 * p + 1]).collect();
        let rows = data::pack(examples, &members, max_len, true);
        sums.add(pair_losses(model, reference, examples, &rows, beta, pad, None)?.sums);
    }
    Ok(sums.metrics())
}
