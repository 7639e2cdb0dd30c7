//! `whet judge`: LLM-as-judge. A model reads each row's question and answer (and the reference answer, where
//! the row has one) through a prompt template and replies with a score; the reward is that score mapped onto
//! [0, 1], and the reason quotes the reply. The judge decodes greedily, so the same rows get the same scores.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float32Array, StringArray};
use serde::Serialize;
use whetstone_datasets::schema::{self, columns};
use whetstone_datasets::stage::with_column;
use whetstone_datasets::{run_stage, Manifest, ReadOptions, Rows, Stage};

use crate::engine::generate::{Counter, OnEngine};
use crate::engine::{Engine, Job, Prompt, PromptMode};
use crate::error::{Error, Result};
use crate::prompt::{column_or_meta, row_response, text_at};
use crate::sampling::Sampling;

/// The judge's default prompt: `{prompt}`, `{response}` and `{reference}` (a "Reference answer:" line, or
/// nothing) are filled in per row.
pub const DEFAULT_TEMPLATE: &str = "Rate the answer to the question from 1 (wrong or useless) to 10 (correct and \
complete).\n\nQuestion: {prompt}\n\nAnswer: {response}\n{reference}\nReply with the number only.";

/// What `whet judge` found: its manifest's `results`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JudgeResults {
    pub rows_scored: u64,
    /// Rows never put to the judge, and replies without a score.
    pub rows_without_a_score: u64,
    pub mean_reward_scored: f64,
}

/// The judge's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeStep {
    pub template: String,
    /// The lowest and highest score the template asks for.
    pub scale: (f64, f64),
    /// New tokens of the judge's reply.
    pub max_tokens: usize,
    pub mode: PromptMode,
}

impl Default for JudgeStep {
    fn default() -> Self {
        JudgeStep { template: DEFAULT_TEMPLATE.into(), scale: (1.0, 10.0), max_tokens: 8, mode: PromptMode::Chat }
    }
}

/// The first number of a reply, mapped from `scale` onto [0, 1]; else why not.
pub fn parse_score(reply: &str, scale: (f64, f64)) -> std::result::Result<f64, String> {
    let number = regex::Regex::new(r"-?\d+(?:\.\d+)?").expect("a valid pattern");
    let shown: String = reply.trim().chars().take(80).collect();
    let Some(found) = number.find(reply) else { return Err(format!("no score in the judge's reply {shown:?}")) };
    let value: f64 = found.as_str().parse().map_err(|_| format!("no score in the judge's reply {shown:?}"))?;
    if value < scale.0 || value > scale.1 {
        return Err(format!("the judge's score {value} is outside {}–{} (reply {shown:?})", scale.0, scale.1));
    }
    Ok((value - scale.0) / (scale.1 - scale.0))
}

impl JudgeStep {
    fn check(&self) -> Result<()> {
        if !(self.scale.0.is_finite() && self.scale.1.is_finite() && self.scale.0 < self.scale.1) {
            return Err(Error::Invalid(format!(
                "judge scale {:?}: give the lowest then the highest score",
                self.scale
            )));
        }
        if !self.template.contains("{response}") {
            return Err(Error::Invalid("the judge's template must contain {response}".into()));
        }
        if self.max_tokens == 0 {
            return Err(Error::Invalid("the judge needs at least one new token".into()));
        }
        Ok(())
    }

    fn judge_prompt(&self, prompt: &str, response: &str, reference: Option<&str>) -> String {
        let reference = reference.map_or(String::new(), |r| format!("\nReference answer: {r}\n"));
        self.template.replace("{prompt}", prompt).replace("{reference}", &reference).replace("{response}", response)
    }

    /// Judges every row of `input` with `engine` and writes `output` with `reward` and `reward_reason`.
    pub fn run(&self, engine: &Engine, input: &Path, output: &Path, read: ReadOptions) -> Result<Manifest> {
        let judging = OnEngine { step: self, engine, counter: &Counter::default() };
        Ok(run_stage(&judging, input, output, read, |_, _| {})?.manifest)
    }
}

impl Stage for OnEngine<'_, JudgeStep> {
    type Results = JudgeResults;
    type Error = Error;

    fn name(&self) -> &str {
        "judge"
    }

    fn parameters(&self) -> serde_json::Value {
        let folder = self.engine.folder();
        serde_json::json!({"judge": self.step, "model": folder.path, "model_format": folder.format(),
            "model_xxh3": folder.xxh3})
    }

    fn run(&self, rows: &mut Rows) -> Result<JudgeResults> {
        let (step, engine, counter) = (self.step, self.engine, self.counter);
        step.check()?;
        let sampling = Sampling { temperature: 0.0, max_tokens: step.max_tokens, ..Default::default() };
        let context = engine.folder().context;
        let (mut scored, mut unscored, mut total) = (0u64, 0u64, 0.0f64);
        rows.map(|batch| {
            let n = batch.num_rows();
            let mut reasons: Vec<Option<String>> = vec![None; n];
            let mut jobs = Vec::new();
            let mut asked = Vec::new();
            for (row, reason) in reasons.iter_mut().enumerate() {
                let Some(response) = row_response(&batch, row) else {
                    *reason = Some("the row has no response".into());
                    continue;
                };
                let prompt = text_at(&batch, schema::PROMPT, row).unwrap_or_default();
                let reference = column_or_meta(&batch, columns::REFERENCE, row);
                let text = step.judge_prompt(&prompt, &response, reference.as_deref());
                let tokens = engine.prompt_tokens(&Prompt::Text(text), step.mode)?;
                if tokens.len() + step.max_tokens > context {
                    *reason = Some(format!(
                        "the judge's prompt is {} tokens, too long for its context of {context}",
                        tokens.len()
                    ));
                    continue;
                }
                jobs.push(Job { prompt_tokens: Arc::new(tokens), stream: 0, max_tokens: step.max_tokens });
                asked.push(row);
            }
            let replies = engine.generate(jobs, &sampling, &|tokens| {
                counter.samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counter.tokens.fetch_add(tokens as u64, std::sync::atomic::Ordering::Relaxed);
            })?;
            let mut rewards = vec![0f32; n];
            let scored_before = scored;
            for (row, reply) in asked.into_iter().zip(replies) {
                match parse_score(&reply.text, step.scale) {
                    Ok(v) => {
                        rewards[row] = v as f32;
                        reasons[row] = Some(format!("judge: {}", reply.text.trim()));
                        scored += 1;
                        total += v;
                    }
                    Err(why) => reasons[row] = Some(why),
                }
            }
            // Rows never put to the judge, and replies without a score.
            unscored += n as u64 - (scored - scored_before);
            let reward = columns::field(columns::REWARD, 0).expect("a stage column");
            let reason = columns::field(columns::REWARD_REASON, 0).expect("a stage column");
            let out = with_column(&batch, reward, Arc::new(Float32Array::from(rewards)))?;
            let why: Vec<String> = reasons.into_iter().map(Option::unwrap_or_default).collect();
            Ok(with_column(&out, reason, Arc::new(StringArray::from(why)))?)
        })?;
        Ok(JudgeResults {
            rows_scored: scored,
            rows_without_a_score: unscored,
            mean_reward_scored: total / scored.max(1) as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_number_of_the_reply_is_the_score() {
        assert_eq!(parse_score("7", (1.0, 10.0)), Ok(6.0 / 9.0));
        assert_eq!(parse_score(" Score: 10/10", (1.0, 10.0)), Ok(1.0));
        assert_eq!(parse_score("1", (1.0, 10.0)), Ok(0.0));
        assert!(parse_score("great", (1.0, 10.0)).unwrap_err().contains("no score"));
        assert!(parse_score("11", (1.0, 10.0)).unwrap_err().contains("outside 1–10"));
        let step = JudgeStep::default();
        let text = step.judge_prompt("2 + 2?", "4", Some("4"));
        assert!(
            text.contains("Question: 2 + 2?") && text.contains("Answer: 4") && text.contains("Reference answer: 4")
        );
        assert!(!step.judge_prompt("q", "a", None).contains("Reference"));
    }
}
