//! `whet demo`: the whole loop on a synthetic, verifiable task, on a CPU, in minutes.
//!
//! 1. Makes 2-digit sums answered with their working ([`crate::tasks::worked`]: "7 + 8 = 15, carry 1. 4 + 3 + 1
//!    = 8. #### 85"): a little labelled data (the "human" set), a larger pool of prompts whose answers only the
//!    verifier sees, and a held-out test set.
//! 2. Makes a tiny Llama from scratch and pre-trains it briefly on the human set.
//! 3. Runs reward-filtered self-training rounds (iterative selection, N samples per prompt, the GSM8K
//!    final-number verifier, best-of-N, dedup, replay of the human set, kept samples accumulated over rounds,
//!    full training from the previous round's model).
//! 4. Runs the same rounds without the reward filter (every sample trained on) as a control.
//!
//! Everything lands in one folder and is resumable: run it again and finished parts are skipped.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{report, run as run_rounds, Event, KeepSettings, RoundsConfig, RoundsReport, SelectSettings};
use crate::error::{Error, Result};
use crate::sampling::Sampling;
use crate::tasks::{addition, worked, write_jsonl};
use crate::train::schedule::{Schedule, Shape};
use crate::train::{train, Method, StepMetrics, TrainConfig};
use crate::{make_tiny_model, TinyLlama};

/// The demo's sizes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoSize {
    pub human: usize,
    pub pool: usize,
    pub test: usize,
    pub pretrain_steps: usize,
    pub rounds: usize,
    pub prompts_per_round: usize,
    pub samples_per_prompt: usize,
    pub steps_per_round: usize,
}

impl DemoSize {
    /// The README's demo: a few minutes on 2 CPU cores.
    pub fn full() -> Self {
        DemoSize {
            human: 1_000,
            pool: 8_000,
            test: 300,
            pretrain_steps: 350,
            rounds: 3,
            prompts_per_round: 1024,
            samples_per_prompt: 4,
            steps_per_round: 150,
        }
    }

    /// A short version for tests and the notebook (about a minute; too short to learn much).
    pub fn quick() -> Self {
        DemoSize {
            human: 600,
            pool: 1_500,
            test: 60,
            pretrain_steps: 100,
            rounds: 2,
            prompts_per_round: 64,
            samples_per_prompt: 4,
            steps_per_round: 30,
        }
    }
}

/// What the demo reports as it goes.
#[derive(Debug)]
pub enum DemoEvent<'a> {
    /// A part starts: "task", "model", "pretrain", "filtered", "control".
    Part(&'static str),
    Pretrain {
        metrics: &'a StepMetrics,
        steps: usize,
    },
    /// An event of the filtered rounds (`control` false) or of the control.
    Rounds {
        control: bool,
        event: Event<'a>,
    },
}

/// Both arms of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub out: PathBuf,
    pub size: DemoSize,
    pub filtered: RoundsReport,
    pub control: RoundsReport,
    pub seconds: f64,
}

impl DemoReport {
    /// Held-out accuracy per round, filtered against control.
    pub fn table(&self) -> Vec<(usize, f64, Option<f64>)> {
        self.filtered
            .rounds
            .iter()
            .map(|m| (m.round, m.held_out_accuracy, self.control.rounds.get(m.round).map(|c| c.held_out_accuracy)))
            .collect()
    }
}

/// The rounds' settings for one arm.
fn rounds_config(dir: &Path, size: &DemoSize, seed: u64, filtered: bool) -> RoundsConfig {
    RoundsConfig {
        base: dir.join("pretrained"),
        prompts: dir.join("data/pool.jsonl"),
        eval: dir.join("data/test.jsonl"),
        replay: Some(dir.join("data/human.jsonl")),
        out: dir.join(if filtered { "filtered" } else { "control" }),
        rounds: size.rounds,
        seed,
        reward: vec!["gsm8k".into()],
        select: SelectSettings { prompts: size.prompts_per_round, clusters: 16, ..Default::default() },
        generate: Sampling { n: size.samples_per_prompt, temperature: 0.8, max_tokens: 48, ..Default::default() },
        keep: KeepSettings { by: if filtered { "best-of-n" } else { "all" }.into(), min_reward: 1.0 },
        replay_fraction: 0.25,
        accumulate: true,
        train: TrainConfig {
            method: Method::Full,
            schedule: Schedule { lr: 2e-3, warmup: 5, floor: 0.1, shape: Shape::Cosine, ..Default::default() },
            steps: Some(size.steps_per_round),
            batch: 8,
            cpu: true,
            ..Default::default()
        },
        eval_max_tokens: 48,
        ..Default::default()
    }
}

/// Runs the demo into `dir` (made if missing; finished parts of an earlier run are kept).
pub fn run(dir: &Path, size: &DemoSize, seed: u64, on_event: &mut dyn FnMut(DemoEvent)) -> Result<DemoReport> {
    let started = std::time::Instant::now();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
    on_event(DemoEvent::Part("task"));
    let task = addition(2, size.human + size.pool, size.test, seed)?;
    let (labelled, test) = (worked(&task.train), worked(&task.test));
    let (human, pool) = labelled.split_at(size.human);
    for (name, rows) in [("human.jsonl", human), ("pool.jsonl", pool), ("test.jsonl", &test[..])] {
        write_jsonl(&data.join(name), rows)?;
    }

    let tiny = dir.join("tiny");
    if !tiny.exists() {
        on_event(DemoEvent::Part("model"));
        let spec = TinyLlama { vocab: 400, context: 128, seed, ..Default::default() };
        make_tiny_model(&tiny, &[data.join("human.jsonl"), data.join("pool.jsonl")], &spec)?;
    }
    let pretrained = dir.join("pretrained");
    if !pretrained.exists() {
        on_event(DemoEvent::Part("pretrain"));
        let config = TrainConfig {
            base: tiny,
            data: data.join("human.jsonl"),
            out: pretrained,
            method: Method::Full,
            schedule: Schedule {
                lr: 3e-3,
                warmup: size.pretrain_steps / 20,
                floor: 0.1,
                shape: Shape::Cosine,
                ..Default::default()
            },
            steps: Some(size.pretrain_steps),
            batch: 8,
            seed,
            checkpoint_every: 50,
            cpu: true,
            ..Default::default()
        };
        train(&config, &mut |metrics, steps| {
            on_event(DemoEvent::Pretrain { metrics, steps });
            true
        })?;
    }
    let mut arm = |filtered: bool| -> Result<RoundsReport> {
        on_event(DemoEvent::Part(if filtered { "filtered" } else { "control" }));
        let config = rounds_config(dir, size, seed, filtered);
        run_rounds(&config, &mut |event| on_event(DemoEvent::Rounds { control: !filtered, event }))
    };
    let filtered = arm(true)?;
    let control = arm(false)?;
    let report = DemoReport {
        out: dir.to_path_buf(),
        size: size.clone(),
        filtered,
        control,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_summary(&report)?;
    Ok(report)
}

/// `demo.md` and `demo.svg`: held-out accuracy per round, with and without the reward filter.
fn write_summary(r: &DemoReport) -> Result<()> {
    let series = vec![
        ("reward-filtered".to_string(), r.filtered.rounds.iter().map(|m| (m.round, m.held_out_accuracy)).collect()),
        ("control (no filter)".to_string(), r.control.rounds.iter().map(|m| (m.round, m.held_out_accuracy)).collect()),
    ];
    let svg = report::chart("whet demo: held-out accuracy per round", "held-out accuracy (%)", &series)?;
    whetstone_datasets::write::write_atomic(&r.out.join("demo.svg"), svg.as_bytes())?;
    let mut text = format!(
        "# whet demo\n\n2-digit sums answered with their working (\"What is 47 + 38?\" → \"7 + 8 = 15, carry 1. 4 + \
         3 + 1 = 8. #### 85\"), checked by the GSM8K final-number verifier; a tiny Llama pre-trained from scratch on {} labelled problems for {} \
         steps, then {} rounds of self-training on a pool of {} unlabelled prompts ({} per round, {} samples each), \
         held-out set of {} problems.\n\n| round | reward-filtered | control (no filter) |\n|---|---|---|\n",
        r.size.human, r.size.pretrain_steps, r.size.rounds, r.size.pool, r.size.prompts_per_round, r.size.samples_per_prompt, r.size.test
    );
    for (round, f, c) in r.table() {
        let c = c.map_or(String::new(), |c| format!("{:.1}%", 100.0 * c));
        text.push_str(&format!("| {round} | {:.1}% | {c} |\n", 100.0 * f));
    }
    text.push_str(&format!(
        "\nBoth arms start from the same model, draw the same prompts and samples in round 1, and train the same \
         number of steps with the same share of labelled data (replay); the control trains on every sample, the \
         filtered arm only on the best sample of each prompt that the verifier accepts. The rounds' own reports: \
         `filtered/report.md`, `control/report.md`. Took {:.0} s.\n",
        r.seconds
    ));
    Ok(whetstone_datasets::write::write_atomic(&r.out.join("demo.md"), text.as_bytes())?)
}
