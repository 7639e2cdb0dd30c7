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
    sums(digits, 0, train, test, seed)
}

/// As [`addition`], with both numbers of exactly `digits` digits ("What is 47 + 38?", never "3 + 58").
pub fn addition_of_width(digits: u32, train: usize, test: usize, seed: u64) -> Result<TaskSplit> {
    let low = if digits > 1 { 10u64.pow(digits - 1) } else { 0 };
    sums(digits, low, train, test, seed)
}

/// Sums of two numbers in `low..10^digits`.
fn sums(digits: u32, low: u64, train: usize, test: usize, seed: u64) -> Result<TaskSplit> {
    if !(1..=4).contains(&digits) {
        return Err(Error::Invalid(format!("addition digits {digits}: use 1 to 4")));
    }
    let limit = 10u64.pow(digits);
    let width = limit - low;
    let pairs = (width * width) as usize;
    if train + test > pairs {
        return Err(Error::Invalid(format!(
            "{digits}-digit addition has {pairs} distinct questions, fewer than {train} + {test} asked for"
        )));
    }
    let mut order: Vec<usize> = (0..pairs).collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    let row = |i: usize| {
        let (a, b) = (low + i as u64 / width, low + i as u64 % width);
        TaskRow { id: format!("add-{a}-{b}"), prompt: format!("What is {a} + {b}?"), response: (a + b).to_string() }
    };
    Ok(TaskSplit {
        test: order[..test].iter().map(|&i| row(i)).collect(),
        train: order[test..test + train].iter().map(|&i| row(i)).collect(),
    })
}

/// The same sums answered with their working, column by column, the way GSM8K answers end: "What is 47 +
/// 38?" → "7 + 8 = 15, carry 1. 4 + 3 + 1 = 8. #### 85". A model that learns the steps learns a procedure it
/// can apply to sums it never saw; the GSM8K verifier checks the final number.
pub fn worked(rows: &[TaskRow]) -> Vec<TaskRow> {
    rows.iter()
        .map(|r| {
            let numbers: Vec<u64> = r
                .prompt
                .split(|c: char| !c.is_ascii_digit())
                .filter(|w| !w.is_empty())
                .filter_map(|w| w.parse().ok())
                .collect();
            let (a, b) = (numbers[0], numbers[1]);
            let mut steps = Vec::new();
            let (mut x, mut y, mut carry) = (a, b, 0);
            while x > 0 || y > 0 || steps.is_empty() {
                let (dx, dy) = (x % 10, y % 10);
                let sum = dx + dy + carry;
                let with_carry = if carry > 0 { format!(" + {carry}") } else { String::new() };
                let next = if sum >= 10 { ", carry 1" } else { "" };
                steps.push(format!("{dx} + {dy}{with_carry} = {sum}{next}."));
                carry = sum / 10;
                (x, y) = (x / 10, y / 10);
            }
            TaskRow { response: format!("{} #### {}", steps.join(" "), a + b), ..r.clone() }
        })
        .collect()
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
        .map(|(r, a)| {
            verifier
                .score(&Candidate {
                    prompt: &r.prompt,
                    response: a,
                    reference: Some(&r.response),
                    ..Default::default()
                })
                .value
        })
        .sum();
    right / rows.len().max(1) as f64
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
    fn sums_of_a_width_use_numbers_of_exactly_that_many_digits() {
        let s = addition_of_width(2, 7_900, 200, 0).unwrap();
        let numbers = |r: &TaskRow| -> Vec<u64> {
            r.prompt
                .trim_start_matches("What is ")
                .trim_end_matches('?')
                .split(" + ")
                .map(|n| n.parse().unwrap())
                .collect()
        };
        for r in s.train.iter().chain(&s.test) {
            let n = numbers(r);
            assert!(n.iter().all(|n| (10..100).contains(n)), "{}", r.prompt);
            assert_eq!(r.response, (n[0] + n[1]).to_string());
        }
        // 90 × 90 questions in all.
        assert!(addition_of_width(2, 7_901, 200, 0).unwrap_err().to_string().contains("8100 distinct"));
        assert_ne!(addition_of_width(2, 10, 10, 0).unwrap().test, addition(2, 10, 10, 0).unwrap().test);
    }

    #[test]
    fn worked_sums_show_each_column_and_end_with_the_answer() {
        let row = |a: u32, b: u32| TaskRow {
            id: "x".into(),
            prompt: format!("What is {a} + {b}?"),
            response: (a + b).to_string(),
        };
        let w = worked(&[row(47, 38), row(5, 0), row(95, 7)]);
        assert_eq!(w[0].response, "7 + 8 = 15, carry 1. 4 + 3 + 1 = 8. #### 85");
        assert_eq!(w[1].response, "5 + 0 = 5. #### 5");
        assert_eq!(w[2].response, "5 + 7 = 12, carry 1. 9 + 0 + 1 = 10, carry 1. #### 102");
    }
}
