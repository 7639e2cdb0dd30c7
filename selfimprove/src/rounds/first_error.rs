//! `[preference] pairing = "first-error"`: pairs that put the blame on the step where a wrong answer goes wrong
//! ("RL on Incorrect Synthetic Data Scales the Efficiency of LLM Math Reasoning by Eight-Fold", its plain form).
//!
//! An answer's steps are its lines (a blank line joins the step before it). For a pair's rejected (wrong:
//! below `min_reward`) answer, the model rolls out `rollouts`
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

use crate::engine::{Engine, Job, Sample};
use crate::error::Result;
use crate::keep::Pair;
use crate::prompt::{Prompt, PromptMode};
use crate::reward::{Candidate, Reward};
use crate::sampling::Sampling;

/// What the roll-outs cost and found, as `first-error/first-error.json` records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirstErrorReport {
    pub pairs: usize,
    /// Pairs left as they were: their rejected answer reaches `min_reward` (it is not wrong), or it is one step.
    pub left_as_they_were: usize,
    /// Pairs whose chosen answer now shares a prefix of one step or more with the rejected one.
    pub sharing_a_prefix: usize,
    pub rollouts: u64,
    pub rollout_tokens: u64,
    pub seconds: f64,
    /// How many re-made pairs found their first error at step k (1: the first line).
    pub first_error_at: BTreeMap<usize, usize>,
}

/// An answer's steps: its lines, each with its line break; a blank line joins the step before it (it costs no
/// roll-outs of its own).
pub fn steps(text: &str) -> Vec<String> {
    let mut steps: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        match steps.last_mut() {
            Some(last) if line.trim().is_empty() => last.push_str(line),
            _ => steps.push(line.to_string()),
        }
    }
    steps
}

/// A pair's prompt for the model, and as the reward step shows it to a reward (the text; none for a
/// conversation, whose reward sees only the answer).
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
            (Prompt::Turns(turns), String::new())
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
    /// A successful answer rolled out after each prefix tried so far, with its reward (index k: after k steps;
    /// index 0: the pair's own chosen answer).
    recovered: Vec<(String, f64)>,
    /// The first error, once found.
    first_error: Option<usize>,
}

/// What the search needs of a model: the tokens of a prompt, those of an answer's start that follows it, and
/// samples for jobs (in the jobs' order).
pub trait RollOut {
    fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>>;
    fn continuation_tokens(&self, answer_start: &str) -> Result<Vec<u32>>;
    fn generate(&self, jobs: Vec<Job>) -> Result<Vec<Sample>>;
}

/// The engine rolling out with the rounds' sampling.
pub struct EngineRollOut<'a> {
    pub engine: &'a Engine,
    pub sampling: &'a Sampling,
    pub mode: PromptMode,
}

impl RollOut for EngineRollOut<'_> {
    fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.engine.prompt_tokens(prompt, self.mode)
    }

    fn continuation_tokens(&self, answer_start: &str) -> Result<Vec<u32>> {
        self.engine.continuation_tokens(answer_start)
    }

    fn generate(&self, jobs: Vec<Job>) -> Result<Vec<Sample>> {
        self.engine.generate(jobs, self.sampling, &|_| {})
    }
}

/// The pairs re-made at their first errors. `references` gives each prompt's reference answer by prompt id; a
/// roll-out succeeds where `reward` gives its whole answer (scored with the roll-out's own mean log-probability)
/// at least `min_reward`. A pair whose rejected answer reaches `min_reward` is left as it was.
#[allow(clippy::too_many_arguments)]
pub fn first_error_pairs(
    model: &dyn RollOut,
    reward: &dyn Reward,
    references: &HashMap<String, String>,
    pairs: &[Pair],
    sampling: &Sampling,
    min_reward: f64,
    rollouts: usize,
) -> Result<(Vec<Pair>, FirstErrorReport)> {
    let started = Instant::now();
    let mut report = FirstErrorReport { pairs: pairs.len(), ..Default::default() };
    let mut searches: Vec<Option<Search>> = pairs
        .iter()
        .map(|p| {
            let steps = steps(&p.rejected);
            if p.rejected_reward >= min_reward || steps.len() < 2 {
                return None;
            }
            let (prompt, prompt_text) = prompt_of(&p.prompt);
            let prompt_tokens = match model.prompt_tokens(&prompt) {
                Ok(tokens) => tokens,
                Err(e) => return Some(Err(e)),
            };
            Some(Ok(Search {
                prompt_tokens,
                prompt_text,
                steps,
                recovered: vec![(p.chosen.clone(), p.chosen_reward)],
                first_error: None,
            }))
        })
        .map(Option::transpose)
        .collect::<Result<_>>()?;
    for k in 1.. {
        // The pairs still searching: every prefix so far was recovered from, and a shorter one than the whole
        // answer is left to try.
        let active: Vec<usize> = (0..searches.len())
            .filter(|&i| searches[i].as_ref().is_some_and(|s| s.first_error.is_none() && k < s.steps.len()))
            .collect();
        if active.is_empty() {
            break;
        }
        let mut jobs = Vec::new();
        let mut prefixes = Vec::new();
        for &i in &active {
            let s = searches[i].as_ref().expect("active");
            let prefix: String = s.steps[..k].concat();
            let continuation = model.continuation_tokens(&prefix)?;
            // The answer's own budget: what the prefix used of it is not given again.
            let max_tokens = sampling.max_tokens.saturating_sub(continuation.len()).max(1);
            let tokens = Arc::new([s.prompt_tokens.as_slice(), &continuation].concat());
            for r in 0..rollouts {
                jobs.push(Job {
                    prompt_tokens: tokens.clone(),
                    stream: sampling.stream(&format!("{}/first-error/{k}", pairs[i].prompt_id), r as u32),
                    max_tokens,
                });
            }
            prefixes.push(prefix);
        }
        let samples = model.generate(jobs)?;
        report.rollouts += samples.len() as u64;
        report.rollout_tokens += samples.iter().map(|s| s.tokens.len() as u64).sum::<u64>();
        for ((&i, prefix), tries) in active.iter().zip(&prefixes).zip(samples.chunks(rollouts.max(1))) {
            let reference = references.get(&pairs[i].prompt_id).map(String::as_str);
            let search = searches[i].as_mut().expect("active");
            let success = tries.iter().find_map(|t| {
                let answer = format!("{prefix}{}", t.text);
                let mean_log_prob =
                    (!t.log_probs.is_empty()).then(|| t.log_probs.iter().sum::<f64>() / t.log_probs.len() as f64);
                let candidate = Candidate { prompt: &search.prompt_text, response: &answer, reference, mean_log_prob };
                let value = reward.score(&candidate).value;
                (value >= min_reward).then_some((answer, value))
            });
            match success {
                Some(found) => search.recovered.push(found),
                None => search.first_error = Some(k),
            }
        }
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (pair, search) in pairs.iter().zip(searches) {
        let Some(search) = search else {
            report.left_as_they_were += 1;
            out.push(pair.clone());
            continue;
        };
        let first_error = search.first_error.unwrap_or(search.steps.len());
        *report.first_error_at.entry(first_error).or_default() += 1;
        // The answer rolled out after the steps before the first error (the pair's own chosen one before step 1).
        let (chosen, chosen_reward) = search.recovered[first_error - 1].clone();
        if first_error > 1 {
            report.sharing_a_prefix += 1;
        }
        out.push(Pair { chosen, chosen_reward, ..pair.clone() });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Score;

    #[test]
    fn steps_are_lines_with_their_breaks_and_blank_lines_join_the_step_before() {
        assert_eq!(
            steps("12 + 30 = 42\n42 + 5 = 47\nThe answer is 47"),
            ["12 + 30 = 42\n", "42 + 5 = 47\n", "The answer is 47"]
        );
        assert_eq!(steps("a\n\nb"), ["a\n\n", "b"]);
        assert_eq!(steps("one line"), ["one line"]);
        assert_eq!(steps("").len(), 0);
    }

    /// A model whose roll-outs succeed ("ok") from a prefix of fewer than `recoverable` lines, and fail after.
    struct Scripted {
        recoverable: usize,
    }

    impl RollOut for Scripted {
        // The prompt is one token; each line of the answer's start another.
        fn prompt_tokens(&self, _: &Prompt) -> Result<Vec<u32>> {
            Ok(vec![0])
        }

        fn continuation_tokens(&self, answer_start: &str) -> Result<Vec<u32>> {
            Ok(steps(answer_start).iter().map(|_| 1).collect())
        }

        fn generate(&self, jobs: Vec<Job>) -> Result<Vec<Sample>> {
            Ok(jobs
                .iter()
                .map(|j| {
                    let lines = j.prompt_tokens.len() - 1;
                    let text = if lines < self.recoverable { "ok" } else { "bad" };
                    Sample { text: text.into(), tokens: vec![7], log_probs: vec![-0.5], finish_reason: "stop".into() }
                })
                .collect())
        }
    }

    struct EndsOk;

    impl Reward for EndsOk {
        fn name(&self) -> String {
            "ends-ok".into()
        }

        fn score(&self, c: &Candidate) -> Score {
            if c.response.ends_with("ok") {
                Score::pass("ok")
            } else {
                Score::fail("not ok")
            }
        }
    }

    fn pair(id: &str, rejected: &str, rejected_reward: f64) -> Pair {
        Pair {
            prompt_id: id.into(),
            prompt: serde_json::json!("q"),
            chosen: "right\nok".into(),
            rejected: rejected.into(),
            chosen_reward: 1.0,
            rejected_reward,
        }
    }

    #[test]
    fn the_chosen_answer_is_rolled_out_from_the_steps_before_the_first_error() {
        let sampling = Sampling { n: 1, max_tokens: 10, ..Default::default() };
        let pairs = vec![
            pair("a", "s1\ns2\ns3\ns4", 0.0),
            pair("b", "s1\ns2", 0.0),
            pair("c", "s1\ns2\ns3", 1.0), // not wrong: left as it was
        ];
        // Roll-outs recover from 1 or 2 lines, not from 3: pair a's first error is its third step.
        let (made, report) =
            first_error_pairs(&Scripted { recoverable: 3 }, &EndsOk, &HashMap::new(), &pairs, &sampling, 1.0, 2)
                .unwrap();
        assert_eq!(made[0].chosen, "s1\ns2\nok", "shares the two steps before the first error");
        assert_eq!(made[0].rejected, pairs[0].rejected);
        // Pair b: every proper prefix (one line) recovers, so its last step is the first error.
        assert_eq!(made[1].chosen, "s1\nok");
        assert_eq!(made[2], pairs[2]);
        assert_eq!(report.first_error_at, BTreeMap::from([(2, 1), (3, 1)]));
        assert_eq!((report.left_as_they_were, report.sharing_a_prefix), (1, 2));
        // a: prefixes of 1, 2 and 3 lines; b: of 1 line; 2 roll-outs each.
        assert_eq!(report.rollouts, 2 * (3 + 1));
        // Nothing recovers: the first error is the first step and the pair keeps its own chosen answer.
        let (made, report) =
            first_error_pairs(&Scripted { recoverable: 0 }, &EndsOk, &HashMap::new(), &pairs, &sampling, 1.0, 2)
                .unwrap();
        assert_eq!(made[0].chosen, pairs[0].chosen);
        assert_eq!(report.first_error_at, BTreeMap::from([(1, 2)]));
    }
}
