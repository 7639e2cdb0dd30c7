//! `whet reward`: scores every row's response and adds `reward` and `reward_reason`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, StringArray};
use serde::{Deserialize, Serialize};
use whetstone_datasets::schema::{self, columns};
use whetstone_datasets::stage::with_column;
use whetstone_datasets::{run_stage, Manifest, ReadOptions, Rows, Stage};

use super::code::PythonTests;
use super::verify::{ExactMatch, Gsm8k, JsonValid, RegexMatch};
use super::{Candidate, Likelihood, Reward, Weighted};
use crate::error::{Error, Result};
use crate::prompt::{column_or_meta, row_response, text_at};

/// One reward of a stage, as a user names it: `gsm8k`, `exact`, `exact-case`, `json`, `regex:PATTERN`, or
/// `code` (Python run against the row's tests in a sandbox, 5 s at most), `likelihood` (exp of the
/// `mean_log_prob` that `whet score` added), or `rm:FOLDER` (a trained reward model), each with a weight
/// (`NAME=0.5`; 1 by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSpec {
    pub name: String,
    pub weight: f64,
}

impl RewardSpec {
    pub const NAMES: [&'static str; 8] =
        ["gsm8k", "exact", "exact-case", "json", "regex:PATTERN", "code", "likelihood", "rm:FOLDER"];

    /// `NAME[=WEIGHT]`.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, weight) = match text.rsplit_once('=') {
            Some((name, w)) if w.parse::<f64>().is_ok() => (name, w.parse::<f64>().unwrap_or(1.0)),
            _ => (text, 1.0),
        };
        if !weight.is_finite() {
            return Err(Error::Invalid(format!("reward {text:?}: the weight must be a finite number")));
        }
        let spec = RewardSpec { name: name.to_string(), weight };
        match spec.name.strip_prefix("rm:") {
            // A reward model loads when the stage runs; here only the folder is checked.
            Some(folder) => super::model::check_folder(std::path::Path::new(folder))?,
            None => drop(spec.build()?),
        }
        Ok(spec)
    }

    fn build(&self) -> Result<Box<dyn Reward>> {
        Ok(match self.name.as_str() {
            "gsm8k" => Box::new(Gsm8k),
            "exact" => Box::new(ExactMatch { case_sensitive: false }),
            "exact-case" => Box::new(ExactMatch { case_sensitive: true }),
            "json" => Box::new(JsonValid),
            "code" => Box::new(PythonTests::default()),
            "likelihood" => Box::new(Likelihood),
            other => match (other.strip_prefix("regex:"), other.strip_prefix("rm:")) {
                (Some(pattern), _) => Box::new(RegexMatch::new(pattern)?),
                (_, Some(folder)) => Box::new(super::model::RewardModel::load(std::path::Path::new(folder))?),
                _ => {
                    return Err(Error::Invalid(format!(
                        "unknown reward {other:?}: use one of {:?}, with =WEIGHT to weigh it",
                        Self::NAMES
                    )))
                }
            },
        })
    }
}

/// The reward stage: the weighted sum of `rewards` for each row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewardStep {
    pub rewards: Vec<RewardSpec>,
}

/// A reason with its numbers replaced by `N`: reasons counted by kind keep the manifest short
/// ("answer N, the reference is N").
fn reason_kind(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars.peek().is_some_and(|&d| d.is_ascii_digit() || d == ',' || d == '.') {
                let d = chars.next().unwrap_or_default();
                if (d == ',' || d == '.') && !chars.peek().is_some_and(char::is_ascii_digit) {
                    out.push('N');
                    out.push(d);
                    break;
                }
            }
            if !out.ends_with(['.', ',']) {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out.chars().take(120).collect()
}

/// What `whet reward` found: its manifest's `results`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardResults {
    pub rows: u64,
    pub mean_reward: f64,
    /// Rows with a reward of 1 or more.
    pub full_reward: u64,
    /// Rows by the kind of their reason (numbers masked: "answer N matches the reference N").
    pub reasons: BTreeMap<String, u64>,
}

impl RewardStep {
    pub(crate) fn reward(&self) -> Result<Box<dyn Reward>> {
        if self.rewards.is_empty() {
            return Err(Error::Invalid(format!("name at least one reward: {:?}", RewardSpec::NAMES)));
        }
        if let [only] = self.rewards.as_slice() {
            if only.weight == 1.0 {
                return only.build();
            }
        }
        let parts = self.rewards.iter().map(|s| Ok((s.weight, s.build()?))).collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Weighted { parts }))
    }

    /// The reward as its manifest names it (`gsm8k`, or a weighted sum of several).
    pub fn reward_name(&self) -> Result<String> {
        Ok(self.reward()?.name())
    }

    /// Scores every row of `input` (its response, or its conversation's last assistant turn, against its
    /// `reference` when it has one) and writes `output` with its manifest.
    pub fn run(&self, input: &Path, output: &Path, read: ReadOptions) -> Result<Manifest> {
        Ok(run_stage(self, input, output, read, |_, _| {})?.manifest)
    }
}

impl Stage for RewardStep {
    type Results = RewardResults;
    type Error = Error;

    fn name(&self) -> &str {
        "reward"
    }

    fn parameters(&self) -> serde_json::Value {
        // A reward that cannot be built fails in `run`, before any row is read.
        serde_json::json!({"reward": self.reward_name().unwrap_or_default(), "rewards": self.rewards})
    }

    fn run(&self, rows: &mut Rows) -> Result<RewardResults> {
        let reward = self.reward()?;
        let mut values = Vec::new();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        rows.map(|batch| {
            let mut scores = Vec::with_capacity(batch.num_rows());
            let mut why = Vec::with_capacity(batch.num_rows());
            let f64s = |name: &str| {
                batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<arrow::datatypes::Float64Type>().cloned())
            };
            let log_probs = f64s(columns::MEAN_LOG_PROB);
            // Samples as `whet generate` wrote them: their log-likelihood over their response tokens.
            let (sums, lengths) = (
                f64s(columns::LOG_LIKELIHOOD),
                batch
                    .column_by_name(columns::RESPONSE_TOKENS)
                    .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt32Type>().cloned()),
            );
            for row in 0..batch.num_rows() {
                let response = row_response(&batch, row);
                let prompt = text_at(&batch, schema::PROMPT, row).unwrap_or_default();
                // The `reference` column (as `whet generate` writes it), else a JSONL file's `reference` field.
                let reference = column_or_meta(&batch, columns::REFERENCE, row);
                let mean_log_prob =
                    log_probs.as_ref().filter(|c| c.is_valid(row)).map(|c| c.value(row)).or_else(|| {
                        let (sum, n) = (sums.as_ref()?, lengths.as_ref()?);
                        (sum.is_valid(row) && n.is_valid(row) && n.value(row) > 0)
                            .then(|| sum.value(row) / n.value(row) as f64)
                    });
                let score = match &response {
                    Some(response) => reward.score(&Candidate {
                        prompt: &prompt,
                        response,
                        reference: reference.as_deref(),
                        mean_log_prob,
                    }),
                    None => super::Score::fail("the row has no response"),
                };
                scores.push(score.value as f32);
                values.push(score.value);
                *reasons.entry(reason_kind(&score.reason)).or_default() += 1;
                why.push(score.reason);
            }
            let reward_field = columns::field(columns::REWARD, 0).expect("a stage column");
            let reason_field = columns::field(columns::REWARD_REASON, 0).expect("a stage column");
            let out = with_column(&batch, reward_field, Arc::new(Float32Array::from(scores)))?;
            Ok(with_column(&out, reason_field, Arc::new(StringArray::from(why)))?)
        })?;
        let n = values.len().max(1) as f64;
        Ok(RewardResults {
            rows: values.len() as u64,
            mean_reward: values.iter().sum::<f64>() / n,
            full_reward: values.iter().filter(|&&v| v >= 1.0).count() as u64,
            reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_are_named_with_weights_and_reasons_counted_by_kind() {
        assert_eq!(RewardSpec::parse("gsm8k").unwrap(), RewardSpec { name: "gsm8k".into(), weight: 1.0 });
        assert_eq!(RewardSpec::parse("regex:a=b=0.5").unwrap(), RewardSpec { name: "regex:a=b".into(), weight: 0.5 });
        assert!(RewardSpec::parse("judge").unwrap_err().to_string().contains("unknown reward \"judge\""));
        assert!(RewardSpec::parse("regex:(").is_err());
        assert_eq!(reason_kind("answer 1,234 matches the reference 1,234"), "answer N matches the reference N");
        assert_eq!(reason_kind("answer 70, the reference is 72."), "answer N, the reference is N.");
    }
}
