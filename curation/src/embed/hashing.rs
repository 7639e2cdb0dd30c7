//! A model-free embedder: word uni/bigrams and character 3–5-grams, feature-hashed into `dim` signed
//! buckets, weighted by sublinear TF × IDF (fitted on the corpus), L2-normalised. Fast, deterministic,
//! good enough to explore and cluster by surface form.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Embedder;
use crate::error::{Error, Result};

pub struct HashingEmbedder {
    dim: usize,
    seed: u64,
    /// Inverse document frequency per bucket: ln((1 + n) / (1 + df)) + 1, as scikit-learn's smooth IDF.
    idf: Vec<f32>,
    name: String,
}

impl HashingEmbedder {
    /// Fits the IDF weights on `texts` (the corpus to be embedded, or a sample of it).
    pub fn fit<'a>(texts: impl IntoIterator<Item = &'a str>, dim: usize, seed: u64) -> Result<Self> {
        let mut df = DocumentFrequencies::new(dim, seed)?;
        df.add(texts);
        Ok(df.finish())
    }

    fn embed_one(&self, text: &str, out: &mut [f32]) {
        let mut counts = vec![0f32; self.dim];
        features(text, self.seed, |bucket, sign| counts[bucket % self.dim] += sign);
        for (i, c) in counts.iter().enumerate() {
            if *c != 0.0 {
                // Sublinear term frequency, keeping the hashed sign.
                out[i] = c.signum() * (1.0 + c.abs().ln()) * self.idf[i];
            }
        }
        let norm = crate::vector::sq_norm(out).sqrt();
        if norm > 0.0 {
            out.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

/// Counts, per bucket, the documents a feature hashed there occurs in.
pub(crate) struct DocumentFrequencies {
    dim: usize,
    seed: u64,
    df: Vec<u32>,
    docs: u64,
    seen: Vec<bool>,
    touched: Vec<usize>,
}

impl DocumentFrequencies {
    pub(crate) fn new(dim: usize, seed: u64) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Invalid("the hashing embedder needs a dimension above 0".into()));
        }
        Ok(DocumentFrequencies { dim, seed, df: vec![0; dim], docs: 0, seen: vec![false; dim], touched: Vec::new() })
    }

    pub(crate) fn add<'a>(&mut self, texts: impl IntoIterator<Item = &'a str>) {
        for text in texts {
            self.docs += 1;
            features(text, self.seed, |bucket, _| {
                let b = bucket % self.dim;
                if !self.seen[b] {
                    self.seen[b] = true;
                    self.touched.push(b);
                }
            });
            for b in self.touched.drain(..) {
                self.df[b] += 1;
                self.seen[b] = false;
            }
        }
    }

    pub(crate) fn finish(self) -> HashingEmbedder {
        let n = self.docs as f32;
        let idf = self.df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0).collect();
        let (dim, seed, docs) = (self.dim, self.seed, self.docs);
        HashingEmbedder { dim, seed, idf, name: format!("hashing:dim={dim},seed={seed},docs={docs}") }
    }
}

/// Calls `emit(bucket, sign)` for every feature of `text`: lower-cased word unigrams and bigrams, and
/// character 3-, 4- and 5-grams of each word padded with spaces.
fn features(text: &str, seed: u64, mut emit: impl FnMut(usize, f32)) {
    let mut hashed = |kind: u8, bytes: &[u8]| {
        let h = xxh3_64_with_seed(bytes, seed ^ kind as u64);
        emit((h >> 1) as usize, if h & 1 == 0 { 1.0 } else { -1.0 });
    };
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut padded = String::new();
    for (i, w) in words.iter().enumerate() {
        hashed(1, w.as_bytes());
        if let Some(next) = words.get(i + 1) {
            padded.clear();
            padded.push_str(w);
            padded.push(' ');
            padded.push_str(next);
            hashed(2, padded.as_bytes());
        }
        padded.clear();
        padded.push(' ');
        padded.push_str(w);
        padded.push(' ');
        let chars: Vec<(usize, char)> = padded.char_indices().collect();
        for n in 3..=5 {
            for window in 0..chars.len().saturating_sub(n - 1) {
                let from = chars[window].0;
                let to = chars.get(window + n).map(|c| c.0).unwrap_or(padded.len());
                hashed(3, &padded.as_bytes()[from..to]);
            }
        }
    }
}

impl Embedder for HashingEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        let mut out = vec![0f32; texts.len() * self.dim];
        out.par_chunks_mut(self.dim).zip(texts.par_iter()).for_each(|(row, text)| self.embed_one(text, row));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_texts_are_closer_than_different_ones() {
        let corpus = ["the cat sat on the mat", "a cat sat on a mat", "stock prices fell sharply today"];
        let e = HashingEmbedder::fit(corpus, 256, 7).unwrap();
        let v = e.embed(&corpus).unwrap();
        let dot = |a: usize, b: usize| (0..256).map(|i| v[a * 256 + i] * v[b * 256 + i]).sum::<f32>();
        assert!((dot(0, 0) - 1.0).abs() < 1e-5, "normalised");
        assert!(dot(0, 1) > 0.3 && dot(0, 2).abs() < 0.1, "{} {}", dot(0, 1), dot(0, 2));
        let again = HashingEmbedder::fit(corpus, 256, 7).unwrap().embed(&corpus).unwrap();
        assert_eq!(v, again, "same seed, same vectors");
        assert!(e.embed(&[""]).unwrap().iter().all(|&x| x == 0.0), "an empty text has no features");
    }
}
