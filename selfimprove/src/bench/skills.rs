//! A synthetic, verifiable, multi-skill instruction pool, shaped like real instruction data: ten skills of
//! different kinds, each asked in several surface forms (so that clusters are not simply the skills), with
//! imbalanced frequencies (one skill 40% of the pool, the rarest 1%) and a share of near-duplicates (popular
//! rows copied with small changes). The held-out test set is balanced over skills and shares no prompt with
//! the pool.

use std::collections::{BTreeSet, HashSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::error::{Error, Result};

/// One skill: its name, its share of the pool (percent), and a question generator returning the surface
/// form used (0..4), the prompt and its exact answer.
pub struct Skill {
    pub name: &'static str,
    pub percent: u32,
    ask: fn(&mut Xoshiro256PlusPlus) -> (String, String),
}

/// The ten skills in order of frequency: 40, 18, 12, 8, 7, 5, 4, 3, 2 and 1 percent of the pool.
pub const SKILLS: [Skill; 10] = [
    Skill { name: "addition", percent: 40, ask: addition },
    Skill { name: "subtraction", percent: 18, ask: subtraction },
    Skill { name: "multiplication", percent: 12, ask: multiplication },
    Skill { name: "reverse", percent: 8, ask: reverse },
    Skill { name: "sort", percent: 7, ask: sort },
    Skill { name: "count_letter", percent: 5, ask: count_letter },
    Skill { name: "maximum", percent: 4, ask: maximum },
    Skill { name: "parity", percent: 3, ask: parity },
    Skill { name: "unit_conversion", percent: 2, ask: unit_conversion },
    Skill { name: "weekday", percent: 1, ask: weekday },
];

/// Skills at or under this share of the pool (percent) are the "rare" ones the table reports.
pub const RARE_PERCENT: u32 = 3;

fn pick<'a>(rng: &mut Xoshiro256PlusPlus, forms: &[&'a str]) -> &'a str {
    forms[rng.gen_range(0..forms.len())]
}

/// People and things the questions are about: every surface form carries some of them, so that each skill
/// has tens of thousands of distinct prompts (few exact repeats) while its answers stay easy to learn.
const NAMES: [&str; 16] =
    ["Tom", "Ann", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eva", "Ben", "Lia", "Kai", "Ada", "Noah", "Lucy"];
const THINGS: [&str; 12] =
    ["apples", "pens", "books", "coins", "cards", "shells", "stamps", "cups", "eggs", "keys", "rocks", "toys"];

/// Fills `{a}`, `{b}`, … in a form; `{N}` is a random name and `{O}` a random kind of thing.
fn fill(rng: &mut Xoshiro256PlusPlus, form: &str, values: &[(&str, &str)]) -> String {
    let name = NAMES[rng.gen_range(0..NAMES.len())];
    let thing = THINGS[rng.gen_range(0..THINGS.len())];
    values
        .iter()
        .fold(form.to_string(), |text, (k, v)| text.replace(&format!("{{{k}}}"), v))
        .replace("{N}", name)
        .replace("{O}", thing)
}

fn addition(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let (a, b) = (rng.gen_range(0..10u32), rng.gen_range(0..10u32));
    let form = pick(
        rng,
        &[
            "{N} has {a} {O} and gets {b} more. How many {O} does {N} have?",
            "There are {a} {O} in a box and {N} puts in {b} more. How many {O} are in the box?",
            "{N} asks: what is {a} + {b}?",
            "Add {a} {O} and {b} {O}. How many {O} is that?",
        ],
    );
    (fill(rng, form, &[("a", &a.to_string()), ("b", &b.to_string())]), (a + b).to_string())
}

fn subtraction(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let a = rng.gen_range(0..19u32);
    let b = rng.gen_range(0..=a.min(9));
    let form = pick(
        rng,
        &[
            "{N} has {a} {O} and gives away {b}. How many {O} are left?",
            "There are {a} {O} in a box and {N} takes out {b}. How many are left?",
            "{N} asks: what is {a} - {b}?",
            "Take {b} {O} away from {a} {O}. How many {O} remain?",
        ],
    );
    (fill(rng, form, &[("a", &a.to_string()), ("b", &b.to_string())]), (a - b).to_string())
}

fn multiplication(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let (a, b) = (rng.gen_range(2..10u32), rng.gen_range(2..10u32));
    let form = pick(
        rng,
        &[
            "{N} buys {a} bags with {b} {O} in each. How many {O} in total?",
            "There are {a} rows of {b} {O}. How many {O} are there?",
            "{N} asks: what is {a} x {b}?",
            "Multiply {a} by {b} to count {N}'s {O}.",
        ],
    );
    (fill(rng, form, &[("a", &a.to_string()), ("b", &b.to_string())]), (a * b).to_string())
}

/// A pronounceable made-up word of 3 letters (consonant, vowel, consonant): about a thousand of them.
fn word(rng: &mut Xoshiro256PlusPlus) -> String {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    (0..3)
        .map(|i| {
            let set = if i % 2 == 0 { CONSONANTS } else { VOWELS };
            set[rng.gen_range(0..set.len())] as char
        })
        .collect()
}

fn reverse(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let w = word(rng);
    let form = pick(
        rng,
        &[
            "{N} asks: reverse the word \"{w}\".",
            "Spell \"{w}\" backwards for {N}.",
            "{N} wrote \"{w}\". Write it in reverse order.",
            "Take the word \"{w}\" from {N}'s list. Reverse it.",
        ],
    );
    (fill(rng, form, &[("w", &w)]), w.chars().rev().collect())
}

fn digits(rng: &mut Xoshiro256PlusPlus, n: usize, range: std::ops::Range<u32>) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(range.clone())).collect()
}

fn joined(values: &[u32], sep: &str) -> String {
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(sep)
}

fn sort(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let values = digits(rng, 3, 0..10);
    let form = pick(
        rng,
        &[
            "{N} has cards numbered {s}. Sort them from smallest to largest.",
            "{N} asks: sort these numbers: {s}.",
            "Put {c} in increasing order for {N}.",
            "Boxes of {O} are labelled {c}. Order the labels from smallest to largest.",
        ],
    );
    let mut sorted = values.clone();
    sorted.sort_unstable();
    (fill(rng, form, &[("s", &joined(&values, " ")), ("c", &joined(&values, ", "))]), joined(&sorted, " "))
}

fn count_letter(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    // Letters from a small set, so counts from 0 to several all occur.
    let w: String = (0..rng.gen_range(3..=5)).map(|_| b"abc"[rng.gen_range(0..3)] as char).collect();
    let letter = b"abc"[rng.gen_range(0..3)] as char;
    let form = pick(
        rng,
        &[
            "{N} asks: how many times does \"{l}\" appear in \"{w}\"?",
            "Count the letter {l} in {w} for {N}.",
            "{N} wrote the word \"{w}\". How many {l}'s does it have?",
            "On a box of {O} is written \"{w}\". How many {l}'s are there?",
        ],
    );
    let count = w.chars().filter(|&c| c == letter).count();
    (fill(rng, form, &[("l", &letter.to_string()), ("w", &w)]), count.to_string())
}

fn maximum(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let values = digits(rng, 3, 0..10);
    let form = pick(
        rng,
        &[
            "{N} asks: what is the largest of {c}?",
            "Three boxes hold {c} {O}. How many {O} are in the fullest box?",
            "{N} scored {c} in three games. What was the best score?",
            "Find the maximum of {s} for {N}.",
        ],
    );
    let max = values.iter().max().expect("three values");
    (fill(rng, form, &[("s", &joined(&values, " ")), ("c", &joined(&values, ", "))]), max.to_string())
}

fn parity(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let n = rng.gen_range(0..100u32);
    let form = pick(
        rng,
        &[
            "{N} has {n} {O}. Is that number even or odd?",
            "{N} asks: is {n} even or odd?",
            "There are {n} {O} on the shelf. Even or odd?",
            "Say whether {n} is odd or even, {N}.",
        ],
    );
    (fill(rng, form, &[("n", &n.to_string())]), if n % 2 == 0 { "even" } else { "odd" }.into())
}

fn unit_conversion(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let n = rng.gen_range(1..10u32);
    let (from, to, factor) =
        [("km", "m", 1000), ("m", "cm", 100), ("cm", "mm", 10), ("m", "mm", 1000)][rng.gen_range(0..4)];
    let form = pick(
        rng,
        &[
            "{N} asks: convert {n} {f} to {t}.",
            "{N} has a rope of {n} {f}. How long is it in {t}?",
            "A shelf of {O} is {n} {f} long. How many {t} is that?",
            "How many {t} are in {n} {f}, {N}?",
        ],
    );
    (fill(rng, form, &[("n", &n.to_string()), ("f", from), ("t", to)]), (n * factor).to_string())
}

const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

fn weekday(rng: &mut Xoshiro256PlusPlus) -> (String, String) {
    let (day, k) = (rng.gen_range(0..7), rng.gen_range(1..7));
    let form = pick(
        rng,
        &[
            "{N} leaves on {d} and comes back {k} days later. Which day is that?",
            "{N} asks: what day is {k} days after {d}?",
            "If today is {d}, what day is it in {k} days, {N}?",
            "A box of {O} ships on {d} and arrives {k} days later. On which day does it arrive?",
        ],
    );
    (fill(rng, form, &[("d", DAYS[day]), ("k", &k.to_string())]), DAYS[(day + k) % 7].into())
}

/// Ways a popular row is copied with small changes (as instruction data collected from many users is).
const NEAR_COPIES: [fn(&str) -> String; 5] = [
    |p| format!("Please answer: {p}"),
    |p| format!("{p} Thanks!"),
    |p| format!("Quick question: {p}"),
    |p| p.replace(' ', "  "),
    |p| format!("{p} Answer briefly."),
];

/// One row of the pool or the test set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillRow {
    pub id: String,
    pub prompt: String,
    pub response: String,
    pub skill: String,
    /// The row this one is a near-copy of (pool only).
    pub near_copy_of: Option<String>,
}

/// The pool to select from and the balanced held-out test set.
#[derive(Debug, Clone)]
pub struct SkillData {
    pub pool: Vec<SkillRow>,
    pub test: Vec<SkillRow>,
}

/// Makes a pool of `pool` rows (of which a share `near_copies` are near-copies of other pool rows: 2% of
/// the rows, each copied about five times) and `test_per_skill` held-out rows per skill whose prompts do
/// not occur in the pool. The same seed gives the same rows.
pub fn make(pool: usize, test_per_skill: usize, near_copies: f64, seed: u64) -> Result<SkillData> {
    if !(0.0..0.5).contains(&near_copies) {
        return Err(Error::Invalid(format!("near-copy share {near_copies}: use 0 to 0.5")));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut test = Vec::new();
    let mut held: HashSet<String> = HashSet::new();
    for skill in &SKILLS {
        let mut tries = 0;
        let mut n = 0;
        while n < test_per_skill {
            let (prompt, response) = (skill.ask)(&mut rng);
            tries += 1;
            if tries > 100 * test_per_skill {
                return Err(Error::Invalid(format!("{}: fewer than {test_per_skill} distinct questions", skill.name)));
            }
            if held.insert(prompt.clone()) {
                test.push(SkillRow {
                    id: format!("test-{}-{n}", skill.name),
                    prompt,
                    response,
                    skill: skill.name.into(),
                    near_copy_of: None,
                });
                n += 1;
            }
        }
    }
    let copies = (pool as f64 * near_copies).round() as usize;
    let originals = pool - copies;
    // Shares by largest remainder, so the counts add up to `originals` exactly.
    let total: u32 = SKILLS.iter().map(|s| s.percent).sum();
    let ideal: Vec<f64> = SKILLS.iter().map(|s| originals as f64 * s.percent as f64 / total as f64).collect();
    let mut counts: Vec<usize> = ideal.iter().map(|x| x.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..SKILLS.len()).collect();
    by_remainder.sort_by(|&a, &b| (ideal[b] - ideal[b].floor()).total_cmp(&(ideal[a] - ideal[a].floor())));
    for &i in by_remainder.iter().take(originals - counts.iter().sum::<usize>()) {
        counts[i] += 1;
    }
    let mut rows = Vec::with_capacity(pool);
    for (skill, &count) in SKILLS.iter().zip(&counts) {
        let mut n = 0;
        while n < count {
            let (prompt, response) = (skill.ask)(&mut rng);
            if held.contains(&prompt) {
                continue;
            }
            rows.push(SkillRow {
                id: format!("{}-{n}", skill.name),
                prompt,
                response,
                skill: skill.name.into(),
                near_copy_of: None,
            });
            n += 1;
        }
    }
    // Popular rows: 2% of the originals, each copied about `copies / popular` times with small changes.
    let popular: Vec<usize> = if copies > 0 {
        let n = (originals / 50).clamp(1, copies);
        rand::seq::index::sample(&mut rng, originals, n).into_vec()
    } else {
        Vec::new()
    };
    for i in 0..copies {
        let source = rows[popular[i % popular.len()]].clone();
        let change = NEAR_COPIES[rng.gen_range(0..NEAR_COPIES.len())];
        rows.push(SkillRow {
            id: format!("{}-copy-{i}", source.id),
            prompt: change(&source.prompt),
            near_copy_of: Some(source.id.clone()),
            ..source
        });
    }
    rows.shuffle(&mut rng);
    Ok(SkillData { pool: rows, test })
}

/// The skills' names, in order of frequency.
pub fn names() -> Vec<&'static str> {
    SKILLS.iter().map(|s| s.name).collect()
}

/// The rare skills' names (at most [`RARE_PERCENT`] of the pool).
pub fn rare() -> BTreeSet<&'static str> {
    SKILLS.iter().filter(|s| s.percent <= RARE_PERCENT).map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_pool_is_imbalanced_has_near_copies_and_never_holds_a_test_prompt() {
        let data = make(10_000, 20, 0.1, 7).unwrap();
        assert_eq!(data.pool.len(), 10_000);
        assert_eq!(data.test.len(), 200);
        let mut per: HashMap<&str, usize> = HashMap::new();
        data.pool.iter().filter(|r| r.near_copy_of.is_none()).for_each(|r| *per.entry(&r.skill).or_default() += 1);
        assert_eq!(per["addition"], 3600, "40% of the 9,000 originals");
        assert_eq!(per["weekday"], 90, "1%");
        assert_eq!(data.pool.iter().filter(|r| r.near_copy_of.is_some()).count(), 1000);
        let held: HashSet<&str> = data.test.iter().map(|r| r.prompt.as_str()).collect();
        assert!(data.pool.iter().all(|r| !held.contains(r.prompt.as_str())));
        let copy = data.pool.iter().find(|r| r.near_copy_of.is_some()).unwrap();
        let source = data.pool.iter().find(|r| Some(&r.id) == copy.near_copy_of.as_ref()).unwrap();
        assert!(copy.prompt.contains(source.prompt.trim()) || copy.prompt.replace("  ", " ") == source.prompt);
        assert_eq!((copy.response.as_str(), copy.skill.as_str()), (source.response.as_str(), source.skill.as_str()));
        let ids: HashSet<&str> = data.pool.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), data.pool.len(), "ids are unique");
        assert_eq!(make(10_000, 20, 0.1, 7).unwrap().pool, data.pool, "the seed fixes the rows");
        assert_eq!(rare().len(), 3);
    }

    #[test]
    fn answers_are_right() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for _ in 0..200 {
            let (p, a) = sort(&mut rng);
            let mut d: Vec<char> = p.chars().filter(char::is_ascii_digit).collect();
            d.sort();
            assert_eq!(a.replace(' ', ""), d.into_iter().collect::<String>());
            let (p, a) = weekday(&mut rng);
            let k = p.chars().find(char::is_ascii_digit).unwrap().to_digit(10).unwrap() as usize;
            let start = DAYS.iter().position(|d| p.contains(d)).unwrap();
            assert_eq!(a, DAYS[(start + k) % 7]);
            let (p, a) = reverse(&mut rng);
            let w = p.split('"').nth(1).unwrap();
            assert_eq!(w.chars().rev().collect::<String>(), a, "{p}");
        }
    }
}
