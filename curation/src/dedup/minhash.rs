//! Near-duplicate detection with MinHash LSH: word-shingle sets, `bands × rows` min-hash permutations,
//! band buckets for candidates, and the estimated Jaccard similarity to confirm them.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, RecordBatch};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whetstone_datasets::{run_stage, schema, Dropped, Manifest, Progress, ReadOptions, RowProgress, Rows, Stage};

use crate::dedup::exact::normalise;
use crate::error::{Error, Result};
use crate::filters::text_columns;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MinHashOptions {
    /// Words per shingle.
    pub shingle: usize,
    pub bands: usize,
    pub rows: usize,
    /// Estimated Jaccard similarity at or above which a candidate is a duplicate.
    pub threshold: f64,
    pub seed: u64,
}

impl MinHashOptions {
    /// 128 permutations split into the bands × rows whose LSH threshold (1/b)^(1/r) is nearest `threshold`.
    pub fn for_threshold(threshold: f64, seed: u64) -> Result<Self> {
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(Error::Invalid(format!("threshold {threshold}: give a Jaccard similarity in (0, 1]")));
        }
        let (bands, rows) = [(32, 4), (16, 8), (8, 16), (64, 2), (4, 32)]
            .into_iter()
            .min_by(|a, b| {
                let t = |(b, r): (usize, usize)| ((1.0 / b as f64).powf(1.0 / r as f64) - threshold).abs();
                t(*a).total_cmp(&t(*b))
            })
            .expect("candidates");
        Ok(MinHashOptions { shingle: 5, bands, rows, threshold, seed })
    }

    fn check(&self) -> Result<()> {
        if self.shingle == 0 || self.bands == 0 || self.rows == 0 {
            return Err(Error::Invalid("shingle, bands and rows must each be at least 1".into()));
        }
        Ok(())
    }
}

const MERSENNE: u64 = (1 << 61) - 1;

/// The permutations: h(x) = (a·x + b) mod (2⁶¹ − 1), as datasketch draws them.
struct Permutations {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl Permutations {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let a = (0..n).map(|_| rng.gen_range(1..MERSENNE)).collect();
        let b = (0..n).map(|_| rng.gen_range(0..MERSENNE)).collect();
        Permutations { a, b }
    }

    /// The min-hash signature of a text's shingles (all `u32::MAX` for a text too short to shingle).
    fn signature(&self, text: &str, shingle: usize) -> Vec<u32> {
        let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
        let mut sig = vec![u32::MAX; self.a.len()];
        let shingles: Vec<u64> = if words.len() < shingle {
            if words.is_empty() {
                Vec::new()
            } else {
                vec![xxhash_rust::xxh3::xxh3_64(words.join(" ").as_bytes())]
            }
        } else {
            words.windows(shingle).map(|w| xxhash_rust::xxh3::xxh3_64(w.join(" ").as_bytes())).collect()
        };
        for x in shingles {
            let x = x % MERSENNE;
            for (s, (&a, &b)) in sig.iter_mut().zip(self.a.iter().zip(&self.b)) {
                let h = ((a as u128 * x as u128 + b as u128) % MERSENNE as u128) as u64;
                *s = (*s).min(h as u32);
            }
        }
        sig
    }
}

/// Signatures and LSH band keys as the MinHash dedup stage computes them; SQL's `minhash()` is this too.
pub struct MinHasher {
    perms: Permutations,
    shingle: usize,
    rows: usize,
}

impl MinHasher {
    pub fn new(opts: &MinHashOptions) -> Result<Self> {
        opts.check()?;
        Ok(MinHasher {
            perms: Permutations::new(opts.bands * opts.rows, opts.seed),
            shingle: opts.shingle,
            rows: opts.rows,
        })
    }

    /// The signature of a text, normalised as exact dedup normalises it (lower case, whitespace collapsed).
    pub fn signature(&self, text: &str) -> Vec<u32> {
        self.perms.signature(&normalise(text), self.shingle)
    }

    /// One key per band: the hash of the band's slice of the signature. Rows sharing a key are candidates.
    pub fn band_keys(&self, signature: &[u32]) -> Vec<u64> {
        signature.chunks(self.rows).map(|band| xxhash_rust::xxh3::xxh3_64(bytes_of(band))).collect()
    }
}

/// The share of equal positions: an estimate of the Jaccard similarity of the shingle sets.
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// The MinHash dedup stage: a row whose estimated Jaccard similarity to an earlier kept row reaches the
/// threshold is dropped (reason `near_duplicate`) with `dup_of` naming that row.
pub fn dedup_minhash(
    input: &Path,
    output: &Path,
    opts: &MinHashOptions,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress, RowProgress),
) -> Result<Manifest> {
    Ok(run_stage(opts, input, output, read, on_progress)?.manifest)
}

impl Stage for MinHashOptions {
    type Results = ();
    type Error = Error;

    fn name(&self) -> &str {
        "dedup"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"method": "minhash", "options": self})
    }

    fn run(&self, rows: &mut Rows) -> Result<()> {
        let opts = self;
        let hasher = MinHasher::new(opts)?;
        // Kept rows: id and signature; band buckets point into them.
        let mut kept: Vec<(String, Vec<u32>)> = Vec::new();
        let mut buckets: Vec<HashMap<u64, Vec<u32>>> = vec![HashMap::new(); opts.bands];
        rows.filter(|batch: RecordBatch| {
            let (ids, prompts, responses) = text_columns(&batch)?;
            let signatures: Vec<Vec<u32>> = (0..batch.num_rows())
                .into_par_iter()
                .map(|i| {
                    let response = if responses.is_valid(i) { responses.value(i) } else { "" };
                    hasher.signature(&format!("{} {response}", prompts.value(i)))
                })
                .collect();
            let mut keep = Vec::new();
            let mut dropped = Vec::new();
            let mut dup_of = Vec::new();
            for (i, sig) in signatures.into_iter().enumerate() {
                let keys = hasher.band_keys(&sig);
                let mut best: Option<(f64, u32)> = None;
                for (band, key) in keys.iter().enumerate() {
                    for &candidate in buckets[band].get(key).map(Vec::as_slice).unwrap_or_default() {
                        let j = estimated_jaccard(&sig, &kept[candidate as usize].1);
                        if j >= opts.threshold && best.is_none_or(|(bj, _)| j > bj) {
                            best = Some((j, candidate));
                        }
                    }
                }
                match best {
                    Some((j, of)) => {
                        let of = &kept[of as usize].0;
                        dropped.push((i, "near_duplicate".to_string(), format!("estimated Jaccard {j:.2} with {of}")));
                        dup_of.push(of.clone());
                    }
                    None => {
                        let index = kept.len() as u32;
                        for (band, key) in keys.into_iter().enumerate() {
                            buckets[band].entry(key).or_default().push(index);
                        }
                        kept.push((ids.value(i).to_string(), sig));
                        keep.push(i as u32);
                    }
                }
            }
            let kept_rows = arrow::compute::take_record_batch(&batch, &arrow::array::UInt32Array::from(keep))?;
            let mut dropped = Dropped::rows(&batch, dropped)?;
            for (d, of) in dropped.iter_mut().zip(dup_of) {
                d.row[schema::columns::DUP_OF] = of.into();
            }
            Ok((kept_rows, dropped))
        })?;
        Ok(())
    }
}

fn bytes_of(values: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_jaccard_similarity() {
        let perms = Permutations::new(256, 1);
        let base: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let text = base.join(" ");
        let mut changed = base.clone();
        for w in changed.iter_mut().take(20) {
            *w = format!("{w}x");
        }
        let a = perms.signature(&text, 3);
        let b = perms.signature(&changed.join(" "), 3);
        let c = perms.signature("something else entirely with other words here", 3);
        // 20 of 200 words changed touch ~22 of 198 3-shingles: Jaccard ≈ 176/220 = 0.8.
        let j = estimated_jaccard(&a, &b);
        assert!((j - 0.8).abs() < 0.08, "{j}");
        assert!(estimated_jaccard(&a, &c) < 0.05);
        assert_eq!(perms.signature(&text, 3), a, "deterministic");
    }

    #[test]
    fn bands_and_rows_follow_the_threshold() {
        let o = MinHashOptions::for_threshold(0.7, 0).unwrap();
        assert_eq!((o.bands, o.rows), (16, 8));
        let o = MinHashOptions::for_threshold(0.5, 0).unwrap();
        assert_eq!(o.bands * o.rows, 128);
        assert!(MinHashOptions::for_threshold(1.5, 0).is_err());
    }
}
