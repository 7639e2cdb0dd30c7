//! Near-duplicate detection with MinHash LSH: word-shingle sets, `bands × rows` min-hash permutations, band
//! buckets for candidates and the estimated Jaccard similarity to confirm them. Confirmed pairs link rows into
//! clusters (connected components, as datatrove and text-dedup take them); each cluster keeps its first row.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;

use arrow::array::Array;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whetstone_datasets::{run_stage, schema, Manifest, Progress, ReadOptions, RowProgress, Rows, Selection, Stage};

use crate::dedup::exact::normalise;
use crate::dedup::Groups;
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

/// The permutations: h(x) = the upper 32 bits of (a·x + b) mod 2⁶⁴ with `a` odd (multiply-add-shift, a universal
/// family), over each shingle's 64-bit xxh3. Products of 64-bit lanes vectorise; datasketch's (a·x + b) mod
/// (2⁶¹ − 1) needs 128-bit products and took half the stage's processor time.
struct Permutations {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl Permutations {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let a = (0..n).map(|_| rng.gen::<u64>() | 1).collect();
        let b = (0..n).map(|_| rng.gen::<u64>()).collect();
        Permutations { a, b }
    }

    /// The min-hash signature of a normalised text's shingles (all `u32::MAX` for a text with no words).
    /// Normalised, its words are separated by single spaces, so each shingle is a slice of it.
    fn signature(&self, text: &str, shingle: usize) -> Vec<u32> {
        let mut words = Vec::new();
        let mut at = 0;
        for word in text.split(' ') {
            if !word.is_empty() {
                words.push((at, at + word.len()));
            }
            at += word.len() + 1;
        }
        let hash = |(start, _): (usize, usize), (_, end): (usize, usize)| {
            xxhash_rust::xxh3::xxh3_64(&text.as_bytes()[start..end])
        };
        let shingles: Vec<u64> = if words.len() < shingle {
            words.first().zip(words.last()).map(|(&first, &last)| hash(first, last)).into_iter().collect()
        } else {
            words.windows(shingle).map(|w| hash(w[0], w[shingle - 1])).collect()
        };
        let mut sig = vec![u32::MAX; self.a.len()];
        fold_min(&mut sig, &self.a, &self.b, &shingles);
        sig
    }
}

/// `sig[p] = min(sig[p], h_p(x))` over the shingles `x`: with AVX-512 or AVX2 where the processor has them
/// (the same values; the build targets plain x86-64).
fn fold_min(sig: &mut [u32], a: &[u64], b: &[u64], shingles: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
            // SAFETY: the processor has the features the function is compiled for.
            return unsafe { fold_min_avx512(sig, a, b, shingles) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { fold_min_avx2(sig, a, b, shingles) };
        }
    }
    fold_min_plain(sig, a, b, shingles)
}

#[inline(always)]
fn fold_min_plain(sig: &mut [u32], a: &[u64], b: &[u64], shingles: &[u64]) {
    for &x in shingles {
        for (s, (&a, &b)) in sig.iter_mut().zip(a.iter().zip(b)) {
            *s = (*s).min((a.wrapping_mul(x).wrapping_add(b) >> 32) as u32);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn fold_min_avx512(sig: &mut [u32], a: &[u64], b: &[u64], shingles: &[u64]) {
    fold_min_plain(sig, a, b, shingles)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fold_min_avx2(sig: &mut [u32], a: &[u64], b: &[u64], shingles: &[u64]) {
    fold_min_plain(sig, a, b, shingles)
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
        (0..signature.len() / self.rows).map(|band| self.band_key(signature, band)).collect()
    }
}

/// The share of equal positions: an estimate of the Jaccard similarity of the shingle sets.
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// What MinHash dedup found while clustering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MinHashResults {
    /// Pairs sharing a band key, not yet in one cluster, whose similarity was estimated.
    pub compared_pairs: u64,
    /// Pairs linked: rows with equal signatures, and compared pairs at or above the threshold.
    pub linked_pairs: u64,
    /// Clusters of more than one row.
    pub clusters_with_duplicates: u64,
}

impl MinHasher {
    /// Clusters of near duplicates among rows with these signatures (one after another): rows sharing a band
    /// key whose estimated Jaccard similarity reaches `threshold` are linked, and a cluster is what links
    /// join, rooted at its first row. Links are found band by band, sorted by key (memory: 16 bytes a row);
    /// the order in which they are found does not change the clusters.
    fn cluster(&self, signatures: &[u32], threshold: f64, found: &mut MinHashResults) -> Groups {
        let perms = self.perms.a.len();
        let n = signatures.len() / perms;
        let sig = |i: u32| &signatures[i as usize * perms..][..perms];
        let mut groups = Groups::new(n);
        // A row whose signature equals an earlier row's links to whatever that row links to: only the first is
        // compared. (Many copies of one text would otherwise be compared pair by pair.)
        let mut first_with: HashMap<u64, u32> = HashMap::with_capacity(n);
        let mut compared = Vec::with_capacity(n);
        for i in 0..n as u32 {
            match first_with.entry(xxhash_rust::xxh3::xxh3_64(bytes_of(sig(i)))) {
                Entry::Occupied(e) if sig(*e.get()) == sig(i) => {
                    groups.join(*e.get(), i);
                    found.linked_pairs += 1;
                }
                Entry::Occupied(_) => compared.push(i),
                Entry::Vacant(e) => {
                    e.insert(i);
                    compared.push(i);
                }
            }
        }
        drop(first_with);
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(compared.len());
        for band in 0..perms / self.rows {
            keyed.clear();
            keyed.par_extend(compared.par_iter().map(|&i| (self.band_key(sig(i), band), i)));
            keyed.par_sort_unstable();
            for bucket in keyed.chunk_by(|x, y| x.0 == y.0).filter(|b| b.len() > 1) {
                for (k, &(_, a)) in bucket.iter().enumerate().skip(1) {
                    for &(_, b) in &bucket[..k] {
                        if groups.root(a) != groups.root(b) {
                            found.compared_pairs += 1;
                            if estimated_jaccard(sig(a), sig(b)) >= threshold {
                                groups.join(a, b);
                                found.linked_pairs += 1;
                            }
                        }
                    }
                }
            }
        }
        groups
    }

    fn band_key(&self, signature: &[u32], band: usize) -> u64 {
        xxhash_rust::xxh3::xxh3_64(bytes_of(&signature[band * self.rows..][..self.rows]))
    }
}

/// The MinHash dedup stage: rows linked by band collisions whose estimated Jaccard similarity reaches the
/// threshold form clusters; each keeps its first row, and drops the others (reason `near_duplicate`) with
/// `dup_of` naming that row.
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
    type Results = MinHashResults;
    type Error = Error;

    fn name(&self) -> &str {
        "dedup"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"method": "minhash", "clusters": "connected components", "options": self})
    }

    fn run(&self, rows: &mut Rows) -> Result<MinHashResults> {
        let hasher = MinHasher::new(self)?;
        // On a cluster only the rows sharing a band key with another row are examined: the others are alone.
        let examine = rows.read_options().examine.clone();
        let mut found = MinHashResults::default();
        rows.whole_columns(&[schema::ID, schema::PROMPT, schema::RESPONSE], |batches| {
            // Pass one: the signature of every row examined; its position and id.
            let (mut positions, mut ids, mut signatures) = (Vec::new(), Vec::new(), Vec::new());
            let mut offset = 0u64;
            for batch in batches {
                let batch = batch?;
                let (id, prompts, responses) = text_columns(&batch)?;
                let end = offset + batch.num_rows() as u64;
                let picked: Vec<usize> = match &examine {
                    None => (0..batch.num_rows()).collect(),
                    Some(examined) => {
                        let from = examined.partition_point(|&r| r < offset);
                        let to = examined.partition_point(|&r| r < end);
                        examined[from..to].iter().map(|&r| (r - offset) as usize).collect()
                    }
                };
                let signed: Vec<Vec<u32>> = picked
                    .par_iter()
                    .map(|&i| {
                        let response = if responses.is_valid(i) { responses.value(i) } else { "" };
                        hasher.signature(&format!("{} {response}", prompts.value(i)))
                    })
                    .collect();
                for (&i, sig) in picked.iter().zip(signed) {
                    positions.push((offset + i as u64) as u32);
                    ids.push(id.value(i).to_string());
                    signatures.extend(sig);
                }
                offset = end;
            }
            let mut groups = hasher.cluster(&signatures, self.threshold, &mut found);
            let perms = self.bands * self.rows;
            let roots: Vec<u32> = (0..positions.len() as u32).map(|k| groups.root(k)).collect();
            let mut sizes = vec![0u32; roots.len()];
            roots.iter().for_each(|&r| sizes[r as usize] += 1);
            found.clusters_with_duplicates =
                (0..roots.len()).filter(|&k| roots[k] == k as u32 && sizes[k] > 1).count() as u64;

            // Each cluster's first row is kept; the rows not examined are kept as they are.
            let mut decided = Selection::default();
            let mut signed = positions.iter().zip(&roots).enumerate().peekable();
            for position in 0..offset as u32 {
                let Some((k, (_, &root))) = signed.next_if(|&(_, (&p, _))| p == position) else {
                    decided.keep.push(position);
                    continue;
                };
                if root == k as u32 {
                    decided.keep.push(position);
                    continue;
                }
                let of = &ids[root as usize];
                let j =
                    estimated_jaccard(&signatures[k * perms..][..perms], &signatures[root as usize * perms..][..perms]);
                let size = sizes[root as usize];
                let detail = format!("estimated Jaccard {j:.2} with {of}, the first of a cluster of {size}");
                decided.rejected.push((position, "near_duplicate".to_string(), detail, Some(of.clone())));
            }
            Ok(decided)
        })?;
        Ok(found)
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

    #[test]
    fn clusters_are_what_links_join() {
        let hasher =
            MinHasher::new(&MinHashOptions { shingle: 1, bands: 4, rows: 2, threshold: 0.3, seed: 0 }).unwrap();
        let a = [1, 2, 3, 4, 5, 6, 7, 8];
        let b = [1, 2, 3, 40, 50, 60, 70, 80]; // band 0 with a, Jaccard 3/8: linked
        let c = [100, 200, 300, 400, 50, 600, 70, 80]; // band 3 with b, 3/8: linked; nothing shared with a
        let d = [1, 2, 0, 0, 0, 0, 0, 0]; // band 0 with a and b, but 2/8: below the threshold
        let roots = |rows: &[&[u32; 8]]| {
            let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
            let mut found = MinHashResults::default();
            let mut groups = hasher.cluster(&flat, 0.3, &mut found);
            ((0..rows.len() as u32).map(|i| groups.root(i)).collect::<Vec<_>>(), found)
        };
        let (r, found) = roots(&[&a, &b, &c, &d, &a]);
        assert_eq!(r, [0, 0, 0, 3, 0], "a chain is one cluster; a copy joins it; d stays alone");
        // The copy is linked without comparing; b–c and the a–b pair link, d is compared with a and b.
        assert_eq!(found.linked_pairs, 3);
        assert_eq!(found.compared_pairs, 4);
        let (r, _) = roots(&[&c, &d, &b, &a]);
        assert_eq!(r, [0, 1, 0, 0], "the same clusters in another order, rooted at their first row");
    }

    #[test]
    fn signatures_are_the_plain_definitions() {
        // The definition, slowly: each shingle's words joined, 128-bit products.
        fn shingle_hashes(text: &str, shingle: usize) -> Vec<u64> {
            let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
            let shingles: Vec<String> = match words.len() {
                0 => vec![],
                n if n < shingle => vec![words.join(" ")],
                _ => words.windows(shingle).map(|w| w.join(" ")).collect(),
            };
            shingles.iter().map(|s| xxhash_rust::xxh3::xxh3_64(s.as_bytes())).collect()
        }
        fn plain(perms: &Permutations, text: &str, shingle: usize) -> Vec<u32> {
            let mut sig = vec![u32::MAX; perms.a.len()];
            for x in shingle_hashes(text, shingle) {
                for (m, (&a, &b)) in sig.iter_mut().zip(perms.a.iter().zip(&perms.b)) {
                    *m = (*m).min(((a as u128 * x as u128 + b as u128) % (1 << 64) >> 32) as u32);
                }
            }
            sig
        }
        let perms = Permutations::new(112, 9);
        for text in ["", "one", "two words", "ünïcode wörds and more of them here", "a b c d e f g h i j k l m n o p"]
        {
            let text = normalise(text);
            for shingle in [1, 3, 5] {
                let sig = perms.signature(&text, shingle);
                assert_eq!(sig, plain(&perms, &text, shingle), "{text:?} {shingle}");
                // The processor's vector path (the one taken above, where it has one) against plain code.
                let mut scalar = vec![u32::MAX; perms.a.len()];
                fold_min_plain(&mut scalar, &perms.a, &perms.b, &shingle_hashes(&text, shingle));
                assert_eq!(sig, scalar);
            }
        }
    }
}
