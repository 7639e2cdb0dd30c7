//! The one definition of a token's log-probability, used by generation (each sampled token), scoring and the
//! trainer's targets: the natural log of the softmax of the model's raw logits, at temperature 1, before any
//! top-k/top-p filtering, with the maximum subtracted before exponentiating and the sum taken in f64. (mistral.rs reports base-10 values taken after temperature and
//! filtering; whetstone does not use them.)

/// `ln softmax(logits)[token]`, with the maximum subtracted first, so large logits do not overflow.
pub fn log_prob(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    log_prob_from(logits[token as usize], max, sum_exp(logits, max))
}

/// `Σ exp(l - max)`: the softmax's normaliser, scaled by `exp(-max)`; summed in f64.
pub fn sum_exp(logits: &[f32], max: f32) -> f64 {
    logits.iter().map(|&l| (l - max).exp() as f64).sum()
}

/// `ln softmax` of a logit, given the logits' maximum and [`sum_exp`].
pub fn log_prob_from(logit: f32, max: f32, sum_exp: f64) -> f64 {
    (logit - max) as f64 - sum_exp.ln()
}

/// Log-probabilities of `targets`, one row of `logits` (row-major, `vocab` wide) per target: row `t` holds the
/// logits that predict `targets[t]`.
pub fn token_log_probs(logits: &[f32], vocab: usize, targets: &[u32]) -> Vec<f64> {
    assert_eq!(logits.len(), vocab * targets.len(), "one row of logits per target");
    logits.chunks_exact(vocab).zip(targets).map(|(row, &t)| log_prob(row, t)).collect()
}

/// A response's score under a model, from its tokens' log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SequenceScore {
    pub tokens: usize,
    /// Sum of the tokens' natural-log probabilities: the log-likelihood of the whole response.
    pub log_likelihood: f64,
    /// `log_likelihood / tokens`.
    pub mean_log_prob: f64,
    /// `exp(-mean_log_prob)`.
    pub perplexity: f64,
}

impl SequenceScore {
    pub fn of(log_probs: &[f64]) -> Self {
        let sum: f64 = log_probs.iter().sum();
        let mean = if log_probs.is_empty() { 0.0 } else { sum / log_probs.len() as f64 };
        SequenceScore { tokens: log_probs.len(), log_likelihood: sum, mean_log_prob: mean, perplexity: (-mean).exp() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_case() {
        // Logits ln 1, ln 2, ln 3 give probabilities 1/6, 2/6, 3/6 (shifting every logit changes nothing).
        let row = [0.0f32, 2f32.ln(), 3f32.ln()];
        let shifted: Vec<f32> = row.iter().map(|l| l + 1000.0).collect();
        for (token, p) in [(0u32, 1.0 / 6.0), (1, 2.0 / 6.0), (2, 3.0 / 6.0)] {
            assert!((log_prob(&row, token) - f64::ln(p)).abs() < 1e-6);
            assert!((log_prob(&shifted, token) - f64::ln(p)).abs() < 1e-4);
        }
        let logits = [row, [0.0, 0.0, 0.0]].concat();
        let lp = token_log_probs(&logits, 3, &[2, 0]);
        let score = SequenceScore::of(&lp);
        let want = f64::ln(0.5) + f64::ln(1.0 / 3.0);
        assert!((score.log_likelihood - want).abs() < 1e-6);
        assert!((score.perplexity - (-want / 2.0).exp()).abs() < 1e-6);
        assert_eq!(score.tokens, 2);
    }
}
