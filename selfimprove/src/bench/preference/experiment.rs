//! The benchmark itself (it generates: the `llm` feature).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use serde::Serialize;
use whetstone_datasets::schema::columns;
use whetstone_datasets::{read_all, run_stage, ReadOptions};

use super::{ArmResult, RewardModelResult, ARMS};
use crate::bench::selection::MeanSd;
use crate::engine::generate::{Counter, GenerateStep, OnEngine};
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::folder::{read_json, write_json};
use crate::keep::pairs;
use crate::prompt::PromptMode;
use crate::reward::stage::{RewardSpec, RewardStep};
use crate::rounds::demo::{pretrain_tiny, tiny_rounds_config, DemoEvent, DemoSize};
use crate::rounds::{run as run_rounds, Event, KeepSettings, Preference, PreferenceSettings, RoundsConfig};
use crate::sampling::Sampling;
use crate::tasks::addition;
use crate::train::schedule::{Schedule, Shape};
use crate::train::{train, Method, Objective, StepMetrics, TrainConfig};
use crate::ModelFolder;

/// The benchmark's sizes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreferenceSize {
    pub demo: DemoSize,
    pub seeds: usize,
    /// Samples per prompt for the reward model's data and for best-of-N.
    pub samples: usize,
    /// DPO's steps and peak learning rate each round (after the round's SFT).
    pub dpo_steps: usize,
    pub dpo_lr: f64,
    pub rm_steps: usize,
}

impl PreferenceSize {
    /// The demo's own sizes, 3 seeds.
    pub fn full() -> Self {
        PreferenceSize { demo: DemoSize::full(), seeds: 3, samples: 4, dpo_steps: 50, dpo_lr: 5e-4, rm_steps: 150 }
    }

    /// About two minutes: every table row, too small to tell arms apart.
    pub fn quick() -> Self {
        PreferenceSize {
            demo: DemoSize { rounds: 1, ..DemoSize::quick() },
            seeds: 1,
            samples: 4,
            dpo_steps: 6,
            dpo_lr: 5e-4,
            rm_steps: 10,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct PreferenceReport {
    pub out: PathBuf,
    pub size: PreferenceSize,
    pub reward_models: Vec<RewardModelResult>,
    pub arms: Vec<ArmResult>,
    pub seconds: f64,
}

/// What the benchmark reports as it goes.
#[derive(Debug)]
pub enum PreferenceEvent<'a> {
    Part(String),
    Train { label: String, metrics: &'a StepMetrics, steps: usize },
    RewardModel(&'a RewardModelResult),
    Arm(&'a ArmResult),
}

/// A float column of every batch (Float32 or Float64), nulls as NaN.
fn floats(batches: &[RecordBatch], name: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for b in batches {
        let c = b.column_by_name(name).ok_or_else(|| Error::Invalid(format!("no column {name}")))?;
        if let Some(c) = c.as_primitive_opt::<arrow::datatypes::Float32Type>() {
            out.extend((0..c.len()).map(|i| if c.is_valid(i) { c.value(i) as f64 } else { f64::NAN }));
        } else if let Some(c) = c.as_primitive_opt::<arrow::datatypes::Float64Type>() {
            out.extend((0..c.len()).map(|i| if c.is_valid(i) { c.value(i) } else { f64::NAN }));
        } else {
            return Err(Error::Invalid(format!("column {name} is {}, not a float", c.data_type())));
        }
    }
    Ok(out)
}

fn prompt_ids(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(|i| crate::prompt::column_or_meta(b, columns::PROMPT_ID, i).unwrap_or_default())
        })
        .collect()
}

/// The first `n` rows of a JSONL file (from `skip`) into `to`.
fn slice_jsonl(from: &Path, to: &Path, skip: usize, n: usize) -> Result<()> {
    let text = std::fs::read_to_string(from).map_err(|e| Error::io(from, e))?;
    let lines: String = text.lines().skip(skip).take(n).map(|l| format!("{l}\n")).collect();
    std::fs::write(to, lines).map_err(|e| Error::io(to, e))
}

/// `samples` answers from `engine` to each prompt of `prompts`, scored by the verifier, into `scored`.
fn sample_and_verify(engine: &Engine, prompts: &Path, scored: &Path, samples: usize, seed: u64) -> Result<()> {
    if scored.exists() {
        return Ok(());
    }
    let raw =
        scored.with_file_name(format!("{}-samples.parquet", scored.file_stem().unwrap_or_default().to_string_lossy()));
    let sampling = Sampling { n: samples, temperature: 0.8, max_tokens: 48, seed, ..Default::default() };
    let step = GenerateStep { sampling, mode: PromptMode::Chat };
    run_stage(
        &OnEngine { step: &step, engine, counter: &Counter::default() },
        prompts,
        &raw,
        ReadOptions::default(),
        |_, _| {},
    )?;
    RewardStep { rewards: vec![RewardSpec::parse("gsm8k")?] }.run(&raw, scored, ReadOptions::default())?;
    Ok(())
}

/// Step 2: the reward model, its AUC and best-of-N.
fn reward_model(
    dir: &Path,
    size: &PreferenceSize,
    seed: u64,
    on_event: &mut dyn FnMut(PreferenceEvent),
) -> Result<RewardModelResult> {
    let record = dir.join("rm-result.json");
    if let Ok(v) = read_json(&record) {
        return Ok(serde_json::from_value(v)?);
    }
    let rm_dir = dir.join("rm-data");
    std::fs::create_dir_all(&rm_dir).map_err(|e| Error::io(&rm_dir, e))?;
    let human = dir.join("data/human.jsonl");
    let held = size.demo.human / 5;
    let (train_prompts, held_prompts) = (rm_dir.join("train-prompts.jsonl"), rm_dir.join("held-prompts.jsonl"));
    slice_jsonl(&human, &train_prompts, 0, size.demo.human - held)?;
    slice_jsonl(&human, &held_prompts, size.demo.human - held, held)?;
    on_event(PreferenceEvent::Part(format!("seed {seed} · reward model: sampling")));
    let pretrained = dir.join("pretrained");
    let engine = Engine::load(ModelFolder::open(&pretrained)?, EngineOptions::on(true))?;
    let (train_scored, held_scored, test_scored) =
        (rm_dir.join("train.parquet"), rm_dir.join("held.parquet"), rm_dir.join("test.parquet"));
    sample_and_verify(&engine, &train_prompts, &train_scored, size.samples, seed ^ 1)?;
    sample_and_verify(&engine, &held_prompts, &held_scored, size.samples, seed ^ 2)?;
    sample_and_verify(&engine, &dir.join("data/test.jsonl"), &test_scored, size.samples, seed ^ 3)?;
    drop(engine);
    let held_pairs = rm_dir.join("held-pairs.jsonl");
    let (held_n, _) = pairs(&held_scored, &held_pairs, ReadOptions::default())?;

    let rm = dir.join("rm");
    let config = TrainConfig {
        base: pretrained.clone(),
        data: train_scored.clone(),
        eval: Some(held_pairs.clone()),
        out: rm.clone(),
        method: Method::Full,
        objective: Objective::Reward,
        schedule: Schedule { lr: 1e-3, warmup: 5, floor: 0.1, shape: Shape::Cosine, ..Default::default() },
        steps: Some(size.rm_steps),
        batch: 8,
        seed,
        cpu: true,
        // An empty sample has no response to score: counted, not fatal.
        on_error: crate::train::OnError::Skip,
        ..Default::default()
    };
    let report = if rm.exists() {
        serde_json::from_value(crate::train::read_record(&rm)?["report"].clone())?
    } else {
        on_event(PreferenceEvent::Part(format!("seed {seed} · reward model: training")));
        let label = format!("seed {seed} · reward model");
        train(&config, &mut |metrics, steps| {
            on_event(PreferenceEvent::Train { label: label.clone(), metrics, steps });
            true
        })?
    };
    let report: crate::train::TrainReport = report;

    // Best-of-N on the test prompts: the reward model's scores beside the verifier's and the likelihoods.
    on_event(PreferenceEvent::Part(format!("seed {seed} · best-of-N")));
    let rm_scored = rm_dir.join("test-rm.parquet");
    if !rm_scored.exists() {
        RewardStep { rewards: vec![RewardSpec::parse(&format!("rm:{}", rm.display()))?] }.run(
            &test_scored,
            &rm_scored,
            ReadOptions::default(),
        )?;
    }
    let (verified, _) = read_all(&test_scored, ReadOptions::default())?;
    let (by_rm, _) = read_all(&rm_scored, ReadOptions::default())?;
    let right = floats(&verified, columns::REWARD)?;
    let rm_score = floats(&by_rm, columns::REWARD)?;
    // The generator's mean log-probability per response token.
    let tokens: Vec<f64> = verified
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(columns::RESPONSE_TOKENS)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt32Type>().cloned());
            (0..b.num_rows()).map(move |i| c.as_ref().map_or(1.0, |c| c.value(i).max(1) as f64))
        })
        .collect();
    let likelihood: Vec<f64> =
        floats(&verified, columns::LOG_LIKELIHOOD)?.iter().zip(&tokens).map(|(l, n)| l / n).collect();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, id) in prompt_ids(&verified).into_iter().enumerate() {
        groups.entry(id).or_default().push(i);
    }
    let pick = |score: &dyn Fn(usize) -> f64| -> f64 {
        let hits = groups
            .values()
            .filter(|g| {
                let best =
                    g.iter().copied().max_by(|&a, &b| score(a).total_cmp(&score(b)).then(b.cmp(&a))).expect("a sample");
                right[best] >= 1.0
            })
            .count();
        hits as f64 / groups.len().max(1) as f64
    };
    let best_of_n = BTreeMap::from([
        ("reward model".to_string(), pick(&|i| rm_score[i])),
        ("likelihood".to_string(), pick(&|i| likelihood[i])),
        // Samples are drawn independently: a prompt's first is a random pick (ties go to the lower index).
        ("random (first sample)".to_string(), pick(&|_| 0.0)),
        ("verifier (pass@N)".to_string(), pick(&|i| right[i])),
    ]);
    let result = RewardModelResult {
        seed,
        train_samples: report.examples,
        held_out_pairs: held_n,
        auc: report.eval_pairs_after.map_or(f64::NAN, |m| m.accuracy),
        best_of_n,
    };
    write_json(&record, &serde_json::to_value(&result)?)?;
    Ok(result)
}

/// An arm's folder: its name, and for DPO with other than the default settings, those too (so a run with
/// another DPO learning rate adds its arm beside the others, which it reads back).
fn arm_folder(size: &PreferenceSize, arm: &str) -> String {
    let full = PreferenceSize::full();
    if arm == "sft+dpo" && (size.dpo_lr != full.dpo_lr || size.dpo_steps != full.dpo_steps) {
        return format!("sft+dpo-lr{}-steps{}", size.dpo_lr, size.dpo_steps);
    }
    arm.to_string()
}

/// One arm's rounds settings.
fn arm_config(dir: &Path, size: &PreferenceSize, seed: u64, arm: &str) -> RoundsConfig {
    let filtered = arm != "control";
    let out = dir.join(arm_folder(size, arm));
    let mut config = RoundsConfig { out, ..tiny_rounds_config(dir, &size.demo, seed, filtered) };
    match arm {
        "sft+dpo" => {
            config.preference = PreferenceSettings {
                method: Preference::Dpo,
                steps: Some(size.dpo_steps),
                lr: Some(size.dpo_lr),
                ..Default::default()
            }
        }
        "sft-rm" => {
            config.reward = vec![format!("rm:{}", dir.join("rm").display())];
            config.eval_reward = vec!["gsm8k".into()];
            // Best-of-N by the reward model: its scores are logits with no fixed zero, so no floor.
            config.keep = KeepSettings { by: "best-of-n".into(), min_reward: 0.0 };
        }
        _ => {}
    }
    config
}

/// Runs the benchmark into `out`.
pub fn run(out: &Path, size: &PreferenceSize, on_event: &mut dyn FnMut(PreferenceEvent)) -> Result<PreferenceReport> {
    let started = std::time::Instant::now();
    let (mut reward_models, mut arms) = (Vec::new(), Vec::new());
    for seed in 0..size.seeds as u64 {
        let dir = out.join(format!("seed-{seed}"));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
        on_event(PreferenceEvent::Part(format!("seed {seed} · data and pre-training")));
        let task = addition(2, size.demo.human + size.demo.pool, size.demo.test, seed)?;
        pretrain_tiny(&dir, &data, &task, &size.demo, seed, &mut |e| {
            if let DemoEvent::Pretrain { metrics, steps } = e {
                on_event(PreferenceEvent::Train { label: format!("seed {seed} · pre-training"), metrics, steps })
            }
        })?;
        let rm = reward_model(&dir, size, seed, on_event)?;
        on_event(PreferenceEvent::RewardModel(&rm));
        reward_models.push(rm);
        for arm in ARMS {
            on_event(PreferenceEvent::Part(format!("seed {seed} · {arm}")));
            let config = arm_config(&dir, size, seed, arm);
            let label = format!("seed {seed} · {arm}");
            let report = run_rounds(&config, &mut |event| {
                if let Event::Train { round, metrics, steps } = event {
                    on_event(PreferenceEvent::Train { label: format!("{label} · round {round}"), metrics, steps })
                }
            })?;
            let result = ArmResult {
                seed,
                arm: arm.to_string(),
                accuracy: report.rounds.iter().map(|m| m.held_out_accuracy).collect(),
            };
            on_event(PreferenceEvent::Arm(&result));
            arms.push(result);
        }
    }
    let report = PreferenceReport {
        out: out.to_path_buf(),
        size: size.clone(),
        reward_models,
        arms,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_summary(&report)?;
    Ok(report)
}

/// The per-seed differences `a − b` (arms of one seed share its model, data and round-1 samples), their mean ±
/// spread, and whether the mean exceeds twice its standard error (with one seed nothing can be told from noise).
fn paired(a: &[f64], b: &[f64]) -> (MeanSd, bool) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let m = MeanSd::of(&d);
    let n = d.len();
    (m, n > 1 && m.mean.abs() > 2.0 * m.sd / ((n - 1) as f64).sqrt())
}

/// `preference.md`: the four arms per round, the reward model's AUC and best-of-N.
fn write_summary(r: &PreferenceReport) -> Result<()> {
    let seeds = r.size.seeds;
    let rounds = r.size.demo.rounds;
    let of = |arm: &str, round: usize| -> Vec<f64> {
        r.arms.iter().filter(|a| a.arm == arm).filter_map(|a| a.accuracy.get(round).copied()).collect()
    };
    let pct = |m: MeanSd| format!("{:.1}% ± {:.1}", 100.0 * m.mean, 100.0 * m.sd);
    let mut text = format!(
        "# whet bench preference\n\nThe tiny-model demo task, {seeds} seeds; held-out accuracy (GSM8K verifier, {} \
         sums) per round, mean ± spread (population sd) over seeds. Each round: {} prompts × {} samples, {} SFT \
         steps; sft+dpo adds {} DPO steps (β 0.1, RPO α 1, lr {}) on the round's pairs.\n\n| round | {} |\n|---|{}\n",
        r.size.demo.test,
        r.size.demo.prompts_per_round,
        r.size.demo.samples_per_prompt,
        r.size.demo.steps_per_round,
        r.size.dpo_steps,
        r.size.dpo_lr,
        ARMS.join(" | "),
        "---|".repeat(ARMS.len())
    );
    for round in 0..=rounds {
        let cells: Vec<String> = ARMS.iter().map(|arm| pct(MeanSd::of(&of(arm, round)))).collect();
        text.push_str(&format!("| {round} | {} |\n", cells.join(" | ")));
    }
    text.push_str(&format!(
        "\nAfter round {rounds}, against sft at the same seed (mean ± spread of the per-seed difference; it exceeds the \
         noise where the mean is more than twice its standard error):\n\n"
    ));
    for arm in &ARMS[1..] {
        let (d, exceeds) = paired(&of(arm, rounds), &of("sft", rounds));
        let verdict = if exceeds { "exceeds the noise" } else { "within the noise" };
        text.push_str(&format!("- {arm}: {:+.1} ± {:.1} points, {verdict}\n", 100.0 * d.mean, 100.0 * d.sd));
    }
    text.push_str("\nThe reward model (listwise, on the pre-trained model's own samples of the labelled prompts):\n\n| seed | samples trained on | held-out pairs | AUC | best-of-N: reward model | likelihood | random | verifier (pass@N) |\n|---|---|---|---|---|---|---|---|\n");
    for m in &r.reward_models {
        let b = |k: &str| format!("{:.1}%", 100.0 * m.best_of_n.get(k).copied().unwrap_or(f64::NAN));
        text.push_str(&format!(
            "| {} | {} | {} | {:.3} | {} | {} | {} | {} |\n",
            m.seed,
            m.train_samples,
            m.held_out_pairs,
            m.auc,
            b("reward model"),
            b("likelihood"),
            b("random (first sample)"),
            b("verifier (pass@N)")
        ));
    }
    text.push_str(&format!("\nTook {:.0} s. Each arm's rounds: `seed-<s>/<arm>/report.md`.\n", r.seconds));
    whetstone_datasets::write::write_atomic(&r.out.join("preference.md"), text.as_bytes())?;
    let lines: String =
        r.arms.iter().map(|a| serde_json::to_string(a).map(|l| l + "\n")).collect::<std::result::Result<_, _>>()?;
    Ok(whetstone_datasets::write::write_atomic(&r.out.join("arms.jsonl"), lines.as_bytes())?)
}
