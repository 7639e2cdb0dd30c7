//! Training examples: rows tokenized as the engine tokenizes them, the prompt masked from the loss, short
//! examples packed into rows, rows grouped into micro-batches and optimizer steps, all in a seeded order.

use std::path::Path;

use arrow::array::{Array, AsArray};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use whetstone_datasets::read::Rejections;
use whetstone_datasets::{schema, DatasetReader, OnError, ReadOptions};

use crate::error::{Error, Result};
use crate::prompt::{row_prompt, row_response, Prompt, PromptMode, PromptTokenizer};

/// One example: prompt and response tokens together; the loss covers `tokens[prompt_len..]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
}

/// A dataset read for training: the examples, and the rows that were not used, by reason.
#[derive(Debug, Clone)]
pub struct Examples {
    pub examples: Vec<Example>,
    pub rows_in: u64,
    pub rejected: Rejections,
}

/// Reads every row of `input` as an example. A row without a response, or longer than `max_len` tokens, is
/// an error naming the file, row and field, or with `OnError::Skip` counted as `no_response` / `too_long`.
pub fn read_examples(
    input: &Path,
    tokenizer: &PromptTokenizer,
    mode: PromptMode,
    max_len: usize,
    on_error: OnError,
) -> Result<Examples> {
    read_rows(input, tokenizer, mode, max_len, on_error, &mut |_, _| Ok(()))
}

/// [`read_examples`], calling `on_example(batch, row)` for each row that becomes an example (to read more of it).
pub(crate) fn read_rows(
    input: &Path,
    tokenizer: &PromptTokenizer,
    mode: PromptMode,
    max_len: usize,
    on_error: OnError,
    on_example: &mut dyn FnMut(&arrow::array::RecordBatch, usize) -> Result<()>,
) -> Result<Examples> {
    let mut reader = DatasetReader::open(input, ReadOptions { on_error, ..Default::default() })?;
    let mut examples = Vec::new();
    let mut dropped = Rejections::default();
    let mut rows = 0u64;
    for batch in &mut reader {
        let batch = batch?;
        let ids = batch.column_by_name(schema::ID).and_then(|c| c.as_string_opt::<i32>().cloned());
        for row in 0..batch.num_rows() {
            rows += 1;
            let id = ids.as_ref().filter(|c| c.is_valid(row)).map(|c| c.value(row).to_string()).unwrap_or_default();
            let mut refuse = |reason: &str, field: &str, detail: String| -> Result<()> {
                if on_error == OnError::Fail {
                    return Err(Error::Invalid(format!(
                        "{}: row {rows} (id {id}), field {field}: {detail}; skip such rows with --on-error skip",
                        input.display()
                    )));
                }
                dropped.add_reason(reason, || format!("{id}: {reason}: {detail}"));
                Ok(())
            };
            let Some(response) = row_response(&batch, row).filter(|r| !r.is_empty()) else {
                refuse("no_response", "response", "no response to train on".into())?;
                continue;
            };
            let Example { tokens, prompt_len } = example(tokenizer, &row_prompt(&batch, row), &response, mode)?;
            if tokens.len() > max_len {
                refuse(
                    "too_long",
                    "response",
                    format!(
                        "prompt and response are {} tokens; the longest a training row holds is {max_len}",
                        tokens.len()
                    ),
                )?;
                continue;
            }
            on_example(&batch, row)?;
            examples.push(Example { tokens, prompt_len });
        }
    }
    let mut rejected = reader.rejections().clone();
    rejected.merge(dropped);
    let rows_in = rows + reader.rejections().total();
    Ok(Examples { examples, rows_in, rejected })
}

/// [`read_examples`], with each example's label: the value of `column` (as text) in its row.
pub fn read_labelled_examples(
    input: &Path,
    tokenizer: &PromptTokenizer,
    mode: PromptMode,
    max_len: usize,
    on_error: OnError,
    column: &str,
) -> Result<(Examples, Vec<String>)> {
    let mut labels = Vec::new();
    // The batch's column as text, cast once per batch (the column kept, so its address names the batch).
    let mut cast: Option<(arrow::array::ArrayRef, arrow::array::StringArray)> = None;
    let examples = read_rows(input, tokenizer, mode, max_len, on_error, &mut |batch, row| {
        let fresh = match (&cast, batch.column_by_name(column)) {
            (Some((kept, _)), Some(now)) => !std::sync::Arc::ptr_eq(kept, now),
            _ => true,
        };
        if fresh {
            let values = super::order::labels_of(batch, column, input)?;
            cast = Some((batch.column_by_name(column).expect("checked").clone(), values));
        }
        let values = &cast.as_ref().expect("cast above").1;
        if values.is_null(row) {
            let ids = batch.column_by_name(schema::ID).and_then(|c| c.as_string_opt::<i32>().cloned());
            let id = ids.filter(|c| c.is_valid(row)).map(|c| c.value(row).to_string()).unwrap_or_default();
            return Err(Error::Invalid(format!(
                "{}: row with id {id:?} has no {column:?}: every row needs a skill",
                input.display()
            )));
        }
        labels.push(values.value(row).to_string());
        Ok(())
    })?;
    Ok((examples, labels))
}

/// Reads a preference-pairs file (JSONL, as `whet keep --pairs` and TRL write it: `prompt`, a text or a
/// conversation's turns, then `chosen` and `rejected`, each a text or a one-message assistant turn) into
/// examples: pair `i`'s chosen answer is example `2i`, its rejected one `2i + 1`. An empty answer is an answer
/// (the token that ends it: a model's empty sample is a fine negative). A pair that cannot be used (a field
/// missing, longer than `max_len`) is an error naming the file, line and field, or
/// with `OnError::Skip` counted by reason.
pub fn read_pair_examples(
    input: &Path,
    tokenizer: &PromptTokenizer,
    mode: PromptMode,
    max_len: usize,
    on_error: OnError,
) -> Result<Examples> {
    let text = std::fs::read_to_string(input).map_err(|e| Error::io(input, e))?;
    let mut examples = Vec::new();
    let mut rejected = Rejections::default();
    let mut rows_in = 0u64;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        rows_in += 1;
        let refuse = |rejected: &mut Rejections, reason: &str, field: &str, detail: String| -> Result<()> {
            if on_error == OnError::Fail {
                return Err(Error::Invalid(format!(
                    "{}: line {}, field {field}: {detail}; skip such pairs with --on-error skip",
                    input.display(),
                    i + 1
                )));
            }
            rejected.add_reason(reason, || format!("line {}: {field}: {detail}", i + 1));
            Ok(())
        };
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                refuse(&mut rejected, "not_json", "-", format!("not a JSON object: {e}"))?;
                continue;
            }
        };
        let prompt = match &value["prompt"] {
            serde_json::Value::String(s) => Some(Prompt::Text(s.clone())),
            serde_json::Value::Array(turns) => turns
                .iter()
                .map(|t| Some((t["role"].as_str()?.to_string(), t["content"].as_str()?.to_string())))
                .collect::<Option<Vec<_>>>()
                .map(Prompt::Turns),
            _ => None,
        };
        let Some(prompt) = prompt else {
            refuse(&mut rejected, "no_prompt", "prompt", "needs a text or a list of {role, content} turns".into())?;
            continue;
        };
        let answer = |field: &str| match &value[field] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(turns) if turns.len() == 1 => turns[0]["content"].as_str().map(str::to_owned),
            _ => None,
        };
        let (Some(chosen), Some(worse)) = (answer("chosen"), answer("rejected")) else {
            let field = if answer("chosen").is_none() { "chosen" } else { "rejected" };
            refuse(&mut rejected, "no_response", field, "needs a non-empty text (or one assistant turn)".into())?;
            continue;
        };
        let pair = [example(tokenizer, &prompt, &chosen, mode)?, example(tokenizer, &prompt, &worse, mode)?];
        if let Some((field, e)) = ["chosen", "rejected"].into_iter().zip(&pair).find(|(_, e)| e.tokens.len() > max_len)
        {
            let detail = format!(
                "prompt and answer are {} tokens; the longest a training row holds is {max_len}",
                e.tokens.len()
            );
            refuse(&mut rejected, "too_long", field, detail)?;
            continue;
        }
        examples.extend(pair);
    }
    Ok(Examples { examples, rows_in, rejected })
}

/// One example: the prompt's tokens as the engine gives them, then the response's (ending the turn).
pub fn example(tokenizer: &PromptTokenizer, prompt: &Prompt, response: &str, mode: PromptMode) -> Result<Example> {
    let mut tokens = tokenizer.prompt_tokens(prompt, mode)?;
    let prompt_len = tokens.len();
    tokens.extend(tokenizer.response_tokens(response, mode)?);
    Ok(Example { tokens, prompt_len })
}

/// A training row: examples laid end to end (one, without packing).
pub type Row = Vec<usize>;

/// Rows of at most `max_len` tokens from the examples in `order`: each example goes into the current row if
/// it fits, else starts a new one (packing keeps order, so an epoch sees every example once).
pub fn pack(examples: &[Example], order: &[usize], max_len: usize, packing: bool) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut used = 0;
    for &i in order {
        let n = examples[i].tokens.len();
        match rows.last_mut() {
            Some(row) if packing && used + n <= max_len => {
                row.push(i);
                used += n;
            }
            _ => {
                rows.push(vec![i]);
                used = n;
            }
        }
    }
    rows
}

/// How examples become optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batching {
    /// Rows per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accumulation: usize,
    /// Tokens per row.
    pub max_len: usize,
    pub packing: bool,
}

/// One optimizer step: its micro-batches' rows, and how far through the data it ends (2.5: half-way through
/// the third epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub micro_batches: Vec<Vec<Row>>,
    pub epoch: f64,
}

/// The rows of every optimizer step of a run: each step has `accumulation` micro-batches of `batch` rows.
/// Epochs are shuffled with `seed` (`None`: every epoch in the examples' own order); `steps`, when given,
/// cuts or extends the run (cycling epochs).
pub fn plan(examples: &[Example], b: Batching, epochs: usize, steps: Option<usize>, seed: Option<u64>) -> Vec<Step> {
    let Batching { batch, accumulation, max_len, packing } = b;
    let per_step = batch * accumulation;
    let mut plan = Vec::new();
    let mut epoch = 0u64;
    loop {
        let done = match steps {
            Some(s) => plan.len() >= s,
            None => epoch as usize >= epochs,
        };
        if done || examples.is_empty() {
            break;
        }
        let order = match seed {
            Some(seed) => epoch_order(examples.len(), seed, epoch),
            None => (0..examples.len()).collect(),
        };
        let rows = pack(examples, &order, max_len, packing);
        let in_epoch = rows.len().div_ceil(per_step);
        for (i, chunk) in rows.chunks(per_step).enumerate() {
            if steps.is_some_and(|s| plan.len() >= s) {
                break;
            }
            let micro_batches = chunk.chunks(batch).map(|c| c.to_vec()).collect();
            plan.push(Step { micro_batches, epoch: epoch as f64 + (i + 1) as f64 / in_epoch as f64 });
        }
        epoch += 1;
    }
    plan
}

/// The order of `n` units in epoch `epoch`: a shuffle that is a function of the seed and the epoch.
pub(crate) fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    order
}

/// [`plan`] for groups of examples compared with each other (a preference pair's two answers, a prompt's
/// ranked samples): a micro-batch holds `batch` whole groups (a step `batch × accumulation`), so every
/// comparison is made within one micro-batch, and their examples are packed into rows as [`plan`] packs them.
pub fn plan_groups(
    groups: &[Vec<usize>],
    examples: &[Example],
    b: Batching,
    epochs: usize,
    steps: Option<usize>,
    seed: u64,
) -> Vec<Step> {
    let Batching { batch, accumulation, max_len, packing } = b;
    let per_step = batch * accumulation;
    let mut plan = Vec::new();
    let mut epoch = 0u64;
    while !groups.is_empty() && steps.map_or((epoch as usize) < epochs, |s| plan.len() < s) {
        let order = epoch_order(groups.len(), seed, epoch);
        let in_epoch = groups.len().div_ceil(per_step);
        for (i, chunk) in order.chunks(per_step).enumerate() {
            if steps.is_some_and(|s| plan.len() >= s) {
                break;
            }
            let micro_batches = chunk
                .chunks(batch)
                .map(|these| {
                    let members: Vec<usize> = these.iter().flat_map(|&g| groups[g].iter().copied()).collect();
                    pack(examples, &members, max_len, packing)
                })
                .collect();
            plan.push(Step { micro_batches, epoch: epoch as f64 + (i + 1) as f64 / in_epoch as f64 });
        }
        epoch += 1;
    }
    plan
}

/// Pair `i` of [`read_pair_examples`] as a group: its chosen (`2i`) and rejected (`2i + 1`) examples.
pub fn pair_groups(examples: &[Example]) -> Vec<Vec<usize>> {
    (0..examples.len() / 2).map(|p| vec![2 * p, 2 * p + 1]).collect()
}

/// Where each example of `rows` lies in the micro-batch's tokens flattened (`[rows × width]`), in the order
/// the rows lay them out.
pub fn spans(examples: &[Example], rows: &[Row], width: usize) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let mut position = r * width;
        for &i in row {
            spans.push(position..position + examples[i].tokens.len());
            position += examples[i].tokens.len();
        }
    }
    spans
}

/// A micro-batch's tensors' contents: tokens, segment of each token, next-token targets and loss weights,
/// each `[rows, time]`, rows padded to the longest.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub tokens: Vec<Vec<u32>>,
    pub segments: Vec<Vec<u32>>,
    pub targets: Vec<Vec<u32>>,
    pub weights: Vec<Vec<f32>>,
    /// Tokens that are not padding.
    pub real_tokens: usize,
}

/// Lays out `rows`: a token's target is the next token of its own example; the weight is 1 where that target
/// is a response token (every token after the first with `train_on_prompt`), else 0.
pub fn batch(examples: &[Example], rows: &[Row], pad: u32, train_on_prompt: bool) -> Batch {
    let width = rows.iter().map(|r| r.iter().map(|&i| examples[i].tokens.len()).sum::<usize>()).max().unwrap_or(0);
    let mut out = Batch { tokens: vec![], segments: vec![], targets: vec![], weights: vec![], real_tokens: 0 };
    for row in rows {
        let (mut tokens, mut segments, mut targets, mut weights) = (vec![], vec![], vec![], vec![]);
        for (s, &i) in row.iter().enumerate() {
            let e = &examples[i];
            let first_target = if train_on_prompt { 1 } else { e.prompt_len.max(1) };
            for (k, &t) in e.tokens.iter().enumerate() {
                tokens.push(t);
                segments.push(s as u32);
                let next = k + 1;
                let learn = next < e.tokens.len() && next >= first_target;
                targets.push(if next < e.tokens.len() { e.tokens[next] } else { 0 });
                weights.push(if learn { 1.0 } else { 0.0 });
            }
        }
        out.real_tokens += tokens.len();
        let padding = width - tokens.len();
        tokens.extend(std::iter::repeat_n(pad, padding));
        segments.extend(std::iter::repeat_n(row.len() as u32, padding));
        targets.extend(std::iter::repeat_n(0, padding));
        weights.extend(std::iter::repeat_n(0.0, padding));
        out.tokens.push(tokens);
        out.segments.push(segments);
        out.targets.push(targets);
        out.weights.push(weights);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize, prompt_len: usize) -> Example {
        Example { tokens: (0..n as u32).map(|t| t + 10).collect(), prompt_len }
    }

    #[test]
    fn packing_fills_rows_in_order_and_the_plan_covers_every_example_each_epoch() {
        let examples: Vec<Example> = [3, 4, 5, 2, 6].iter().map(|&n| ex(n, 1)).collect();
        let order: Vec<usize> = (0..5).collect();
        assert_eq!(pack(&examples, &order, 8, true), vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!(pack(&examples, &order, 8, false).len(), 5);

        let b = Batching { batch: 1, accumulation: 2, max_len: 8, packing: false };
        let plan = plan(&examples, b, 3, None, Some(7));
        assert_eq!(plan.len(), 3 * 3, "5 rows an epoch, 2 a step: 3 steps, 3 epochs");
        let seen: Vec<usize> = plan[..3].iter().flat_map(|s| s.micro_batches.concat().concat()).collect();
        assert_eq!(plan.iter().map(|s| s.epoch).collect::<Vec<_>>()[..4], [1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0 + 1.0 / 3.0]);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4], "the first epoch sees each example once");
        let again = super::plan(&examples, b, 3, None, Some(7));
        assert_eq!(plan, again, "the seed fixes the order");
        let other = super::plan(&examples, b, 3, None, Some(8));
        assert_ne!(plan, other);
        assert_eq!(super::plan(&examples, b, 1, Some(7), Some(7)).len(), 7, "steps cycle epochs");
        let in_file_order = super::plan(&examples, b, 2, None, None);
        let first: Vec<usize> = in_file_order.iter().flat_map(|s| s.micro_batches.concat().concat()).collect();
        assert_eq!(first, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4], "no seed: the file's order, every epoch");
    }

    #[test]
    fn targets_are_the_next_token_of_the_same_example_and_only_responses_are_learned() {
        let examples = vec![ex(4, 2), ex(3, 1)];
        let b = batch(&examples, &[vec![0, 1], vec![1]], 0, false);
        assert_eq!(b.tokens[0], vec![10, 11, 12, 13, 10, 11, 12]);
        assert_eq!(b.segments[0], vec![0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(b.targets[0], vec![11, 12, 13, 0, 11, 12, 0]);
        // Example 0: prompt 2 tokens, so targets 12 and 13 are learned (predicted from positions 1 and 2).
        assert_eq!(b.weights[0], vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
        assert_eq!(b.tokens[1], vec![10, 11, 12, 0, 0, 0, 0], "padded to the widest row");
        assert_eq!(b.segments[1], vec![0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(b.weights[1].iter().sum::<f32>(), 2.0);
        assert_eq!(b.real_tokens, 10);
        let all = batch(&examples, &[vec![0]], 0, true);
        assert_eq!(all.weights[0], vec![1.0, 1.0, 1.0, 0.0]);
    }
}
