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
    if text.is_ascii() {
        // Byte by byte (most texts): ASCII's whitespace as `split_whitespace` takes it, vertical tab included.
        let mut out = Vec::with_capacity(text.len());
        let mut gap = false;
        for &b in text.as_bytes() {
            if matches!(b, b' ' | b'\t'..=b'\r') {
                gap = true;
                continue;
            }
            if gap && !out.is_empty() {
                out.push(b' ');
            }
            gap = false;
            out.push(b.to_ascii_lowercase());
        }
        return String::from_utf8(out).expect("ASCII in, ASCII out");
    }
    // Word by word otherwise: `to_lowercase` lowers a word-final sigma as the word's end.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_lowers_case_and_collapses_whitespace() {
        assert_eq!(normalise("  Hello\t\tWORLD \n again "), "hello world again");
        // Non-ASCII words as `to_lowercase` lowers them, a word-final sigma included.
        assert_eq!(normalise("ÉCOLE  ΟΔΟΣ Straße"), "école οδος straße");
        assert_eq!(normalise(" \t\n"), "");
        // Both paths as the plain definition has it, every ASCII whitespace byte among them.
        let plain = |t: &str| t.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ");
        for t in ["a\x0bB\x0cc\rD\n\te", " x\x1fY ", "Ab\u{a0}Cd É\x0bF", "\u{2003}Zz\u{85}Q  ", "MiXeD 123 !?"] {
            assert_eq!(normalise(t), plain(t), "{t:?}");
        }
        assert_eq!(exact_key("A  b", Some("C")), exact_key("a b", Some("c")));
        assert_ne!(exact_key("a b", Some("c")), exact_key("a", Some("b c")));
    }
}
