//! Rewards: a score for a response, always with the reason for it.
//!
//! A [`Reward`] looks at one candidate (the prompt, the response, the row's reference answer) and returns a
//! [`Score`]: a value and a reason a person can read ("answer 540 matches the reference", "no final answer
//! found"). Verifiers ([`verify`]) check final answers exactly, [`code`] runs code against tests in a sandbox,
//! [`Likelihood`] reads a model's confidence, [`model`] scores with a trained reward model, `judge` (feature `llm`) asks a model; [`Weighted`] combines
//! rewards. [`crate::keep`] keeps samples by reward and pairs them; the rounds of self-training build on these.

pub mod code;
#[cfg(feature = "llm")]
pub mod judge;
pub mod model;
pub mod stage;
pub mod verify;

use serde::Serialize;

/// What a reward looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidate<'a> {
    pub prompt: &'a str,
    pub response: &'a str,
    /// The row's reference answer, where it has one (a gold solution, a test's expected output).
    pub reference: Option<&'a str>,
    /// The response's mean natural-log token probability under a model, where `whet score` measured it.
    pub mean_log_prob: Option<f64>,
}

/// A reward's verdict: a value (verifiers give 0 or 1) and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub value: f64,
    pub reason: String,
}

impl Score {
    pub fn pass(reason: impl Into<String>) -> Self {
        Score { value: 1.0, reason: reason.into() }
    }

    pub fn fail(reason: impl Into<String>) -> Self {
        Score { value: 0.0, reason: reason.into() }
    }
}

/// Scores one candidate.
pub trait Reward: Send + Sync {
    /// A short name for reports and columns (`gsm8k`, `exact`, `regex`, `json`, …).
    fn name(&self) -> String;
    fn score(&self, candidate: &Candidate) -> Score;
}

/// A model's confidence in the response: exp(mean token log-probability), the inverse of its perplexity,
/// as `whet score` measured it, or as the generator saw it (`log_likelihood` over `response_tokens`, written
/// by `whet generate`); 1: the model is certain of every token.
pub struct Likelihood;

impl Reward for Likelihood {
    fn name(&self) -> String {
        "likelihood".into()
    }

    fn score(&self, candidate: &Candidate) -> Score {
        match candidate.mean_log_prob {
            Some(m) if m.is_finite() => {
                Score { value: m.exp(), reason: format!("mean log-prob {m:.3}, perplexity {:.2}", (-m).exp()) }
            }
            _ => Score::fail(
                "no mean_log_prob (whet score) nor log_likelihood (whet generate): score the rows under a model first \
                 (whet score)",
            ),
        }
    }
}

/// A weighted sum of rewards; the reason lists each part.
pub struct Weighted {
    pub parts: Vec<(f64, Box<dyn Reward>)>,
}

impl Reward for Weighted {
    fn name(&self) -> String {
        self.parts.iter().map(|(w, r)| format!("{w}·{}", r.name())).collect::<Vec<_>>().join(" + ")
    }

    fn score(&self, candidate: &Candidate) -> Score {
        let mut value = 0.0;
        let mut reasons = Vec::with_capacity(self.parts.len());
        for (weight, reward) in &self.parts {
            let s = reward.score(candidate);
            value += weight * s.value;
            reasons.push(format!("{} {:.3} ({})", reward.name(), s.value, s.reason));
        }
        Score { value, reason: reasons.join("; ") }
    }
}
