//! Reward models: a linear head (`score.weight`, `[1, hidden]`, as transformers' `…ForSequenceClassification`
//! names it) on the last hidden state of a response's final token, trained to rank.
//!
//! The data are groups of answers to one prompt with rewards: preference pairs (chosen above rejected:
//! Bradley-Terry, `−log σ(s_c − s_r)`), or a prompt's scored samples, where every two samples with different
//! rewards make a pair and a prompt's pairs are averaged (the listwise loss of Qwen2.5-Math-RM), so each prompt
//! weighs the same. The step's loss is the mean over its groups. What it learns is measured on held-out groups
//! as the share of pairs ranked right (the pairwise AUC).

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use candle_core::{DType, Tensor, D};
use whetstone_datasets::schema::{self, columns};
use whetstone_datasets::OnError;

use super::data::{self, Example, Row};
use super::llama::{Dropout, Inputs, Llama};
use super::preference::{PairMetrics, PairSums};
use crate::error::{Error, Result};
use crate::prompt::{column_or_meta, PromptMode, PromptTokenizer};

/// The head's tensor name and file, beside the adapter (LoRA) or in the model folder (full).
pub const HEAD: &str = "score.weight";
pub const HEAD_FILE: &str = "reward_head.safetensors";

/// Examples in groups to rank within, with each example's reward.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub examples: data::Examples,
    pub groups: Vec<Vec<usize>>,
    pub rewards: Vec<f64>,
    /// Rows of the input used: pairs of a pairs file, samples in a group with two rewards.
    pub rows_used: usize,
}

impl Ranked {
    /// Each example's group.
    pub fn group_of(&self) -> Vec<usize> {
        let mut of = vec![usize::MAX; self.examples.examples.len()];
        for (g, members) in self.groups.iter().enumerate() {
            members.iter().for_each(|&i| of[i] = g);
        }
        of
    }
}

/// Whether `path` is a pairs file: JSONL whose first row has `chosen`.
pub fn is_pairs_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl")
        && std::fs::read_to_string(path).ok().and_then(|t| {
            let first = t.lines().find(|l| !l.trim().is_empty())?.to_string();
            serde_json::from_str::<serde_json::Value>(&first).ok().map(|v| v.get("chosen").is_some())
        }) == Some(true)
}

/// Reads `input`: a pairs file (chosen 1, rejected 0), or scored samples (a `reward` column, grouped by
/// `prompt_id`, else each row alone). Samples whose prompt has one reward only have nothing to be ranked
/// against: they are counted as `one_reward`.
pub fn read_ranked(
    input: &Path,
    tokenizer: &PromptTokenizer,
    mode: PromptMode,
    max_len: usize,
    on_error: OnError,
) -> Result<Ranked> {
    if is_pairs_file(input) {
        let examples = data::read_pair_examples(input, tokenizer, mode, max_len, on_error)?;
        let rewards = (0..examples.examples.len()).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let groups = data::pair_groups(&examples.examples);
        return Ok(Ranked { rows_used: groups.len(), groups, rewards, examples });
    }
    let mut keys: Vec<(String, f64)> = Vec::new();
    let mut examples = data::read_rows(input, tokenizer, mode, max_len, on_error, &mut |batch, row| {
        let reward = batch
            .column_by_name(columns::REWARD)
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Float32Type>().cloned())
            .filter(|c| c.is_valid(row))
            .map(|c| c.value(row) as f64)
            .filter(|r| r.is_finite())
            .ok_or_else(|| {
                let id = batch.column_by_name(schema::ID).map(|c| c.as_string::<i32>().value(row).to_string());
                Error::Invalid(format!(
                    "{}: row id {}, field reward: missing, not a number, or not the Float32 column `whet reward` \
                     writes; score the samples first (whet reward), or give a pairs file",
                    input.display(),
                    id.unwrap_or_default()
                ))
            })?;
        let id = batch.column_by_name(schema::ID).map(|c| c.as_string::<i32>().value(row).to_string());
        let group = column_or_meta(batch, columns::PROMPT_ID, row).or(id).unwrap_or_default();
        keys.push((group, reward));
        Ok(())
    })?;
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (group, _)) in keys.iter().enumerate() {
        by_group.entry(group).or_default().push(i);
    }
    let mut groups = Vec::new();
    for (group, members) in by_group {
        let first = keys[members[0]].1;
        if members.iter().all(|&i| keys[i].1 == first) {
            for _ in &members {
                examples.rejected.add_reason("one_reward", || format!("{group}: every sample has reward {first}"));
            }
        } else {
            groups.push(members);
        }
    }
    let rows_used = groups.iter().map(Vec::len).sum();
    Ok(Ranked { examples, groups, rewards: keys.into_iter().map(|k| k.1).collect(), rows_used })
}

/// The head's score of each example in `rows`, `[examples]` in the order the rows lay them out: the hidden
/// state at the example's last token (the end of its response) times the head.
pub fn scores(
    model: &Llama,
    head: &Tensor,
    examples: &[Example],
    rows: &[Row],
    dropout: Option<&mut Dropout>,
) -> Result<Tensor> {
    let batch = data::batch(examples, rows, 0, false);
    let inputs = Inputs::new(&batch.tokens, &batch.segments, &model.device, model.dtype)?;
    let hidden = model.hidden(&inputs, true, dropout)?;
    let (b, t, h) = hidden.dims3()?;
    let last: Vec<u32> = data::spans(examples, rows, t).iter().map(|s| (s.end - 1) as u32).collect();
    let n = last.len();
    let last = Tensor::from_vec(last, n, &model.device)?;
    let at_last = hidden.reshape((b * t, h))?.index_select(&last, 0)?;
    Ok(at_last.to_dtype(head.dtype())?.matmul(&head.t()?)?.squeeze(D::Minus1)?)
}

/// A micro-batch's ranking losses: each group's mean `−log σ(s_better − s_worse)` over its pairs, summed over
/// the groups in `rows`, with the number of groups and the pairs' scores.
pub fn ranking_losses(
    model: &Llama,
    head: &Tensor,
    ranked: &Ranked,
    group_of: &[usize],
    rows: &[Row],
    dropout: Option<&mut Dropout>,
) -> Result<(Tensor, usize, PairSums)> {
    let examples = &ranked.examples.examples;
    let scores = scores(model, head, examples, rows, dropout)?;
    let order: Vec<usize> = rows.concat();
    let mut at: BTreeMap<usize, u32> = BTreeMap::new();
    order.iter().enumerate().for_each(|(k, &i)| {
        at.insert(i, k as u32);
    });
    let (mut better, mut worse, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = Vec::new();
    for &i in &order {
        let g = group_of[i];
        if seen.contains(&g) {
            continue;
        }
        seen.push(g);
        let members = &ranked.groups[g];
        let pairs: Vec<(usize, usize)> = members
            .iter()
            .flat_map(|&a| members.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| ranked.rewards[a] > ranked.rewards[b])
            .collect();
        for &(a, b) in &pairs {
            better.push(at[&a]);
            worse.push(at[&b]);
            weights.push(1.0 / pairs.len() as f32);
        }
    }
    let device = &model.device;
    let n = better.len();
    let (sb, sw) = (
        scores.index_select(&Tensor::from_vec(better, n, device)?, 0)?,
        scores.index_select(&Tensor::from_vec(worse, n, device)?, 0)?,
    );
    let per_pair = super::preference::softplus(&(&sw - &sb)?)?;
    let loss = (&per_pair * Tensor::from_vec(weights, n, device)?.to_dtype(per_pair.dtype())?)?.sum_all()?;
    let values = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
    let sums = PairSums::of(&values(&sb)?, &values(&sw)?, &values(&per_pair)?);
    Ok((loss, seen.len(), sums))
}

/// The held-out groups' mean loss and pairwise accuracy (AUC), `batch` groups at a time.
pub fn eval_ranking(
    model: &Llama,
    head: &Tensor,
    ranked: &Ranked,
    batch: usize,
    max_len: usize,
) -> Result<PairMetrics> {
    let group_of = ranked.group_of();
    let mut sums = PairSums::default();
    for chunk in ranked.groups.chunks(batch.max(1)) {
        let rows = data::pack(&ranked.examples.examples, &chunk.concat(), max_len, true);
        sums.add(ranking_losses(model, head, ranked, &group_of, &rows, None)?.2);
    }
    Ok(sums.metrics())
}
