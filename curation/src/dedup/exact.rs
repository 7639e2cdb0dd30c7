//! Exact deduplication: rows equal once lower-cased and with whitespace collapsed.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::Array;
use rayon::prelude::*;
use whetstone_datasets::{run_stage, schema, Manifest, Progress, ReadOptions, RowProgress, Rows, Stage};

use crate::error::{Error, Result};
use crate::filters::{split, text_columns};

/// Text normalised for exact matching: lower case, whitespace runs collapsed, ends trimmed.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// What two rows share when they are exact duplicates: the 128-bit xxh3 of the normalised prompt and response
/// (a missing response counts as empty).
pub fn exact_key(prompt: &str, response: Option<&str>) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(normalise(prompt).as_bytes());
    h.update(&[0xff]);
    h.update(normalise(response.unwrap_or("")).as_bytes());
    h.digest128()
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
                .map(|i| exact_key(prompts.value(i), responses.is_valid(i).then(|| responses.value(i))))
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
