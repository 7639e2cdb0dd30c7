//! Decontamination: rows that share a word n-gram with an evaluation set are dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::Array;
use rayon::prelude::*;
use whetstone_datasets::{run_stage, DatasetReader, Manifest, Progress, ReadOptions, RowProgress, Rows, Stage};

use crate::error::{Error, Result};
use crate::filters::{split, text_columns};

/// Lower-cased word n-grams of a text, hashed.
fn ngram_hashes(text: &str, n: usize) -> Vec<u64> {
    let words: Vec<String> =
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    words.windows(n).map(|w| xxhash_rust::xxh3::xxh3_64(w.join(" ").as_bytes())).collect()
}

/// The word n-grams of evaluation sets (their prompts and responses), each with the set it came from.
pub struct EvalNgrams {
    grams: HashMap<u64, usize>,
    /// Rows read from each set.
    pub rows: Vec<u64>,
    n: usize,
}

impl EvalNgrams {
    pub fn load(eval_sets: &[PathBuf], n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::Invalid("n-gram length must be at least 1".into()));
        }
        let mut grams: HashMap<u64, usize> = HashMap::new();
        let mut rows = Vec::new();
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
            rows.push(read);
        }
        Ok(EvalNgrams { grams, rows, n })
    }

    /// The first evaluation set that shares a word n-gram with `text`.
    pub fn first_set(&self, text: &str) -> Option<usize> {
        ngram_hashes(text, self.n).into_iter().find_map(|g| self.grams.get(&g).copied())
    }

    /// The share of a text's word n-grams found in the evaluation sets (0 for a text shorter than n words).
    pub fn overlap(&self, text: &str) -> f64 {
        let hashes = ngram_hashes(text, self.n);
        if hashes.is_empty() {
            return 0.0;
        }
        hashes.iter().filter(|g| self.grams.contains_key(g)).count() as f64 / hashes.len() as f64
    }
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
        let eval = EvalNgrams::load(eval_sets, n)?;
        let names: Vec<String> = eval_sets.iter().map(|p| p.display().to_string()).collect();
        let hits = Mutex::new(vec![0u64; eval_sets.len()]);
        rows.parameters["eval_rows"] = eval.rows.clone().into();
        rows.parameters["eval_ngrams"] = eval.grams.len().into();
        rows.filter(|batch| {
            let (_, prompts, responses) = text_columns(&batch)?;
            let verdicts = (0..batch.num_rows())
                .into_par_iter()
                .map(|i| {
                    let response = if responses.is_valid(i) { responses.value(i) } else { "" };
                    let found = [prompts.value(i), response].into_iter().find_map(|t| eval.first_set(t));
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
    #[serde(with = "in_given_order")]
    pub contaminated_by_eval_set: Vec<(String, u64)>,
}

/// Pairs written as a JSON object in the order the evaluation sets were given (a map would sort them).
mod in_given_order {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};

    pub fn serialize<S: Serializer>(pairs: &[(String, u64)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, u64)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, u64)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of evaluation sets to row counts")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(pairs)
            }
        }
        d.deserialize_map(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_evaluation_sets_in_the_order_given() {
        let r = DecontamResults { contaminated_by_eval_set: vec![("b.jsonl".into(), 1), ("a.jsonl".into(), 2)] };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"contaminated_by_eval_set":{"b.jsonl":1,"a.jsonl":2}}"#);
        assert_eq!(serde_json::from_str::<DecontamResults>(&text).unwrap(), r);
    }

    #[test]
    fn ngrams_ignore_case_and_punctuation() {
        assert_eq!(ngram_hashes("The cat, the HAT.", 2), ngram_hashes("the cat the hat", 2));
        assert!(ngram_hashes("too short", 3).is_empty());
    }
}
