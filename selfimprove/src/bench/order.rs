//! `whet bench order`: does the order of the same rows matter? On `whet bench selection`'s multi-skill pool:
//!
//! For each seed, the same tiny model (random initial weights per seed) is trained on the same randomly
//! drawn rows for the same steps, with only the order differing:
//!
//! - `random` and `random-2`: two seeded shuffles (their difference is the noise of order alone);
//! - `easy-to-hard`: the model's own loss, measured again every `order_every` steps and at each epoch;
//! - `skill-it`: skills (the pool's labels) weighed by their held-out loss on a validation set (rows of the
//!   pool that were not drawn, the same few per skill), every `order_every` steps.
//!
//! Every run gets the same validation set as its held-out set (measured before and after); only skill-it
//! steers by it. Greedy exact-match accuracy per skill on the balanced test set; `order.md` gives macro and
//! rare-skill accuracy as mean ± spread over seeds, each order's difference from `random` at the same seed,
//! and says which differences exceed the noise. Finished (seed, order) results are read back on a rerun.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::selection::{correct_of, jsonl, keep_settings, seed_of, skill_results, MeanSd, SkillResult};
use super::skills::{self, SkillRow};
use crate::error::{Error, Result};
use crate::train::order::Order;
use crate::train::schedule::{Schedule, Shape};
use crate::train::{train, Method, StepMetrics, TrainConfig};
use crate::{make_tiny_model, TinyLlama};

/// The orders, in the table's order.
pub const ORDERS: [&str; 4] = ["random", "random-2", "easy-to-hard", "skill-it"];

/// The benchmark's sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderBenchSize {
    pub pool: usize,
    pub near_copies: f64,
    /// Rows drawn at random from the pool for each seed: every order trains on these.
    pub rows: usize,
    /// Validation rows per skill (undrawn pool rows): the held-out set, and skill-it's guide.
    pub validation_per_skill: usize,
    pub test_per_skill: usize,
    pub seeds: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    /// Steps between re-orderings (easy-to-hard and skill-it).
    pub order_every: usize,
    pub model: TinyLlama,
}

impl OrderBenchSize {
    /// The full table: `whet bench selection`'s pool, model and training, 5% of the pool drawn at random.
    pub fn full() -> Self {
        OrderBenchSize {
            pool: 40_000,
            near_copies: 0.1,
            rows: 2_000,
            validation_per_skill: 20,
            test_per_skill: 50,
            seeds: 3,
            steps: 400,
            batch: 8,
            lr: 3e-3,
            order_every: 40,
            model: TinyLlama { vocab: 512, context: 128, ..Default::default() },
        }
    }

    /// About a minute: every row of the table, too small to tell orders apart.
    pub fn quick() -> Self {
        OrderBenchSize {
            pool: 2_500,
            rows: 125,
            validation_per_skill: 5,
            test_per_skill: 20,
            seeds: 1,
            steps: 20,
            order_every: 5,
            model: TinyLlama { vocab: 400, context: 128, layers: 1, ..Default::default() },
            ..Self::full()
        }
    }
}

/// What the benchmark reports as it goes.
#[derive(Debug)]
pub enum OrderBenchEvent<'a> {
    Part(String),
    Train { seed: u64, order: &'a str, metrics: &'a StepMetrics, steps: usize },
    Result(&'a OrderResult),
}

/// One (seed, order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderResult {
    pub seed: u64,
    pub order: String,
    pub macro_accuracy: f64,
    /// Mean accuracy over the rare skills (≤ 3% of the pool).
    pub rare_accuracy: f64,
    pub final_loss: f64,
    /// The validation set's loss after training.
    pub held_out_loss: Option<f64>,
    pub re_orderings: usize,
    /// Seconds spent measuring for re-orderings, and training in all.
    pub order_seconds: f64,
    pub train_seconds: f64,
    pub skills: Vec<SkillResult>,
}

/// One row of the table: an order over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub order: String,
    pub seeds: usize,
    pub macro_accuracy: MeanSd,
    pub rare_accuracy: MeanSd,
    pub held_out_loss: MeanSd,
    /// Macro accuracy minus random's at the same seed.
    pub macro_vs_random: MeanSd,
    /// Whether the difference from random is beyond the noise: over at least 2 seeds, |mean macro_vs_random|
    /// is larger than the noise and than twice its standard error.
    pub exceeds_noise: bool,
    /// Mean accuracy per skill, in [`skills::SKILLS`] order.
    pub per_skill: Vec<f64>,
    pub order_seconds: f64,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderBenchReport {
    pub out: PathBuf,
    pub size: OrderBenchSize,
    /// The noise: |macro(random-2) − macro(random)| averaged over seeds.
    pub noise: f64,
    pub results: Vec<OrderResult>,
    pub summary: Vec<OrderSummary>,
    pub seconds: f64,
}

/// The report a run wrote into `dir` (`report.json`).
pub fn read_report(dir: &Path) -> Result<OrderBenchReport> {
    Ok(serde_json::from_value(crate::folder::read_json(&dir.join("report.json"))?)?)
}

/// Runs the benchmark into `dir`.
pub fn run(dir: &Path, size: &OrderBenchSize, on_event: &mut dyn FnMut(OrderBenchEvent)) -> Result<OrderBenchReport> {
    let started = Instant::now();
    if size.seeds == 0 || size.rows == 0 || size.rows > size.pool {
        return Err(Error::Invalid(format!("seeds ≥ 1 and 1 ≤ rows ≤ pool ({}): {size:?}", size.pool)));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    on_event(OrderBenchEvent::Part("data".into()));
    let data = skills::make(size.pool, size.test_per_skill, size.near_copies, 0)?;
    let pool_path = dir.join("pool.jsonl");
    let pool_text = jsonl(&data.pool)?;
    // Seeds are left out: a run can be extended with more.
    let wanted = serde_json::json!({
        "size": OrderBenchSize { seeds: 0, ..size.clone() },
        "data": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(pool_text.as_bytes())),
    });
    keep_settings(&dir.join("settings.json"), &wanted)?;
    whetstone_datasets::write::write_atomic(&pool_path, pool_text.as_bytes())?;

    let mut results = Vec::new();
    for seed in 0..size.seeds as u64 {
        let seed_dir = dir.join(format!("seed-{seed}"));
        let base = seed_dir.join("base");
        if !base.exists() {
            on_event(OrderBenchEvent::Part(format!("seed {seed}: model")));
            make_tiny_model(&base, std::slice::from_ref(&pool_path), &TinyLlama { seed, ..size.model.clone() })?;
        }
        // The rows every order trains on, and the validation rows (undrawn, the same number per skill).
        let mut shuffled: Vec<usize> = (0..data.pool.len()).collect();
        shuffled.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed_of(seed, "rows", 0)));
        let (drawn, rest) = shuffled.split_at(size.rows);
        let mut drawn = drawn.to_vec();
        drawn.sort_unstable();
        let mut validation: Vec<&SkillRow> = Vec::new();
        for name in skills::names() {
            validation.extend(
                rest.iter().map(|&r| &data.pool[r]).filter(|r| r.skill == name).take(size.validation_per_skill),
            );
        }
        let train_path = seed_dir.join("train.jsonl");
        let validation_path = seed_dir.join("validation.jsonl");
        whetstone_datasets::write::write_atomic(&train_path, jsonl(drawn.iter().map(|&r| &data.pool[r]))?.as_bytes())?;
        whetstone_datasets::write::write_atomic(&validation_path, jsonl(validation)?.as_bytes())?;
        for order in ORDERS {
            let work = seed_dir.join(order);
            let result_path = work.join("result.json");
            let result = match std::fs::read_to_string(&result_path) {
                Ok(text) => serde_json::from_str(&text)?,
                Err(_) => {
                    on_event(OrderBenchEvent::Part(format!("seed {seed}: {order}")));
                    let config = TrainConfig {
                        base: base.clone(),
                        data: train_path.clone(),
                        eval: Some(validation_path.clone()),
                        out: work.join("model"),
                        method: Method::Full,
                        schedule: Schedule {
                            lr: size.lr,
                            warmup: size.steps / 20,
                            floor: 0.1,
                            shape: Shape::Cosine,
                            ..Default::default()
                        },
                        steps: Some(size.steps),
                        batch: size.batch,
                        // random-2 differs from random in its shuffle only (the base and everything else alike).
                        seed: seed_of(seed, if order == "random-2" { "train-2" } else { "train" }, 0),
                        cpu: true,
                        order: match order {
                            "easy-to-hard" => Order::EasyToHard,
                            "skill-it" => Order::SkillIt,
                            _ => Order::Random,
                        },
                        skill_column: (order == "skill-it").then(|| whetstone_datasets::schema::SOURCE.to_string()),
                        order_every: size.order_every,
                        ..Default::default()
                    };
                    one(seed, order, &config, &data.test, size, on_event, &result_path)?
                }
            };
            on_event(OrderBenchEvent::Result(&result));
            results.push(result);
        }
    }
    let noise = noise(&results);
    let report = OrderBenchReport {
        out: dir.to_path_buf(),
        size: size.clone(),
        noise,
        summary: summarise(&results, noise),
        results,
        seconds: started.elapsed().as_secs_f64(),
    };
    let write = |name: &str, text: &str| whetstone_datasets::write::write_atomic(&dir.join(name), text.as_bytes());
    write("report.json", &serde_json::to_string_pretty(&report)?)?;
    write("order.md", &markdown(&report))?;
    Ok(report)
}

/// Trains one (seed, order), measures it on the test set and keeps the result (not the model).
fn one(
    seed: u64,
    order: &str,
    config: &TrainConfig,
    test: &[SkillRow],
    size: &OrderBenchSize,
    on_event: &mut dyn FnMut(OrderBenchEvent),
    result_path: &Path,
) -> Result<OrderResult> {
    if config.out.exists() {
        std::fs::remove_dir_all(&config.out).map_err(|e| Error::io(&config.out, e))?;
    }
    let started = Instant::now();
    let report = train(config, &mut |metrics, steps| {
        on_event(OrderBenchEvent::Train { seed, order, metrics, steps });
        true
    })?;
    let train_seconds = started.elapsed().as_secs_f64();
    let right = correct_of(&config.out, &test.iter().collect::<Vec<_>>(), size.model.context)?;
    // Every order trains on the same rows: `selected` is left 0.
    let (skills, rare_accuracy) = skill_results(test, &right, |_| 0);
    let result = OrderResult {
        seed,
        order: order.into(),
        macro_accuracy: skills.iter().map(|s| s.accuracy).sum::<f64>() / skills.len() as f64,
        rare_accuracy,
        final_loss: report.final_loss,
        held_out_loss: report.eval_loss_after,
        re_orderings: report.order_updates,
        order_seconds: report.order_seconds,
        train_seconds,
        skills,
    };
    // The model is not needed again; its re-orderings are kept beside the result.
    let log = config.out.join(crate::train::ORDER_LOG);
    if log.is_file() {
        let kept = result_path.with_file_name(crate::train::ORDER_LOG);
        std::fs::copy(&log, &kept).map_err(|e| Error::io(&kept, e))?;
    }
    std::fs::remove_dir_all(&config.out).map_err(|e| Error::io(&config.out, e))?;
    whetstone_datasets::write::write_atomic(result_path, serde_json::to_string_pretty(&result)?.as_bytes())?;
    Ok(result)
}

/// |macro(random-2) − macro(random)| averaged over the seeds that have both.
fn noise(results: &[OrderResult]) -> f64 {
    let gaps: Vec<f64> = results
        .iter()
        .filter(|r| r.order == "random-2")
        .filter_map(|r2| {
            let r1 = results.iter().find(|r| r.order == "random" && r.seed == r2.seed)?;
            Some((r2.macro_accuracy - r1.macro_accuracy).abs())
        })
        .collect();
    gaps.iter().sum::<f64>() / gaps.len().max(1) as f64
}

/// The table's rows: each order over seeds.
pub fn summarise(results: &[OrderResult], noise: f64) -> Vec<OrderSummary> {
    ORDERS
        .iter()
        .filter_map(|&order| {
            let rs: Vec<&OrderResult> = results.iter().filter(|r| r.order == order).collect();
            if rs.is_empty() {
                return None;
            }
            let of = |f: &dyn Fn(&OrderResult) -> f64| MeanSd::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let versus: Vec<f64> = rs
                .iter()
                .filter_map(|r| {
                    let random = results.iter().find(|b| b.order == "random" && b.seed == r.seed)?;
                    Some(r.macro_accuracy - random.macro_accuracy)
                })
                .collect();
            let macro_vs_random = MeanSd::of(&versus);
            Some(OrderSummary {
                order: order.into(),
                seeds: rs.len(),
                macro_accuracy: of(&|r| r.macro_accuracy),
                rare_accuracy: of(&|r| r.rare_accuracy),
                held_out_loss: of(&|r| r.held_out_loss.unwrap_or(f64::NAN)),
                exceeds_noise: order != "random" && beyond(macro_vs_random, versus.len(), noise),
                macro_vs_random,
                per_skill: (0..skills::SKILLS.len())
                    .map(|i| rs.iter().map(|r| r.skills[i].accuracy).sum::<f64>() / rs.len() as f64)
                    .collect(),
                order_seconds: of(&|r| r.order_seconds).mean,
            })
        })
        .collect()
}

/// Whether a mean difference over `n` seeds is beyond the noise: larger than it and than twice the standard
/// error (one seed cannot tell).
fn beyond(difference: MeanSd, n: usize, noise: f64) -> bool {
    let standard_error = difference.sd / ((n.max(2) - 1) as f64).sqrt();
    n >= 2 && difference.mean.abs() > noise.max(2.0 * standard_error)
}

/// The report as Markdown: the table, a sentence on the noise, and accuracy per skill.
pub fn markdown(r: &OrderBenchReport) -> String {
    let s = &r.size;
    let pct = |m: MeanSd| format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.sd);
    let mut text = format!(
        "# whet bench order\n\n{} rows drawn at random from the {}-row multi-skill pool of `whet bench selection` \
         (per seed); a tiny Llama ({} layers, hidden {}, random initial weights per seed) trained on them for {} steps \
         of {} packed rows (lr {}, cosine), only the order differing; re-ordered every {} steps; held-out set: {} \
         undrawn pool rows per skill; greedy exact-match accuracy on {} test questions per skill; {} seed(s), mean ± \
         standard deviation over seeds.\n\n\
         | order | macro accuracy (%) | rare skills (%) | macro vs random, same seed (points) | beyond the noise? | \
         held-out loss | seconds measuring |\n|---|---|---|---|---|---|---|\n",
        s.rows,
        s.pool,
        s.model.layers,
        s.model.hidden,
        s.steps,
        s.batch,
        s.lr,
        s.order_every,
        s.validation_per_skill,
        s.test_per_skill,
        s.seeds
    );
    for m in &r.summary {
        text.push_str(&format!(
            "| {} | {} | {} | {:+.1} ± {:.1} | {} | {:.3} ± {:.3} | {:.1} |\n",
            m.order,
            pct(m.macro_accuracy),
            pct(m.rare_accuracy),
            100.0 * m.macro_vs_random.mean,
            100.0 * m.macro_vs_random.sd,
            match (m.order.as_str(), m.exceeds_noise) {
                ("random", _) => "–",
                (_, true) => "yes",
                (_, false) => "no",
            },
            m.held_out_loss.mean,
            m.held_out_loss.sd,
            m.order_seconds
        ));
    }
    let beyond: Vec<&str> = r.summary.iter().filter(|m| m.exceeds_noise).map(|m| m.order.as_str()).collect();
    text.push_str(&format!(
        "\nThe noise, two random orders of the same rows (random-2 against random, same seed): {:.1} points of macro \
         accuracy, averaged over seeds. A difference from random is beyond the noise where its mean over seeds is \
         larger than that and than twice its standard error (at least 2 seeds). {}\n",
        100.0 * r.noise,
        if r.size.seeds < 2 {
            "One seed cannot tell.".to_string()
        } else if beyond.is_empty() {
            "No order's mean difference from random exceeds it.".to_string()
        } else {
            format!("Differences from random larger than that: {}.", beyond.join(", "))
        }
    ));
    let names = skills::names();
    text.push_str(&format!(
        "\nAccuracy per skill (%, mean over seeds):\n\n| order | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    ));
    for m in &r.summary {
        let cells: Vec<String> = m.per_skill.iter().map(|a| format!("{:.1}", 100.0 * a)).collect();
        text.push_str(&format!("| {} | {} |\n", m.order, cells.join(" | ")));
    }
    text
}
