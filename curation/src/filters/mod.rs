//! Row filters, datatrove-style: each is one method that keeps a row or says why not; counting, writing
//! the rejected rows and the manifest live once, in the stage runner. Exact deduplication
//! ([`crate::dedup::exact`]) and n-gram decontamination ([`crate::decontam`]) keep or drop rows the same way
//! (with state: what was seen, what the evaluation sets hold), through [`split`]. Special-token strings
//! ([`special_tokens`]) are kept, stripped or rejected before the filters see the rows.

pub mod special_tokens;

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt32Array};
use rayon::prelude::*;
use rustc_hash::FxHashSet;
use whetstone_datasets::{
    run_stage, schema, Done, Dropped, Progress, ReadOptions, RowProgress, Rows, SpecialTokens, Stage,
};

use crate::error::{Error, Result};
use special_tokens::{special_tokens_batch, SpecialTokenMode, Stripped};

/// The texts of one row a filter looks at.
pub struct Row<'a> {
    pub id: &'a str,
    pub prompt: &'a str,
    pub response: Option<&'a str>,
}

/// Keeps a row (`None`) or gives the detail of why not; `name` is the reason counted in the manifest.
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self, row: &Row) -> Option<String>;
}

/// Prompt and response lengths (characters) within bounds.
pub struct Length {
    pub min_prompt: usize,
    pub max_prompt: usize,
    pub min_response: usize,
    pub max_response: usize,
}

impl Filter for Length {
    fn name(&self) -> &'static str {
        "length"
    }
    fn check(&self, row: &Row) -> Option<String> {
        let p = row.prompt.chars().count();
        if p < self.min_prompt || p > self.max_prompt {
            return Some(format!("prompt has {p} characters, outside [{}, {}]", self.min_prompt, self.max_prompt));
        }
        let r = row.response.map(|r| r.chars().count()).unwrap_or(0);
        (r < self.min_response || r > self.max_response)
            .then(|| format!("response has {r} characters, outside [{}, {}]", self.min_response, self.max_response))
    }
}

/// Degenerate repetition: the share of word n-grams that repeat an earlier one in the same text.
pub struct RepeatedNgrams {
    pub n: usize,
    pub max_ratio: f64,
}

impl Filter for RepeatedNgrams {
    fn name(&self) -> &'static str {
        "repeated_ngrams"
    }
    fn check(&self, row: &Row) -> Option<String> {
        for (what, text) in [("prompt", Some(row.prompt)), ("response", row.response)] {
            let words: Vec<&str> = text.unwrap_or("").split_whitespace().collect();
            if words.len() < self.n * 2 {
                continue;
            }
            let grams = words.windows(self.n);
            let total = grams.len();
            // Fx, not SipHash: the n-grams are the row's own, nobody's chosen keys (SipHash was 40% of filtering).
            let distinct = words.windows(self.n).collect::<FxHashSet<_>>().len();
            let ratio = 1.0 - distinct as f64 / total as f64;
            if ratio > self.max_ratio {
                return Some(format!(
                    "{what}: {:.0}% of its {}-grams repeat (max {:.0}%)",
                    ratio * 100.0,
                    self.n,
                    self.max_ratio * 100.0
                ));
            }
        }
        None
    }
}

/// Text that is mostly symbols: the share of characters that are neither alphanumeric nor whitespace.
pub struct NonAlphanumeric {
    pub max_ratio: f64,
}

impl Filter for NonAlphanumeric {
    fn name(&self) -> &'static str {
        "non_alphanumeric"
    }
    fn check(&self, row: &Row) -> Option<String> {
        for (what, text) in [("prompt", Some(row.prompt)), ("response", row.response)] {
            let text = text.unwrap_or("");
            let total = text.chars().count();
            if total == 0 {
                continue;
            }
            let symbols = text.chars().filter(|c| !c.is_alphanumeric() && !c.is_whitespace()).count();
            let ratio = symbols as f64 / total as f64;
            if ratio > self.max_ratio {
                return Some(format!("{what}: {:.0}% symbols (max {:.0}%)", ratio * 100.0, self.max_ratio * 100.0));
            }
        }
        None
    }
}

/// Responses that are empty or a refusal ("I'm sorry, but I can't…", "As an AI language model…").
pub struct EmptyOrRefused;

const REFUSALS: [&str; 8] = [
    "as an ai language model",
    "as an ai assistant",
    "i'm sorry, but i can't",
    "i am sorry, but i cannot",
    "i'm sorry, but i cannot",
    "i cannot fulfill",
    "i can't assist with",
    "i cannot help with",
];

impl Filter for EmptyOrRefused {
    fn name(&self) -> &'static str {
        "empty_or_refused"
    }
    fn check(&self, row: &Row) -> Option<String> {
        let response = row.response?; // prompt-only data has no response to judge
        let text = response.trim();
        if text.is_empty() {
            return Some("empty response".into());
        }
        let lower = text.to_lowercase().replace('’', "'");
        REFUSALS.iter().find(|r| lower.contains(*r)).map(|r| format!("refusal: contains {r:?}"))
    }
}

pub(crate) fn text_columns(batch: &RecordBatch) -> Result<(&StringArray, &StringArray, &StringArray)> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::Invalid(format!("the dataset has no text column {name:?}")))
    };
    Ok((col(schema::ID)?, col(schema::PROMPT)?, col(schema::RESPONSE)?))
}

/// Applies `filters` to every row (in parallel), keeping the rows that pass all of them.
pub fn filter_batch(batch: RecordBatch, filters: &[Box<dyn Filter>]) -> Result<(RecordBatch, Vec<Dropped>)> {
    let (ids, prompts, responses) = text_columns(&batch)?;
    let verdicts: Vec<Option<(&'static str, String)>> = (0..batch.num_rows())
        .into_par_iter()
        .map(|i| {
            let row = Row {
                id: ids.value(i),
                prompt: prompts.value(i),
                response: responses.is_valid(i).then(|| responses.value(i)),
            };
            filters.iter().find_map(|f| f.check(&row).map(|detail| (f.name(), detail)))
        })
        .collect();
    split(batch, verdicts)
}

/// Keeps the rows without a verdict; the others become [`Dropped`] rows.
pub(crate) fn split(
    batch: RecordBatch,
    verdicts: Vec<Option<(&'static str, String)>>,
) -> Result<(RecordBatch, Vec<Dropped>)> {
    let mut keep = Vec::with_capacity(batch.num_rows());
    let mut dropped = Vec::new();
    for (i, verdict) in verdicts.into_iter().enumerate() {
        match verdict {
            None => keep.push(i as u32),
            Some((reason, detail)) => dropped.push((i, reason.to_string(), detail)),
        }
    }
    let dropped = Dropped::rows(&batch, dropped)?;
    let kept = arrow::compute::take_record_batch(&batch, &UInt32Array::from(keep))?;
    Ok((kept, dropped))
}

/// What the filter stage changed without rejecting: the special-token strings it stripped.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FilterResults {
    pub special_tokens_stripped: Stripped,
}

/// The filter stage: special-token strings handled as `special_tokens` says, then heuristic quality filters,
/// each named in the rejection reasons.
pub fn filter_dataset(
    input: &Path,
    output: &Path,
    special_tokens: SpecialTokenMode,
    filters: &[Box<dyn Filter>],
    parameters: serde_json::Value,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress, RowProgress),
) -> Result<Done<FilterResults>> {
    let stage = Heuristics { special_tokens, tokens: SpecialTokens::known(), filters, parameters };
    run_stage(&stage, input, output, read, on_progress)
}

struct Heuristics<'a> {
    special_tokens: SpecialTokenMode,
    tokens: SpecialTokens,
    filters: &'a [Box<dyn Filter>],
    parameters: serde_json::Value,
}

impl Stage for Heuristics<'_> {
    type Results = FilterResults;
    type Error = Error;

    fn name(&self) -> &str {
        "filter"
    }

    fn parameters(&self) -> serde_json::Value {
        self.parameters.clone()
    }

    fn run(&self, rows: &mut Rows) -> Result<FilterResults> {
        let mut stripped = Stripped::default();
        rows.filter(|batch| {
            let (batch, mut dropped) = special_tokens_batch(batch, self.special_tokens, &self.tokens, &mut stripped)?;
            let (kept, more) = filter_batch(batch, self.filters)?;
            dropped.extend(more);
            Ok((kept, dropped))
        })?;
        Ok(FilterResults { special_tokens_stripped: stripped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(prompt: &'a str, response: Option<&'a str>) -> Row<'a> {
        Row { id: "x", prompt, response }
    }

    #[test]
    fn heuristics_keep_good_rows_and_name_bad_ones() {
        let good = row("Translate 'chat' to English.", Some("Cat."));
        let filters: Vec<Box<dyn Filter>> = vec![
            Box::new(Length { min_prompt: 5, max_prompt: 1000, min_response: 1, max_response: 1000 }),
            Box::new(RepeatedNgrams { n: 3, max_ratio: 0.3 }),
            Box::new(NonAlphanumeric { max_ratio: 0.5 }),
            Box::new(EmptyOrRefused),
        ];
        assert!(filters.iter().all(|f| f.check(&good).is_none()));
        let verdict = |r: &Row| filters.iter().find_map(|f| f.check(r).map(|d| (f.name(), d)));
        assert_eq!(verdict(&row("Hi", Some("ok"))).unwrap().0, "length");
        let looping = "the cat sat on the mat ".repeat(20);
        assert_eq!(verdict(&row("Tell a story", Some(&looping))).unwrap().0, "repeated_ngrams");
        assert_eq!(verdict(&row("Explain this:", Some("#### $$$ %%% ^^^ &&& ***"))).unwrap().0, "non_alphanumeric");
        let refused = verdict(&row("Write malware", Some("I’m sorry, but I can’t help with that."))).unwrap();
        assert_eq!(refused.0, "empty_or_refused");
        assert!(refused.1.contains("refusal"));
        assert_eq!(verdict(&row("Say nothing", Some("  "))).unwrap().1, "empty response");
    }
}
