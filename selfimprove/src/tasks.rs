//! Synthetic tasks with answers that can be checked exactly: data for pre-training tiny models from scratch
//! and for measuring what training did, on machines where no model can be downloaded.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::error::{Error, Result};

/// One question with its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub id: String,
    pub prompt: String,
    pub response: String,
}

/// A task split into training and held-out rows (no question in both).
#[derive(Debug, Clone)]
pub struct TaskSplit {
    pub train: Vec<TaskRow>,
    pub test: Vec<TaskRow>,
}

/// Addition of two numbers below 10^`digits`: "What is 23 + 58?" → "81". Every pair is a distinct question;
/// `test` of them, chosen by `seed`, are held out and the rest (up to `train`) are for training.
pub fn addition(digits: u32, train: usize, test: usize, seed: u64) -> Result<TaskSplit> {
    if !(1..=4).contains(&digits) {
        return Err(Error::Invalid(format!("addition digits {digits}: use 1 to 4")));
    }
    let limit = 10u64.pow(digits);
    let pairs = (limit * limit) as usize;
    if train + test > pairs {
        return Err(Error::Invalid(format!(
            "{digits}-digit addition has {pairs} distinct questions, fewer than {train} + {test} asked for"
        )));
    }
    let mut order: Vec<usize> = (0..pairs).collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    let row = |i: usize| {
        let (a, b) = (i as u64 / limit, i as u64 % limit);
        TaskRow { id: format!("add-{a}-{b}"), prompt: format!("What is {a} + {b}?"), response: (a + b).to_string() }
    };
    Ok(TaskSplit {
        test: order[..test].iter().map(|&i| row(i)).collect(),
        train: order[test..test + train].iter().map(|&i| row(i)).collect(),
    })
}

/// One-step arithmetic word problems over 2-digit numbers: "Ann has 23 pens and gets 45 more. How many pens
/// does Ann have?" → "68". Three templates (adding, taking away, two groups), with names and objects varying
/// the surface; every question is distinct and `test` of them, chosen by `seed`, are held out.
pub fn word_problems(train: usize, test: usize, seed: u64) -> Result<TaskSplit> {
    const NAMES: [&str; 8] = ["Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gia", "Hal"];
    const THINGS: [&str; 8] = ["pens", "apples", "cards", "books", "coins", "shells", "stamps", "eggs"];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::with_capacity(train + test);
    let mut attempts = 0usize;
    while rows.len() < train + test {
        attempts += 1;
        if attempts > 50 * (train + test) + 1000 {
            return Err(Error::Invalid(format!("could not make {} distinct word problems", train + test)));
        }
        use rand::Rng;
        let (name, thing) = (NAMES[rng.gen_range(0..8)], THINGS[rng.gen_range(0..8)]);
        let (a, b) = (rng.gen_range(10..100u32), rng.gen_range(10..100u32));
        let (prompt, answer) = match rng.gen_range(0..3) {
            0 => (format!("{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?"), a + b),
            1 => {
                let (big, small) = (a.max(b), a.min(b));
                (format!("{name} has {big} {thing} and gives away {small}. How many {thing} are left?"), big - small)
            }
            _ => (format!("One box holds {a} {thing} and another holds {b}. How many {thing} in all?"), a + b),
        };
        if seen.insert(prompt.clone()) {
            rows.push(TaskRow { id: format!("wp-{}", rows.len()), prompt, response: answer.to_string() });
        }
    }
    let train_rows = rows.split_off(test);
    Ok(TaskSplit { train: train_rows, test: rows })
}

/// Writes rows as JSONL (id, prompt, response), atomically.
pub fn write_jsonl(path: &Path, rows: &[TaskRow]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    Ok(whetstone_datasets::write::write_atomic(path, text.as_bytes())?)
}

/// The share of `answers` that equal their rows' responses (the exact-match verifier, case kept).
pub fn exact_match(rows: &[TaskRow], answers: &[String]) -> f64 {
    use crate::reward::{verify::ExactMatch, Candidate, Reward};
    let verifier = ExactMatch { case_sensitive: true };
    let right: f64 = rows
        .iter()
        .zip(answers)
        .map(|(r, a)| verifier.score(&Candidate { prompt: &r.prompt, response: a, reference: Some(&r.response) }).value)
        .sum();
    right / rows.len().max(1) as f64
}

/// The model's greedy answer to each row's prompt (chat mode), at most `max_tokens` tokens.
#[cfg(feature = "llm")]
pub fn greedy_answers(engine: &crate::engine::Engine, rows: &[TaskRow], max_tokens: usize) -> Result<Vec<String>> {
    use crate::engine::{Job, Prompt, PromptMode};
    let sampling = crate::Sampling { temperature: 0.0, max_tokens, ..Default::default() };
    let jobs = rows
        .iter()
        .map(|r| {
            let tokens = engine.prompt_tokens(&Prompt::Text(r.prompt.clone()), PromptMode::Chat)?;
            Ok(Job { prompt_tokens: std::sync::Arc::new(tokens), stream: 0, max_tokens })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(engine.generate(jobs, &sampling, &|_| {})?.into_iter().map(|s| s.text).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addition_splits_distinct_questions_with_right_answers() {
        let s = addition(2, 500, 100, 3).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (500, 100));
        let held: std::collections::HashSet<_> = s.test.iter().map(|r| &r.prompt).collect();
        assert!(s.train.iter().all(|r| !held.contains(&r.prompt)));
        let r = &s.train[0];
        let numbers: Vec<u64> = r
            .prompt
            .trim_start_matches("What is ")
            .trim_end_matches('?')
            .split(" + ")
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(r.response, (numbers[0] + numbers[1]).to_string());
        assert_eq!(addition(2, 500, 100, 3).unwrap().test, s.test, "the seed fixes the split");
        assert!(addition(1, 90, 20, 0).unwrap_err().to_string().contains("100 distinct"));
        assert_eq!(exact_match(&s.test[..2], &[s.test[0].response.clone(), " 1x ".into()]), 0.5);
    }

    #[test]
    fn word_problems_are_distinct_with_right_answers() {
        let s = word_problems(300, 50, 1).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (300, 50));
        let all: std::collections::HashSet<_> = s.train.iter().chain(&s.test).map(|r| &r.prompt).collect();
        assert_eq!(all.len(), 350);
        for r in s.train.iter().chain(&s.test) {
            let n: Vec<u32> = r
                .prompt
                .split(|c: char| !c.is_ascii_digit())
                .filter(|w| !w.is_empty())
                .map(|w| w.parse().unwrap())
                .collect();
            let want = if r.prompt.contains("gives away") { n[0] - n[1] } else { n[0] + n[1] };
            assert_eq!(r.response, want.to_string(), "{}", r.prompt);
        }
        assert_eq!(word_problems(300, 50, 1).unwrap().test, s.test);
    }
}
