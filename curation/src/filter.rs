//! Row filters, datatrove-style: each is one method that keeps a row or says why not; counting, writing
//! the rejected rows and the manifest live once, in the stage runner. Exact deduplication and n-gram
//! decontamination are filters too (with state: what was seen, what the evaluation sets hold).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt32Array};
use rayon::prelude::*;
use whetstone_datasets::{
    run_stage, schema, DatasetReader, Dropped, Manifest, Progress, ReadOptions, RowProgress, Rows, Stage,
};

use crate::error::{Error, Result};

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
            let distinct = words.windows(self.n).collect::<HashSet<_>>().len();
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
fn split(batch: RecordBatch, verdicts: Vec<Option<(&'static str, String)>>) -> Result<(RecordBatch, Vec<Dropped>)> {
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

/// The filter stage: heuristic quality filters, each named in the rejection reasons.
pub fn filter_dataset(
    input: &Path,
    output: &Path,
    filters: &[Box<dyn Filter>],
    parameters: serde_json::Value,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress, RowProgress),
) -> Result<Manifest> {
    Ok(run_stage(&Heuristics { filters, parameters }, input, output, read, on_progress)?.manifest)
}

struct Heuristics<'a> {
    filters: &'a [Box<dyn Filter>],
    parameters: serde_json::Value,
}

impl Stage for Heuristics<'_> {
    type Results = ();
    type Error = Error;

    fn name(&self) -> &str {
        "filter"
    }

    fn parameters(&self) -> serde_json::Value {
        self.parameters.clone()
    }

    fn run(&self, rows: &mut Rows) -> Result<()> {
        Ok(rows.filter(|batch| Ok(filter_batch(batch, self.filters)?))?)
    }
}

/// Text normalised for exact matching: lower case, whitespace runs collapsed, ends trimmed.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// The exact-dedup stage: a row whose normalised prompt and response equal an earlier row's is dropped
/// (reason `exact_duplicate`); its rejected-rows entry names the kept row in `dup_of`.
pub fn dedup_exact(
    input: &Path,
    output: &Path,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress, RowProgress),
) -> Result<Manifest> {
    Ok(run_stage(&ExactDedup, input, output, read, on_progress)?.manifest)
}

struct ExactDedup;

impl Stage for ExactDedup {
    type Results = ();
    type Error = Error;

    fn name(&self) -> &str {
        "dedup"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"method": "exact", "normalisation": "lower case, whitespace collapsed"})
    }

    fn run(&self, rows: &mut Rows) -> Result<()> {
        let mut first: HashMap<u128, String> = HashMap::new();
        Ok(rows.filter(|batch| {
            let (ids, prompts, responses) = text_columns(&batch)?;
            let keys: Vec<u128> = (0..batch.num_rows())
                .into_par_iter()
                .map(|i| {
                    let r = if responses.is_valid(i) { normalise(responses.value(i)) } else { String::new() };
                    let mut h = xxhash_rust::xxh3::Xxh3::new();
                    h.update(normalise(prompts.value(i)).as_bytes());
                    h.update(&[0xff]);
                    h.update(r.as_bytes());
                    h.digest128()
                })
                .collect();
            let mut verdicts = Vec::with_capacity(keys.len());
            let mut dup_of = Vec::new();
            for (i, key) in keys.into_iter().enumerate() {
                match first.get(&key) {
                    Some(kept) => {
                        verdicts.push(Some(("exact_duplicate", format!("same text as {kept}"))));
                        dup_of.push(kept.clone());
                    }
                    None => {
                        first.insert(key, ids.value(i).to_string());
                        verdicts.push(None);
                    }
                }
            }
            let (kept, mut dropped) = split(batch, verdicts)?;
            for (d, of) in dropped.iter_mut().zip(dup_of) {
                d.row[schema::columns::DUP_OF] = of.into();
            }
            Ok((kept, dropped))
        })?)
    }
}

/// Lower-cased word n-grams of a text, hashed.
fn ngram_hashes(text: &str, n: usize) -> Vec<u64> {
    let words: Vec<String> =
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    words.windows(n).map(|w| xxhash_rust::xxh3::xxh3_64(w.join(" ").as_bytes())).collect()
}

/// The decontamination stage: drops rows sharing any word `n`-gram (default 13, as GPT-3 and Llama
/// reports do) with a row of an evaluation set (its prompt or response); reason `contaminated`.
pub fn decontaminate(
    input: &Path,
    output: &Path,
    eval_sets: &[PathBuf],
    n: usize,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress, RowProgress),
) -> Result<Manifest> {
    if n == 0 {
        return Err(Error::Invalid("n-gram length must be at least 1".into()));
    }
    if eval_sets.is_empty() {
        return Err(Error::Invalid("name at least one evaluation set to decontaminate against".into()));
    }
    Ok(run_stage(&Decontaminate { eval_sets, n }, input, output, read, on_progress)?.manifest)
}

struct Decontaminate<'a> {
    eval_sets: &'a [PathBuf],
    n: usize,
}

impl Stage for Decontaminate<'_> {
    type Results = DecontamResults;
    type Error = Error;

    fn name(&self) -> &str {
        "decontaminate"
    }

    fn parameters(&self) -> serde_json::Value {
        let names: Vec<String> = self.eval_sets.iter().map(|p| p.display().to_string()).collect();
        serde_json::json!({"n": self.n, "eval_sets": names})
    }

    fn run(&self, rows: &mut Rows) -> Result<DecontamResults> {
        let (eval_sets, n) = (self.eval_sets, self.n);
        // n-gram → the evaluation set it came from.
        let mut grams: HashMap<u64, usize> = HashMap::new();
        let mut eval_rows = Vec::new();
        for (set, path) in eval_sets.iter().enumerate() {
            let mut read = 0u64;
            for batch in DatasetReader::open(path, ReadOptions::default())? {
                let batch = batch?;
                let (_, prompts, responses) = text_columns(&batch)?;
                for i in 0..batch.num_rows() {
                    read += 1;
                    let mut texts = vec![prompts.value(i)];
                    if responses.is_valid(i) {
                        texts.push(responses.value(i));
                    }
                    for t in texts {
                        for g in ngram_hashes(t, n) {
                            grams.entry(g).or_insert(set);
                        }
                    }
                }
            }
            eval_rows.push(read);
        }
        let names: Vec<String> = eval_sets.iter().map(|p| p.display().to_string()).collect();
        let hits = Mutex::new(vec![0u64; eval_sets.len()]);
        rows.parameters["eval_rows"] = eval_rows.into();
        rows.parameters["eval_ngrams"] = grams.len().into();
        rows.filter(|batch| {
            let (_, prompts, responses) = text_columns(&batch)?;
            let verdicts = (0..batch.num_rows())
                .into_par_iter()
                .map(|i| {
                    let response = if responses.is_valid(i) { responses.value(i) } else { "" };
                    let found = [prompts.value(i), response]
                        .into_iter()
                        .find_map(|t| ngram_hashes(t, n).into_iter().find_map(|g| grams.get(&g).copied()));
                    found.map(|set| {
                        hits.lock().expect("not poisoned")[set] += 1;
                        ("contaminated", format!("shares a {n}-gram with {}", names[set]))
                    })
                })
                .collect();
            Ok(split(batch, verdicts)?)
        })?;
        let hits = hits.into_inner().expect("not poisoned");
        Ok(DecontamResults { contaminated_by_eval_set: names.into_iter().zip(hits).collect() })
    }
}

/// What decontamination found: its manifest's `results`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecontamResults {
    /// Rows dropped, by the evaluation set whose n-gram they shared first.
    pub contaminated_by_eval_set: std::collections::BTreeMap<String, u64>,
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

    #[test]
    fn ngrams_ignore_case_and_punctuation() {
        assert_eq!(ngram_hashes("The cat, the HAT.", 2), ngram_hashes("the cat the hat", 2));
        assert!(ngram_hashes("too short", 3).is_empty());
    }
}
