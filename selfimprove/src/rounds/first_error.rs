//! `[preference] pairing = "first-error"`: pairs that put the blame on the step where a wrong answer goes wrong
//! ("RL on Incorrect Synthetic Data Scales the Efficiency of LLM Math Reasoning by Eight-Fold", its plain form).
//!
//! An answer's steps are its lines. For a pair's rejected (wrong) answer, the model rolls out `rollouts`
//! continuations from the prompt followed by its first `k` steps, for k = 1, 2, …, and the rounds' reward checks
//! each continued answer. The first error is the first step after which no roll-out succeeds. The pair becomes:
//! chosen = a successful roll-out from the steps before it (they share that prefix; with no step before it, the
//! pair's own chosen answer), rejected = the wrong answer. DPO on such a pair compares the two answers only where
//! they part, from the first error on. Where every prefix still succeeds, the last step is the first error.
//! Roll-outs cost generation: their number, tokens and seconds are reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Job};
use crate::error::Result;
use crate::keep::Pair;
use crate::prompt::{Prompt, PromptMode};
use crate::reward::{Candidate, Reward};
use crate::sampling::Sampling;

/// What the roll-outs cost and found, as `first-error/first-error.json` records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirstErrorReport {
    pub pairs: usize,
    /// Pairs whose chosen answer now shares a prefix of one step or more with the rejected one.
    pub sharing_a_prefix: usize,
    pub rollouts: u64,
    pub rollout_tokens: u64,
    pub seconds: f64,
    /// How many pairs found their first error at step k (1: the first line).
    pub first_error_at: BTreeMap<usize, usize>,
}

/// An answer's steps: its lines, each with its line break.
fn steps(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

fn prompt_of(value: &serde_json::Value) -> (Prompt, String) {
    match value {
        serde_json::Value::Array(turns) => {
            let turns: Vec<(String, String)> = turns
                .iter()
                .map(|t| {
                    let text = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                    (text("role"), text("content"))
                })
                .collect();
            let last = turns.last().map(|t| t.1.clone()).unwrap_or_default();
            (Prompt::Turns(turns), last)
        }
        other => {
            let text = other.as_str().unwrap_or_default().to_string();
            (Prompt::Text(text.clone()), text)
        }
    }
}

/// Where a pair's search is.
struct Search {
    prompt_tokens: Vec<u32>,
    prompt_text: String,
    steps: Vec<String>,
    /// A successful answer rolled out after each prefix tried so far (index k: after k steps).
    recovered: Vec<String>,
    /// The first error, once found.
    first_error: Option<usize>,
}

/// The pairs re-made at their first errors. `references` gives each prompt's reference answer by prompt id; a
/// roll-out succeeds where `reward` gives its whole answer at least `min_reward`.
#[allow(clippy::too_many_arguments)]
pub fn first_error_pairs(
    engine: &Engine,
    reward: &dyn Reward,
    references: &HashMap<String, String>,
    pairs: &[Pair],
    sampling: &Sampling,
    mode: PromptMode,
    min_reward: f64,
    rollouts: usize,
) -> Result<(Vec<Pair>, FirstErrorReport)> {
    let started = Instant::now();
    let mut report = FirstErrorReport { pairs: pairs.len(), ..Default::default() };
    let mut searches = pairs
        .iter()
        .map(|p| {
            let (prompt, prompt_text) = prompt_of(&p.prompt);
            Ok(Search {
                prompt_tokens: engine.prompt_tokens(&prompt, mode)?,
                prompt_text,
                steps: steps(&p.rejected).into_iter().map(str::to_owned).collect(),
                recovered: vec![p.chosen.clone()],
                first_error: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for k in 1.. {
        // The pairs still searching: every prefix so far was recovered from, and a shorter one than the whole
        // answer is left to try.
        let active: Vec<usize> =
            (0..searches.len()).filter(|&i| searches[i].first_error.is_none() && k < searches[i].steps.len()).collect();
        if active.is_empty() {
            break;
        }
        let mut jobs = Vec::new();
        let mut prefixes = Vec::new();
        for &i in &active {
            let s = &searches[i];
            let prefix: String = s.steps[..k].concat();
            let mut tokens = s.prompt_tokens.clone();
            tokens.extend(engine.continuation_tokens(&prefix)?);
            let tokens = Arc::new(tokens);
            for r in 0..rollouts {
                jobs.push(Job {
                    prompt_tokens: tokens.clone(),
                    stream: sampling.stream(&format!("{}/first-error/{k}", pairs[i].prompt_id), r as u32),
                    max_tokens: sampling.max_tokens,
                });
            }
            prefixes.push(prefix);
        }
        let samples = engine.generate(jobs, sampling, &|_| {})?;
        report.rollouts += samples.len() as u64;
        report.rollout_tokens += samples.iter().map(|s| s.tokens.len() as u64).sum::<u64>();
        for ((&i, prefix), tries) in active.iter().zip(&prefixes).zip(samples.chunks(rollouts.max(1))) {
            let reference = references.get(&pairs[i].prompt_id).map(String::as_str);
            let search = &mut searches[i];
            let success = tries.iter().map(|t| format!("{prefix}{}", t.text)).find(|answer| {
                let candidate =
                    Candidate { prompt: &search.prompt_text, response: answer, reference, mean_log_prob: None };
                reward.score(&candidate).value >= min_reward
            });
            match success {
                Some(answer) => search.recovered.push(answer),
                None => search.first_error = Some(k),
            }
        }
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (pair, search) in pairs.iter().zip(searches) {
        let first_error = search.first_error.unwrap_or(search.steps.len().max(1));
        *report.first_error_at.entry(first_error).or_default() += 1;
        // The answer rolled out after the steps before the first error (the pair's own chosen one before step 1).
        let chosen = search.recovered[first_error - 1].clone();
        if first_error > 1 {
            report.sharing_a_prefix += 1;
        }
        out.push(Pair { chosen, ..pair.clone() });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_lines_with_their_breaks() {
        assert_eq!(
            steps("12 + 30 = 42\n42 + 5 = 47\nThe answer is 47"),
            ["12 + 30 = 42\n", "42 + 5 = 47\n", "The answer is 47"]
        );
        assert_eq!(steps("one line"), ["one line"]);
        assert_eq!(steps("").len(), 0);
    }
}
