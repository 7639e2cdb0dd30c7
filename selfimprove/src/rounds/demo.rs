//! `whet demo`: the whole loop on a synthetic, verifiable task, on a CPU.
//!
//! With [`DemoModel::Tiny`], in minutes:
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
//! With [`DemoModel::Pretrained`] (a chat model such as SmolLM2-135M-Instruct, a GGUF file imported first):
//! rejection-sampling fine-tuning. There is no labelled data and no pre-training: the prompts are the bare
//! questions ("What is 47 + 38?"), the model answers in its own words, the verifier keeps its right answers,
//! and LoRA trains on them each round (merged into the next round's model). The control trains on every
//! sample.
//!
//! Everything lands in one folder and is resumable: run it again and finished parts are skipped.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{report, run as run_rounds, Event, KeepSettings, RoundsConfig, RoundsReport, SelectSettings};
use crate::error::{Error, Result};
use crate::model::gguf::{import_gguf, WeightFormat};
use crate::sampling::Sampling;
use crate::tasks::{addition, addition_of_width, worked, write_jsonl, TaskSplit};
use crate::train::schedule::{Schedule, Shape};
use crate::train::{train, LoraConfig, Method, StepMetrics, TrainConfig};
use crate::{make_tiny_model, TinyLlama};

/// The model the demo improves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DemoModel {
    /// A tiny Llama made here, pre-trained from scratch on the labelled set.
    Tiny,
    /// A pretrained chat model: a `.gguf` file (imported as an f32 folder) or a model folder.
    Pretrained(PathBuf),
}

impl DemoModel {
    /// The sizes of the full demo, or of `--quick`.
    pub fn size(&self, quick: bool) -> DemoSize {
        match (self, quick) {
            (DemoModel::Tiny, false) => DemoSize::full(),
            (DemoModel::Tiny, true) => DemoSize::quick(),
            (DemoModel::Pretrained(_), false) => DemoSize::pretrained(),
            (DemoModel::Pretrained(_), true) => DemoSize::pretrained_quick(),
        }
    }
}

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

    /// A pretrained model's demo: rejection sampling alone, about 45 minutes on 2 CPU cores for
    /// SmolLM2-135M.
    pub fn pretrained() -> Self {
        DemoSize {
            human: 0,
            pool: 4_000,
            test: 200,
            pretrain_steps: 0,
            rounds: 3,
            prompts_per_round: 128,
            samples_per_prompt: 4,
            steps_per_round: 8,
        }
    }

    /// A couple of minutes (notebook 05 runs it in the test command): the loop end to end, too short to learn.
    pub fn pretrained_quick() -> Self {
        DemoSize {
            human: 0,
            pool: 200,
            test: 8,
            pretrain_steps: 0,
            rounds: 1,
            prompts_per_round: 8,
            samples_per_prompt: 2,
            steps_per_round: 1,
        }
    }
}

/// What the demo reports as it goes.
#[derive(Debug)]
pub enum DemoEvent<'a> {
    /// A part starts: "task", "model", "pretrain", "import", "filtered", "control".
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
    pub model: DemoModel,
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
fn rounds_config(dir: &Path, model: &DemoModel, size: &DemoSize, seed: u64, filtered: bool) -> RoundsConfig {
    let tiny = tiny_rounds_config(dir, size, seed, filtered);
    let DemoModel::Pretrained(_) = model else { return tiny };
    RoundsConfig {
        base: base_of(dir, model),
        replay: None,
        replay_fraction: 0.0,
        select: SelectSettings { prompts: size.prompts_per_round, clusters: 8, ..Default::default() },
        train: TrainConfig {
            method: Method::Lora,
            lora: LoraConfig {
                r: 16,
                alpha: 32.0,
                targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            },
            // 2 warm-up steps of the full demo's 8; none for the quick one's single step.
            schedule: Schedule {
                lr: 1e-3,
                warmup: (size.steps_per_round / 4).min(2),
                floor: 0.1,
                shape: Shape::Cosine,
                ..Default::default()
            },
            steps: Some(size.steps_per_round),
            batch: 8,
            // Packed rows of a few samples each (a sample is about 60 tokens), not of the model's whole context.
            max_len: Some(256),
            cpu: true,
            ..Default::default()
        },
        ..tiny
    }
}

/// Round 0's model.
fn base_of(dir: &Path, model: &DemoModel) -> PathBuf {
    match model {
        DemoModel::Tiny => dir.join("pretrained"),
        DemoModel::Pretrained(path) if path.is_dir() => path.clone(),
        DemoModel::Pretrained(_) => dir.join("base"),
    }
}

/// The tiny model's rounds: full training with replay of the labelled set.
pub(crate) fn tiny_rounds_config(dir: &Path, size: &DemoSize, seed: u64, filtered: bool) -> RoundsConfig {
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
pub fn run(
    dir: &Path,
    model: &DemoModel,
    size: &DemoSize,
    seed: u64,
    on_event: &mut dyn FnMut(DemoEvent),
) -> Result<DemoReport> {
    let started = std::time::Instant::now();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
    on_event(DemoEvent::Part("task"));
    if let DemoModel::Pretrained(path) = model {
        let task = addition_of_width(2, size.pool, size.test, seed)?;
        // The bare questions, answered by the model in its own words; the sums are the references.
        write_jsonl(&data.join("pool.jsonl"), &task.train)?;
        write_jsonl(&data.join("test.jsonl"), &task.test)?;
        let base = base_of(dir, model);
        if !base.exists() {
            on_event(DemoEvent::Part("import"));
            import_gguf(path, &base, WeightFormat::F32)?;
        }
    } else {
        let task = addition(2, size.human + size.pool, size.test, seed)?;
        pretrain_tiny(dir, &data, &task, size, seed, on_event)?;
    }
    let mut arm = |filtered: bool| -> Result<RoundsReport> {
        on_event(DemoEvent::Part(if filtered { "filtered" } else { "control" }));
        let config = rounds_config(dir, model, size, seed, filtered);
        run_rounds(&config, &mut |event| on_event(DemoEvent::Rounds { control: !filtered, event }))
    };
    let filtered = arm(true)?;
    let control = arm(false)?;
    let report = DemoReport {
        out: dir.to_path_buf(),
        model: model.clone(),
        size: size.clone(),
        filtered,
        control,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_summary(&report)?;
    Ok(report)
}

/// The tiny model's data (sums with their working), the model and its pre-training on the labelled set.
pub(crate) fn pretrain_tiny(
    dir: &Path,
    data: &Path,
    task: &TaskSplit,
    size: &DemoSize,
    seed: u64,
    on_event: &mut dyn FnMut(DemoEvent),
) -> Result<()> {
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
    Ok(())
}

/// `demo.md` and `demo.svg`: held-out accuracy per round, with and without the reward filter.
fn write_summary(r: &DemoReport) -> Result<()> {
    let series = vec![
        ("reward-filtered".to_string(), r.filtered.rounds.iter().map(|m| (m.round, m.held_out_accuracy)).collect()),
        ("control (no filter)".to_string(), r.control.rounds.iter().map(|m| (m.round, m.held_out_accuracy)).collect()),
    ];
    let svg = report::chart("whet demo: held-out accuracy per round", "held-out accuracy (%)", &series)?;
    whetstone_datasets::write::write_atomic(&r.out.join("demo.svg"), svg.as_bytes())?;
    let s = &r.size;
    let what = match &r.model {
        DemoModel::Tiny => format!(
            "2-digit sums answered with their working (\"What is 47 + 38?\" → \"7 + 8 = 15, carry 1. 4 + 3 + 1 = 8. \
             #### 85\"), checked by the GSM8K final-number verifier; a tiny Llama pre-trained from scratch on {} \
             labelled problems for {} steps",
            s.human, s.pretrain_steps
        ),
        DemoModel::Pretrained(path) => format!(
            "sums of two 2-digit numbers, asked bare (\"What is 47 + 38?\") and answered in the model's own words, \
             checked by the GSM8K final-number verifier; the pretrained model {} (no labelled data), LoRA (r 16, all \
             seven projections) each round, merged into the next round's model",
            path.display()
        ),
    };
    let mut text = format!(
        "# whet demo\n\n{what}, then {} rounds of self-training on a pool of {} unlabelled prompts ({} per round, {} \
         samples each), held-out set of {} problems answered greedily.\n\n| round | reward-filtered | control (no \
         filter) |\n|---|---|---|\n",
        s.rounds, s.pool, s.prompts_per_round, s.samples_per_prompt, s.test
    );
    for (round, f, c) in r.table() {
        let c = c.map_or(String::new(), |c| format!("{:.1}%", 100.0 * c));
        text.push_str(&format!("| {round} | {:.1}% | {c} |\n", 100.0 * f));
    }
    text.push_str(&format!(
        "\nBoth arms start from the same model, draw the same prompts and samples in round 1, and train the same \
         number of steps (the tiny model with the same share of labelled data); the control trains on every sample, the \
         filtered arm only on the best sample of each prompt that the verifier accepts. The rounds' own reports: \
         `filtered/report.md`, `control/report.md`. Took {:.0} s.\n",
        r.seconds
    ));
    Ok(whetstone_datasets::write::write_atomic(&r.out.join("demo.md"), text.as_bytes())?)
}
