//! `whet bench preference`: learning from the rejected samples too, on the tiny-model demo task
//! ([`crate::rounds::demo`]: 2-digit sums with their working, the GSM8K final-number verifier).
//!
//! For each seed, in `OUT/seed-<s>/`:
//!
//! 1. The demo's data and its tiny model, pre-trained on the labelled set.
//! 2. A reward model from the model's own samples (Qwen2.5-Math's recipe): `samples` answers to each prompt of
//!    the labelled set, scored by the verifier; a listwise ranking head (`whet train --objective reward`) on
//!    four fifths of the prompts; its pairwise AUC on the held-out fifth's pairs. Then best-of-N on the test
//!    prompts: N samples each, one picked by the reward model, by the model's likelihood (mean token
//!    log-probability), at random (the first sample), or by the verifier (pass@N: the ceiling).
//! 3. Four arms of rounds at the same generation budget (the same prompts, samples and training steps a
//!    round): `sft` (best-of-N by the verifier, as `whet demo`), `sft+dpo` (then DPO on the round's
//!    chosen/rejected pairs), `sft-rm` (best-of-N by the reward model instead of the verifier; held-out answers
//!    still checked by the verifier) and `control` (every sample).
//!
//! `preference.md` gives held-out accuracy per round and arm as mean ± spread over seeds, and says which
//! differences from `sft` exceed the noise. Everything is kept: run again and finished parts are read back.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::folder::read_json;

#[cfg(feature = "llm")]
mod experiment;
#[cfg(feature = "llm")]
pub use experiment::{run, PreferenceEvent, PreferenceReport, PreferenceSize};

/// The arms, in the table's order.
pub const ARMS: [&str; 4] = ["sft", "sft+dpo", "sft-rm", "control"];

/// The reward model of one seed, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardModelResult {
    pub seed: u64,
    /// Samples it trained on (those of prompts with two rewards among their samples).
    pub train_samples: usize,
    /// Pairwise AUC on the held-out prompts' pairs (best against worst sample).
    pub held_out_pairs: usize,
    pub auc: f64,
    /// Best-of-N accuracy on the test prompts, by each way of picking.
    pub best_of_n: BTreeMap<String, f64>,
}

/// One arm of one seed: held-out accuracy per round (round 0 first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmResult {
    pub seed: u64,
    pub arm: String,
    pub accuracy: Vec<f64>,
}

/// The arms' results a run wrote in `out` (`arms.jsonl`), for notebooks.
pub fn read_arms(out: &Path) -> Result<Vec<ArmResult>> {
    crate::folder::read_json_lines(&out.join("arms.jsonl"))
}

/// A seed's reward model result (`seed-<s>/rm-result.json`).
pub fn read_reward_model(out: &Path, seed: u64) -> Result<RewardModelResult> {
    Ok(serde_json::from_value(read_json(&out.join(format!("seed-{seed}/rm-result.json")))?)?)
}
