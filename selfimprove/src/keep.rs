//! `whet keep`: keeps the self-generated samples a reward likes, and pairs the best with the worst.
//!
//! Samples are grouped by `prompt_id` (as `whet generate` writes them, after `whet reward`). Within a group
//! they are ranked by reward, then by the model's own log-likelihood (the more confident of two equally
//! rewarded samples first), then by sample index, so the ranking is a function of the data alone.
//!
//! - best-of-N: the top sample of each prompt (RFT, Qwen2.5-Math's rejection sampling);
//! - top-k: the `k` best of each prompt;
//! - threshold: every sample with reward at least `min_reward`;
//! - superbatch: SuperHF's filter, the top sample of each run of `size` consecutive samples, which compares
//!   samples across prompts (`size` = N is best-of-N).
//!
//! Every filter but `all` also drops samples under `min_reward` (a best sample that failed its verifier is
//! not worth training on). Dropped samples go to the rejected-rows file with their reason. Negatives are not
//! thrown away: [`pairs`] writes, for each prompt whose rewards differ, the best sample as `chosen` and the
//! worst as `rejected`, the JSONL layout DPO trainers (TRL, OpenRLHF, LLaMA-Factory) read.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Float64Type, UInt32Type};
use serde::{Deserialize, Serialize};
use whetstone_datasets::schema::{self, columns};
use whetstone_datasets::stage::Selection;
use whetstone_datasets::{run_stage, Manifest, ReadOptions, Rows, Stage};

use crate::error::{Error, Result};
use crate::prompt::{column_or_meta, text_at};

/// Which samples are kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Keep {
    /// Every sample (the control of an experiment: no reward filter).
    All,
    BestOfN,
    TopK {
        k: usize,
    },
    Threshold,
    Superbatch {
        size: usize,
    },
}

impl Keep {
    /// `all`, `best-of-n`, `top-k:K`, `threshold` or `superbatch:SIZE`.
    pub fn parse(text: &str) -> Result<Self> {
        let number = |what: &str, n: &str| {
            n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::Invalid(format!("{what} needs a whole number of at least 1 after the colon, not {n:?}"))
            })
        };
        match text.split_once(':') {
            None if text == "all" => Ok(Keep::All),
            None if text == "best-of-n" => Ok(Keep::BestOfN),
            None if text == "threshold" => Ok(Keep::Threshold),
            Some(("top-k", k)) => Ok(Keep::TopK { k: number("top-k", k)? }),
            Some(("superbatch", s)) => Ok(Keep::Superbatch { size: number("superbatch", s)? }),
            _ => Err(Error::Invalid(format!(
                "unknown filter {text:?}: use all, best-of-n, top-k:K, threshold or superbatch:SIZE"
            ))),
        }
    }
}

/// `whet keep`'s parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepStep {
    pub keep: Keep,
    /// Samples under this reward are dropped (all filters but `all`).
    pub min_reward: f64,
}

/// One sample, as ranked.
#[derive(Debug, Clone)]
struct Sample {
    row: u32,
    group: String,
    sample: u32,
    reward: f64,
    log_likelihood: f64,
}

/// Best first: reward, then the model's confidence, then the sample's index.
fn better(a: &Sample, b: &Sample) -> std::cmp::Ordering {
    b.reward.total_cmp(&a.reward).then(b.log_likelihood.total_cmp(&a.log_likelihood)).then(a.sample.cmp(&b.sample))
}

/// Reads the ranking columns of every sample; an absent `reward` column is an error that says what to run.
fn read_samples(batches: &mut dyn Iterator<Item = whetstone_datasets::Result<RecordBatch>>) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for batch in batches {
        let batch = batch?;
        let reward = batch.column_by_name(columns::REWARD).ok_or_else(|| {
            Error::Invalid("the input has no `reward` column: score the samples first (whet reward)".into())
        })?;
        let reward = reward
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| Error::Invalid(format!("column `reward` is {}, not Float32", reward.data_type())))?;
        let ids = batch.column_by_name(schema::ID).expect("core column").as_string::<i32>();
        let index = batch.column_by_name(columns::SAMPLE).and_then(|c| c.as_primitive_opt::<UInt32Type>().cloned());
        let ll =
            batch.column_by_name(columns::LOG_LIKELIHOOD).and_then(|c| c.as_primitive_opt::<Float64Type>().cloned());
        for i in 0..batch.num_rows() {
            let row = samples.len() as u32;
            if reward.is_null(i) || !reward.value(i).is_finite() {
                return Err(Error::Invalid(format!(
                    "row {} (id {}): field reward is missing or not a number",
                    row + 1,
                    ids.value(i)
                )));
            }
            samples.push(Sample {
                row,
                // Without a prompt id (column or JSONL field) every row is its own prompt.
                group: column_or_meta(&batch, columns::PROMPT_ID, i).unwrap_or_else(|| ids.value(i).to_string()),
                sample: index.as_ref().map_or(0, |s| s.value(i)),
                reward: reward.value(i) as f64,
                log_likelihood: ll.as_ref().filter(|l| !l.is_null(i)).map_or(0.0, |l| l.value(i)),
            });
        }
    }
    Ok(samples)
}

fn groups(samples: &[Sample]) -> BTreeMap<&str, Vec<&Sample>> {
    let mut groups: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups.entry(&s.group).or_default().push(s);
    }
    groups.values_mut().for_each(|g| g.sort_by(|a, b| better(a, b)));
    groups
}

impl KeepStep {
    /// Each sample's fate: `None` kept, or `(reason, detail)`.
    fn decide(&self, samples: &[Sample]) -> Vec<Option<(String, String)>> {
        let mut fate: Vec<Option<(String, String)>> = vec![None; samples.len()];
        let drop = |fate: &mut Vec<Option<(String, String)>>, s: &Sample, reason: &str, detail: String| {
            fate[s.row as usize].get_or_insert((reason.to_string(), detail));
        };
        if self.keep == Keep::All {
            return fate;
        }
        for s in samples.iter().filter(|s| s.reward < self.min_reward) {
            drop(&mut fate, s, "below_min_reward", format!("reward {} < {}", s.reward, self.min_reward));
        }
        let rank_within = |fate: &mut Vec<Option<(String, String)>>, ranked: &[&Sample], k: usize, what: &str| {
            for (rank, s) in ranked.iter().enumerate().skip(k) {
                let detail = format!("rank {} of {} in its {what} (reward {})", rank + 1, ranked.len(), s.reward);
                drop(fate, s, "not_best", detail);
            }
        };
        match self.keep {
            Keep::All | Keep::Threshold => {}
            Keep::BestOfN => groups(samples).values().for_each(|g| rank_within(&mut fate, g, 1, "prompt")),
            Keep::TopK { k } => groups(samples).values().for_each(|g| rank_within(&mut fate, g, k, "prompt")),
            Keep::Superbatch { size } => {
                for chunk in samples.chunks(size) {
                    let mut ranked: Vec<&Sample> = chunk.iter().collect();
                    ranked.sort_by(|a, b| better(a, b));
                    rank_within(&mut fate, &ranked, 1, "superbatch");
                }
            }
        }
        fate
    }

    /// Filters `input` into `output` (with its manifest); the dropped samples go to the rejected-rows file.
    pub fn run(&self, input: &Path, output: &Path, read: ReadOptions) -> Result<Manifest> {
        Ok(run_stage(self, input, output, read, |_, _| {})?.manifest)
    }
}

impl Stage for KeepStep {
    type Results = KeepResults;
    type Error = Error;

    fn name(&self) -> &str {
        "keep"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("serialisable")
    }

    fn run(&self, rows: &mut Rows) -> Result<KeepResults> {
        if !self.min_reward.is_finite() {
            return Err(Error::Invalid(format!("min_reward {} must be a finite number", self.min_reward)));
        }
        let columns =
            [schema::ID, schema::META, columns::PROMPT_ID, columns::SAMPLE, columns::REWARD, columns::LOG_LIKELIHOOD];
        let mut found = None;
        rows.whole_columns(&columns, |batches| {
            let samples = read_samples(batches)?;
            let fate = self.decide(&samples);
            let mut selection = Selection::default();
            let mut kept_reward = 0.0;
            for (s, fate) in samples.iter().zip(fate) {
                match fate {
                    None => {
                        selection.keep.push(s.row);
                        kept_reward += s.reward;
                    }
                    Some((reason, detail)) => selection.rejected.push((s.row, reason, detail, None)),
                }
            }
            let kept = selection.keep.len();
            let prompts = groups(&samples).len();
            let prompts_kept = samples
                .iter()
                .filter(|s| selection.keep.binary_search(&s.row).is_ok())
                .map(|s| &s.group)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            found = Some(KeepResults {
                samples: samples.len() as u64,
                kept: kept as u64,
                kept_fraction: kept as f64 / samples.len().max(1) as f64,
                prompts: prompts as u64,
                prompts_with_a_kept_sample: prompts_kept as u64,
                mean_reward_kept: kept_reward / kept.max(1) as f64,
                mean_reward_all: samples.iter().map(|s| s.reward).sum::<f64>() / samples.len().max(1) as f64,
                at_least_min_reward: samples.iter().filter(|s| s.reward >= self.min_reward).count() as u64,
            });
            Ok(selection)
        })?;
        Ok(found.expect("the stage ran"))
    }
}

/// What `whet keep` found: its manifest's `results`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeepResults {
    pub samples: u64,
    pub kept: u64,
    pub kept_fraction: f64,
    pub prompts: u64,
    pub prompts_with_a_kept_sample: u64,
    pub mean_reward_kept: f64,
    pub mean_reward_all: f64,
    /// Samples whose reward reaches `min_reward`: the pass rate's numerator, whatever the filter kept.
    pub at_least_min_reward: u64,
}

/// A preference pair of one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub prompt_id: String,
    pub prompt: serde_json::Value,
    pub chosen: String,
    pub rejected: String,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
}

/// For every prompt of `input` with two samples of different rewards: the best (chosen) and the worst
/// (rejected; of equally bad ones the one the model found likeliest, the most useful negative). Written to
/// `output` as JSONL: `prompt` (text, or the conversation's turns before the answer), `chosen`, `rejected`,
/// their rewards and `prompt_id`. Returns (pairs written, prompts without a pair).
pub fn pairs(input: &Path, output: &Path, read: ReadOptions) -> Result<(usize, usize)> {
    let mut reader = whetstone_datasets::DatasetReader::open(input, read)?;
    let mut samples = Vec::new();
    let mut texts: Vec<(serde_json::Value, String)> = Vec::new();
    let mut batches = Vec::new();
    for batch in reader.by_ref() {
        batches.push(batch?);
    }
    samples.extend(read_samples(&mut batches.iter().cloned().map(Ok))?);
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let prompt = match text_at(batch, schema::PROMPT, row) {
                Some(p) => serde_json::Value::String(p),
                None => {
                    let turns = whetstone_datasets::messages_at(batch, row).unwrap_or_default();
                    let before_answer = crate::prompt::prompt_turns(turns);
                    before_answer.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect()
                }
            };
            texts.push((prompt, crate::prompt::row_response(batch, row).unwrap_or_default()));
        }
    }
    let mut out = String::new();
    let (mut written, mut without) = (0, 0);
    for (group, ranked) in groups(&samples) {
        let (best, worst_reward) = (ranked[0], ranked[ranked.len() - 1].reward);
        if ranked.len() < 2 || best.reward <= worst_reward {
            without += 1;
            continue;
        }
        // Of the worst samples, the likeliest (ranked puts higher log-likelihood first among equal rewards).
        let worst = ranked.iter().find(|s| s.reward == worst_reward).expect("the worst reward is in the group");
        let pair = Pair {
            prompt_id: group.to_string(),
            prompt: texts[best.row as usize].0.clone(),
            chosen: texts[best.row as usize].1.clone(),
            rejected: texts[worst.row as usize].1.clone(),
            chosen_reward: best.reward,
            rejected_reward: worst.reward,
        };
        out.push_str(&serde_json::to_string(&pair)?);
        out.push('\n');
        written += 1;
    }
    whetstone_datasets::write::write_atomic(output, out.as_bytes())?;
    Ok((written, without))
}

/// The pairs [`pairs`] wrote.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    crate::folder::read_json_lines(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(row: u32, group: &str, sample: u32, reward: f64, ll: f64) -> Sample {
        Sample { row, group: group.into(), sample, reward, log_likelihood: ll }
    }

    #[test]
    fn filters_rank_by_reward_then_confidence() {
        let samples = vec![
            sample(0, "a", 0, 1.0, -3.0),
            sample(1, "a", 1, 1.0, -1.0),
            sample(2, "a", 2, 0.0, -0.5),
            sample(3, "b", 0, 0.0, -1.0),
            sample(4, "b", 1, 0.0, -2.0),
            sample(5, "b", 2, 0.5, -9.0),
        ];
        let kept = |keep: Keep, min_reward: f64| -> Vec<u32> {
            let fate = KeepStep { keep, min_reward }.decide(&samples);
            fate.iter().enumerate().filter(|(_, f)| f.is_none()).map(|(i, _)| i as u32).collect()
        };
        assert_eq!(kept(Keep::BestOfN, 0.0), vec![1, 5], "ties go to the likelier sample");
        assert_eq!(kept(Keep::BestOfN, 1.0), vec![1], "a best sample under the floor is dropped");
        assert_eq!(kept(Keep::TopK { k: 2 }, 0.0), vec![0, 1, 3, 5]);
        assert_eq!(kept(Keep::Threshold, 0.5), vec![0, 1, 5]);
        assert_eq!(kept(Keep::Superbatch { size: 6 }, 0.0), vec![1], "one sample of the whole superbatch");
        assert_eq!(kept(Keep::Superbatch { size: 3 }, 0.0), kept(Keep::BestOfN, 0.0));
        assert_eq!(kept(Keep::All, 9.0).len(), 6);
        let fate = KeepStep { keep: Keep::BestOfN, min_reward: 0.0 }.decide(&samples);
        assert_eq!(fate[0].as_ref().unwrap().0, "not_best");
        assert_eq!(Keep::parse("top-k:3").unwrap(), Keep::TopK { k: 3 });
        assert!(Keep::parse("top-k:0").unwrap_err().to_string().contains("at least 1"));
        assert!(Keep::parse("best").unwrap_err().to_string().contains("best-of-n"));
    }
}
