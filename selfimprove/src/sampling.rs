//! How a token is drawn from a model's logits: temperature, top-k, top-p, from a seeded stream per
//! (seed, prompt, sample, position).
//!
//! whetstone draws the tokens itself rather than leaving it to mistral.rs 0.8.1, whose engine has one random
//! stream shared by every request and no per-request seed, and whose `temperature` alone samples greedily. Here
//! a sample depends only on the seed, the prompt's id, the sample's index and the logits, not on which other
//! requests shared the batch, so the same seed gives the same samples (up to floating-point differences in
//! the logits themselves, which batching on some devices can cause).

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::logprob::{log_prob_from, sum_exp};

/// Sampling parameters of a generation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Samples per prompt.
    pub n: usize,
    /// Divides the logits before the softmax; 0 takes the most likely token (greedy).
    pub temperature: f32,
    /// Draw among the `k` most likely tokens only.
    pub top_k: Option<usize>,
    /// Draw among the most likely tokens whose probabilities sum to at least `top_p` (1: all).
    pub top_p: f32,
    /// New tokens at most (fewer when the context fills up).
    pub max_tokens: usize,
    /// Strings that end a response (the string itself is cut off); the model's end-of-sequence tokens always do.
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { n: 1, temperature: 1.0, top_k: None, top_p: 1.0, max_tokens: 256, stop: Vec::new(), seed: 0 }
    }
}

/// One drawn token and its log-probability under the model (see [`crate::logprob`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub token: u32,
    pub log_prob: f64,
}

impl Sampling {
    /// Refuses parameters that cannot work, saying which.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Invalid(what));
        if self.n == 0 {
            return bad("n (samples per prompt) must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be 0 (greedy) or more, not {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], not {}", self.top_p));
        }
        if self.top_k == Some(0) {
            return bad("top-k must be at least 1".into());
        }
        if self.max_tokens == 0 {
            return bad("max tokens must be at least 1".into());
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("a stop string must not be empty".into());
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }

    /// The random stream of one sample of one prompt.
    pub fn stream(&self, prompt_id: &str, sample: u32) -> u64 {
        let mut key = Vec::with_capacity(prompt_id.len() + 12);
        key.extend_from_slice(&sample.to_le_bytes());
        key.extend_from_slice(prompt_id.as_bytes());
        xxhash_rust::xxh3::xxh3_64_with_seed(&key, self.seed)
    }

    /// Draws the token at `position` (the sequence's length so far) of `stream` from `logits`.
    pub fn choose(&self, logits: &[f32], stream: u64, position: usize) -> Result<Choice> {
        let not_finite = || Error::Invalid(format!("the model's logits at position {position} are not finite"));
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() || logits.iter().any(|l| l.is_nan()) {
            return Err(not_finite());
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(stream ^ (position as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Sampling from the whole softmax at temperature 1 computes the log-probability's normaliser on the way:
        // one pass of exponentials a token, which is most of the cost with a large vocabulary.
        let (token, normaliser) = if self.is_greedy() {
            (argmax(logits, max), None)
        } else if self.top_k.is_none() && self.top_p >= 1.0 {
            let (token, total) = self.draw_from_all(logits, max, rng.gen::<f64>());
            (token, (self.temperature == 1.0).then_some(total))
        } else {
            (self.draw_filtered(logits, max, rng.gen::<f64>()).ok_or_else(not_finite)?, None)
        };
        let sum = normaliser.unwrap_or_else(|| sum_exp(logits, max));
        Ok(Choice { token, log_prob: log_prob_from(logits[token as usize], max, sum) })
    }

    /// Inverse-CDF draw over every token in id order; returns the token and the weights' total.
    fn draw_from_all(&self, logits: &[f32], max: f32, uniform: f64) -> (u32, f64) {
        let inv_t = 1.0 / self.temperature;
        let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) * inv_t).exp()).collect();
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let mut u = uniform * total;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                if u < w as f64 {
                    return (i as u32, total);
                }
                u -= w as f64;
                last = i;
            }
        }
        (last as u32, total) // rounding left a sliver past the last weight
    }

    /// Draw among the top-k and/or top-p tokens.
    fn draw_filtered(&self, logits: &[f32], max: f32, uniform: f64) -> Option<u32> {
        let inv_t = 1.0 / self.temperature as f64;
        // Candidates in a fixed order (likelier first, ties by id) so the draw never depends on sort stability.
        let mut candidates: Vec<u32> = (0..logits.len() as u32).collect();
        let likelier = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        if let Some(k) = self.top_k.filter(|&k| k < candidates.len()) {
            candidates.select_nth_unstable_by(k - 1, likelier);
            candidates.truncate(k);
        }
        if self.top_p < 1.0 {
            candidates.sort_unstable_by(likelier);
        }
        let weights: Vec<f64> = candidates.iter().map(|&t| ((logits[t as usize] - max) as f64 * inv_t).exp()).collect();
        let mut total: f64 = weights.iter().sum();
        if !total.is_finite() || total <= 0.0 {
            return None;
        }
        let mut kept = weights.len();
        if self.top_p < 1.0 {
            let (mut sum, want) = (0.0, self.top_p as f64 * total);
            kept = weights.iter().position(|w| {
                sum += w;
                sum >= want
            })? + 1;
            total = sum;
        }
        let mut u = uniform * total;
        for (&t, &w) in candidates[..kept].iter().zip(&weights) {
            if u < w {
                return Some(t);
            }
            u -= w;
        }
        Some(candidates[kept - 1]) // rounding left a sliver past the last weight
    }
}

/// The most likely token (the lowest id among ties).
fn argmax(logits: &[f32], max: f32) -> u32 {
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &Sampling, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut counts = vec![0; logits.len()];
        let stream = s.stream("p", 0);
        for pos in 0..draws {
            counts[s.choose(logits, stream, pos).unwrap().token as usize] += 1;
        }
        counts
    }

    #[test]
    fn draws_follow_the_softmax_and_the_filters() {
        let logits = [0.0f32, 2f32.ln(), 3f32.ln(), 4f32.ln()]; // probabilities 1/10, 2/10, 3/10, 4/10
        let s = Sampling::default();
        let c = counts(&s, &logits, 20_000);
        for (i, want) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            let got = c[i] as f64 / 20_000.0;
            assert!((got - want).abs() < 0.015, "token {i}: {got} vs {want}");
        }
        // Temperature 0.5 squares the probabilities: 1, 4, 9, 16 over 30.
        let c = counts(&Sampling { temperature: 0.5, ..s.clone() }, &logits, 20_000);
        assert!((c[3] as f64 / 20_000.0 - 16.0 / 30.0).abs() < 0.015);
        // top-k 2 keeps tokens 3 and 2 (4:3); top-p 0.6 keeps 3 and 2 as well (0.4 + 0.3 ≥ 0.6).
        for f in [Sampling { top_k: Some(2), ..s.clone() }, Sampling { top_p: 0.6, ..s.clone() }] {
            let c = counts(&f, &logits, 20_000);
            assert_eq!(c[0] + c[1], 0, "{f:?}");
            assert!((c[3] as f64 / 20_000.0 - 4.0 / 7.0).abs() < 0.015, "{f:?}: {c:?}");
        }
        let greedy = counts(&Sampling { temperature: 0.0, ..s.clone() }, &logits, 100);
        assert_eq!(greedy[3], 100);
    }

    #[test]
    fn the_stream_fixes_the_draw_and_different_samples_differ() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 101) as f32 / 50.0).collect();
        let s = Sampling::default();
        let draw = |s: &Sampling, sample| -> Vec<u32> {
            let stream = s.stream("gsm8k-17", sample);
            (0..32).map(|p| s.choose(&logits, stream, p).unwrap().token).collect()
        };
        assert_eq!(draw(&s, 0), draw(&s, 0));
        assert_ne!(draw(&s, 0), draw(&s, 1));
        assert_ne!(draw(&s, 0), draw(&Sampling { seed: 1, ..s.clone() }, 0));
        let choice = s.choose(&logits, 5, 0).unwrap();
        assert!((choice.log_prob - crate::logprob::log_prob(&logits, choice.token)).abs() < 1e-9);
        assert!(s.choose(&[f32::NAN, 1.0], 5, 0).is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (bad, says) in [
            (Sampling { n: 0, ..Default::default() }, "n (samples"),
            (Sampling { temperature: -1.0, ..Default::default() }, "temperature"),
            (Sampling { top_p: 0.0, ..Default::default() }, "top-p"),
            (Sampling { top_k: Some(0), ..Default::default() }, "top-k"),
            (Sampling { max_tokens: 0, ..Default::default() }, "max tokens"),
        ] {
            assert!(bad.check().unwrap_err().to_string().contains(says), "{bad:?}");
        }
    }
}
