//! The loop itself: steps that appear whole or not at all, skipped when an earlier run finished them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, Float32Array, UInt32Array};
use arrow::datatypes::Float32Type;
use whetstone_curation::cluster::Seeding;
use whetstone_curation::pipeline::{run_steps, step_file, ClusterStep, EmbedStep, Step as CurationStep};
use whetstone_curation::select::{select_dataset, Budget, Method as SelectMethod, SelectOptions, SelectResults};
use whetstone_datasets::schema::{self, columns};
use whetstone_datasets::stage::with_column;
use whetstone_datasets::{read_all, run_stage, Manifest, ReadOptions, Rows, Stage};

use super::first_error::{first_error_pairs, EngineRollOut, FirstErrorReport};
use super::{curve, report, Event, Pairing, Preference, RoundMetrics, RoundsConfig, RoundsReport, TrainFrom};
use crate::engine::generate::{Counter, GenerateResults, GenerateStep, OnEngine};
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::folder::{read_json, write_folder};
use crate::keep::{pairs, read_pairs, Keep, KeepResults, KeepStep};
use crate::prompt::{column_or_meta, row_response, text_at};
use crate::reward::stage::{RewardResults, RewardSpec, RewardStep};
use crate::sampling::Sampling;
use crate::train::schedule::Schedule;
use crate::train::{lora, read_record, train, Method, Objective, StepMetrics, TrainConfig};
use crate::ModelFolder;

impl RoundsConfig {
    fn distill_alpha(&self, round: usize) -> f64 {
        self.distill.get(round - 1).or(self.distill.last()).copied().unwrap_or(1.0)
    }

    /// The seed of one step of one round.
    fn seed_of(&self, round: usize, step: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(
            &[self.seed.to_le_bytes(), (round as u64).to_le_bytes(), step.to_le_bytes()].concat(),
        )
    }
}

const SETTINGS_FILE: &str = "rounds.json";

/// The loop's state between steps: the engine of the model that generates now.
struct Runner<'a> {
    config: &'a RoundsConfig,
    engine: Option<Engine>,
    on_event: &'a mut dyn FnMut(Event),
}

fn round_dir(config: &RoundsConfig, round: usize) -> PathBuf {
    config.out.join(format!("round-{round}"))
}

/// The model of round `round` (0: the base).
fn model_of(config: &RoundsConfig, round: usize) -> PathBuf {
    if round == 0 {
        return config.base.clone();
    }
    let dir = round_dir(config, round);
    // Full training writes the model where it trains (DPO after SFT in `prefer`); a round that kept nothing to
    // train on (or LoRA) leaves its model in `model`.
    match config.train.method {
        Method::Full if dir.join("prefer/config.json").is_file() => dir.join("prefer"),
        Method::Full if dir.join("train/config.json").is_file() => dir.join("train"),
        _ => dir.join("model"),
    }
}

fn read_options() -> ReadOptions {
    ReadOptions::default()
}

fn manifest(path: &Path) -> Result<Manifest> {
    Ok(Manifest::read_beside(path)?)
}

impl Runner<'_> {
    /// Runs `fill` into `OUT/round-<r>/<step>/` unless an earlier run finished it.
    fn step(
        &mut self,
        round: usize,
        step: &'static str,
        fill: impl FnOnce(&mut Self, &Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dir = round_dir(self.config, round).join(step);
        if dir.is_dir() {
            (self.on_event)(Event::Skipped { round, step });
            return Ok(dir);
        }
        (self.on_event)(Event::Step { round, step });
        let parent = dir.parent().expect("a round folder");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        write_folder(&dir, |partial| fill(self, partial))?;
        Ok(dir)
    }

    /// The engine of `model`, loaded once while it is the one generating.
    fn engine(&mut self, model: &Path) -> Result<&Engine> {
        if self.engine.as_ref().is_none_or(|e| e.folder().path != model) {
            self.engine = None; // one model in memory at a time
            let options = EngineOptions::on(self.config.train.cpu);
            self.engine = Some(Engine::load(ModelFolder::open(model)?, options)?);
        }
        Ok(self.engine.as_ref().expect("loaded above"))
    }

    fn rewards(&self) -> Result<RewardStep> {
        Ok(RewardStep { rewards: self.config.reward.iter().map(|r| RewardSpec::parse(r)).collect::<Result<_>>()? })
    }

    /// The rewards of held-out answers: `eval_reward`, else the rounds' own.
    fn eval_rewards(&self) -> Result<RewardStep> {
        let names = if self.config.eval_reward.is_empty() { &self.config.reward } else { &self.config.eval_reward };
        Ok(RewardStep { rewards: names.iter().map(|r| RewardSpec::parse(r)).collect::<Result<_>>()? })
    }

    /// Greedy answers of `model` to the held-out prompts, scored: (accuracy, mean reward).
    fn eval(&mut self, round: usize, model: &Path) -> Result<(f64, f64)> {
        let dir = self.step(round, "eval", |runner, dir| {
            let sampling =
                Sampling { n: 1, temperature: 0.0, max_tokens: runner.config.eval_max_tokens, ..Default::default() };
            let step = GenerateStep { sampling, mode: runner.config.prompt_mode };
            let eval = runner.config.eval.clone();
            let answers = dir.join("answers.parquet");
            let generation = OnEngine { step: &step, engine: runner.engine(model)?, counter: &Counter::default() };
            run_stage(&generation, &eval, &answers, read_options(), |_, _| {})?;
            runner.eval_rewards()?.run(&answers, &dir.join("scored.parquet"), read_options())?;
            Ok(())
        })?;
        let r: RewardResults = manifest(&dir.join("scored.parquet"))?.results()?;
        Ok((r.full_reward as f64 / r.rows.max(1) as f64, r.mean_reward))
    }

    /// The pool with embeddings and clusters, made once for the whole run.
    fn pool(&mut self) -> Result<PathBuf> {
        let dir = self.step(0, "pool", |runner, dir| {
            let config = runner.config;
            let embedded = dir.join("embedded.parquet");
            let embed = EmbedStep { dim: 256, ..Default::default() };
            CurationStep::Embed(embed).run(&config.prompts, &embedded, read_options(), config.seed, |_| {})?;
            // Clusters to select from: plain k-means++ seeds (greedy ones spread kMQ's picks less).
            let cluster = ClusterStep { k: config.select.clusters, seeding: Seeding::Plain, ..Default::default() };
            CurationStep::Cluster(cluster).run(
                &embedded,
                &dir.join("pool.parquet"),
                read_options(),
                config.seed,
                |_| {},
            )?;
            std::fs::remove_file(&embedded).map_err(|e| Error::io(&embedded, e))?;
            let _ = std::fs::remove_file(whetstone_datasets::write::manifest_path(&embedded));
            Ok(())
        })?;
        Ok(dir.join("pool.parquet"))
    }

    /// Round `round`'s prompts. Iterative selection first marks the pool with the rounds that chose each
    /// prompt and last round's mean reward of each.
    fn select(&mut self, round: usize) -> Result<PathBuf> {
        let config = self.config;
        if config.select.method == "all" {
            return Ok(config.prompts.clone());
        }
        let pool = self.pool()?;
        let previous_pool =
            if round == 1 { pool.clone() } else { round_dir(config, round - 1).join("select/pool.parquet") };
        let dir = self.step(round, "select", |_, dir| {
            let marked = dir.join("pool.parquet");
            let mut weights = None;
            if round == 1 {
                mark_pool(&previous_pool, None, &marked, 0)?;
            } else {
                let last = round_dir(config, round - 1);
                let selected = last.join("select/prompts.parquet");
                mark_pool(&previous_pool, Some((&selected, &last.join("reward/scored.parquet"))), &marked, round - 1)?;
                // A run folder from before first-round weights were fixed holds NaN (null) weights there.
                let last_select = manifest(&selected)?.results::<SelectResults>().map_err(|e| {
                    Error::Invalid(format!(
                        "{}: {e}; delete that round's select folder to select again",
                        selected.display()
                    ))
                })?;
                weights = last_select.cluster_weights;
            }
            let method = if config.select.method == "random" { SelectMethod::Random } else { SelectMethod::Iterative };
            let mut opts = SelectOptions::new(method, Budget::Count(config.select.prompts), config.seed_of(round, 1));
            opts.round = round;
            opts.previous_weights = weights;
            opts.update = config.select.update;
            select_dataset(&marked, &dir.join("prompts.parquet"), &opts, read_options(), |_| {})?;
            Ok(())
        })?;
        Ok(dir.join("prompts.parquet"))
    }

    /// Runs the trainer, each of its steps an event of round `round`.
    fn train(&mut self, round: usize, config: &TrainConfig) -> Result<()> {
        let on_event = &mut *self.on_event;
        train(config, &mut |m, steps| {
            on_event(Event::Train { round, metrics: m, steps });
            true
        })?;
        Ok(())
    }

    /// `adapter` merged into `base` as the round's folder `name`.
    fn merged(&mut self, round: usize, name: &'static str, base: &Path, adapter: &Path) -> Result<PathBuf> {
        let model = round_dir(self.config, round).join(name);
        if model.is_dir() {
            (self.on_event)(Event::Skipped { round, step: name });
        } else {
            (self.on_event)(Event::Step { round, step: name });
            lora::merge(base, adapter, &model)?;
        }
        Ok(model)
    }

    /// DPO on the round's `pairs` from `sft_model`, its own reference (LoRA: the adapter off): the round's
    /// model, the pairs trained on, and the last DPO step's metrics.
    fn prefer(&mut self, round: usize, sft_model: &Path, pairs: &Path) -> Result<(PathBuf, u64, Option<StepMetrics>)> {
        let config = self.config;
        let trained = round_dir(config, round).join("prefer");
        if trained.is_dir() {
            (self.on_event)(Event::Skipped { round, step: "prefer" });
        } else {
            (self.on_event)(Event::Step { round, step: "prefer" });
            let dpo = TrainConfig {
                base: sft_model.to_path_buf(),
                data: pairs.to_path_buf(),
                eval: None,
                out: trained.clone(),
                objective: Objective::Dpo,
                beta: config.preference.beta,
                rpo_alpha: config.preference.rpo_alpha,
                steps: config.preference.steps.or(config.train.steps),
                schedule: Schedule {
                    lr: config.preference.lr.unwrap_or(config.train.schedule.lr),
                    ..config.train.schedule
                },
                prompt_mode: config.prompt_mode,
                seed: config.seed_of(round, 6),
                // Pairs are the round's own samples: one too long for a row is skipped and counted, not fatal.
                on_error: crate::train::OnError::Skip,
                // SFT's pulls toward other models: DPO's own is β.
                kl_beta: 0.0,
                teacher: None,
                distill_alpha: 1.0,
                train_on_prompt: false,
                // An order is SFT's: DPO takes its pairs at random.
                order: crate::train::order::Order::Random,
                skill_column: None,
                ..config.train.clone()
            };
            self.train(round, &dpo)?;
        }
        let metrics: Vec<StepMetrics> = crate::folder::read_json_lines(&trained.join("metrics.jsonl"))?;
        let used = read_record(&trained)?["report"]["examples"].as_u64().unwrap_or(0);
        let model = match config.train.method {
            Method::Full => trained,
            Method::Lora => self.merged(round, "model", sft_model, &trained)?,
        };
        Ok((model, used, metrics.last().cloned()))
    }

    fn round(&mut self, round: usize, started: Instant) -> Result<RoundMetrics> {
        let config = self.config;
        let generator = model_of(config, round - 1);
        let prompts = self.select(round)?;

        let dir = self.step(round, "generate", |runner, dir| {
            let sampling = Sampling { seed: config.seed_of(round, 2), ..config.generate.clone() };
            let step = GenerateStep { sampling, mode: config.prompt_mode };
            let out = dir.join("samples.parquet");
            let generation = OnEngine { step: &step, engine: runner.engine(&generator)?, counter: &Counter::default() };
            run_stage(&generation, &prompts, &out, read_options(), |_, _| {})?;
            Ok(())
        })?;
        let samples = dir.join("samples.parquet");
        let generated = manifest(&samples)?;

        let dir = self.step(round, "reward", |runner, dir| {
            runner.rewards()?.run(&samples, &dir.join("scored.parquet"), read_options())?;
            Ok(())
        })?;
        let scored = dir.join("scored.parquet");
        let rewarded = manifest(&scored)?;

        let dir = self.step(round, "keep", |_, dir| {
            let step = KeepStep { keep: Keep::parse(&config.keep.by)?, min_reward: config.keep.min_reward };
            step.run(&scored, &dir.join("kept.parquet"), read_options())?;
            pairs(&scored, &dir.join("pairs.jsonl"), read_options())?;
            Ok(())
        })?;
        let kept = dir.join("kept.parquet");
        let kept_manifest = manifest(&kept)?;
        let mut pairs_file = dir.join("pairs.jsonl");
        let pairs_written = std::fs::read_to_string(&pairs_file).map_or(0, |t| t.lines().count() as u64);
        let mut first_error = FirstErrorReport::default();
        if config.preference.pairing == Pairing::FirstError && pairs_written > 0 {
            let made_from = pairs_file.clone();
            let dir = self.step(round, "first-error", |runner, dir| {
                let pairs = read_pairs(&made_from)?;
                let references = references_of(&scored)?;
                let reward = runner.rewards()?.reward()?;
                let sampling = Sampling { seed: config.seed_of(round, 7), ..config.generate.clone() };
                let model =
                    EngineRollOut { engine: runner.engine(&generator)?, sampling: &sampling, mode: config.prompt_mode };
                let (made, report) = first_error_pairs(
                    &model,
                    reward.as_ref(),
                    &references,
                    &pairs,
                    &sampling,
                    config.keep.min_reward,
                    config.preference.rollouts,
                )?;
                let lines = crate::folder::json_lines(&made)?;
                whetstone_datasets::write::write_atomic(&dir.join("pairs.jsonl"), lines.as_bytes())?;
                crate::folder::write_json(&dir.join("first-error.json"), &serde_json::to_value(&report)?)
            })?;
            first_error = serde_json::from_value(read_json(&dir.join("first-error.json"))?)?;
            pairs_file = dir.join("pairs.jsonl");
        }

        let dir = self.step(round, "curate", |_, dir| {
            // Nothing kept: nothing to curate (the stages' reader refuses an empty input).
            let stages = if kept_manifest.rows.rows_out == 0 { &[][..] } else { &config.curate[..] };
            let seed = config.seed_of(round, 3);
            run_steps(stages, &kept, read_options(), seed, |i| step_file(dir, i, &stages[i]), |_, _, _| {})?;
            Ok(())
        })?;
        let curated = curated_of(config, round, &dir)?;

        let dir = self.step(round, "mix", |_, dir| mix(config, round, &curated, dir))?;
        let mix_record = read_json(&dir.join("mix.json"))?;
        let (train_rows, replay_rows) =
            (mix_record["rows"].as_u64().unwrap_or(0), mix_record["replay_rows"].as_u64().unwrap_or(0));

        // Training: the trainer writes its output whole and resumes from its checkpoint beside it.
        let base = match config.from {
            TrainFrom::Previous => generator.clone(),
            TrainFrom::Base => config.base.clone(),
        };
        let trained = round_dir(config, round).join("train");
        let mut train_loss = None;
        let mut held_out_loss = None;
        if train_rows == 0 {
            // Nothing survived the filter: this round's model is its starting model.
            if !trained.exists() {
                write_folder(&trained, |d| {
                    std::fs::write(d.join("no-data.txt"), "no sample passed the filter; the model is unchanged\n")
                        .map_err(|e| Error::io(d, e))
                })?;
            }
        } else if trained.is_dir() {
            (self.on_event)(Event::Skipped { round, step: "train" });
        } else {
            (self.on_event)(Event::Step { round, step: "train" });
            let alpha = config.distill_alpha(round);
            let train_config = TrainConfig {
                base: base.clone(),
                data: dir.join("train.jsonl"),
                eval: Some(config.eval.clone()),
                out: trained.clone(),
                prompt_mode: config.prompt_mode,
                seed: config.seed_of(round, 4),
                distill_alpha: alpha,
                teacher: if alpha < 1.0 {
                    Some(config.train.teacher.clone().unwrap_or_else(|| generator.clone()))
                } else {
                    None
                },
                ..config.train.clone()
            };
            self.train(round, &train_config)?;
        }
        // The trainer's record (none where the round kept nothing to train on).
        if let Ok(record) = read_record(&trained) {
            train_loss = record["report"]["final_loss"].as_f64();
            held_out_loss = record["report"]["eval_loss_after"].as_f64();
        }

        // With DPO to follow, the SFT model is a step on the way (`sft-model`); else it is the round's model.
        let dpo = config.preference.method == Preference::Dpo && pairs_written > 0;
        let sft_model = if train_rows == 0 && dpo {
            generator.clone()
        } else if train_rows == 0 {
            // Unchanged: the next round generates with the same model.
            let model = round_dir(config, round).join("model");
            if !model.exists() {
                copy_model(&generator, &model)?;
            }
            model
        } else {
            match config.train.method {
                Method::Full => trained.clone(),
                Method::Lora => self.merged(round, if dpo { "sft-model" } else { "model" }, &base, &trained)?,
            }
        };
        let (model, dpo_pairs, dpo_step) =
            if dpo { self.prefer(round, &sft_model, &pairs_file)? } else { (sft_model, 0, None) };
        let (accuracy, eval_reward) = self.eval(round, &model)?;

        let samples_n = generated.rows.rows_out;
        let n = config.generate.n.max(1) as f64;
        let prompts_n = generated.rows.rows_in - generated.rows.rows_rejected;
        let pass = kept_manifest.results::<KeepResults>()?.at_least_min_reward;
        let distinct = generated.results::<GenerateResults>()?.distinct_samples;
        Ok(RoundMetrics {
            round,
            model,
            prompts: prompts_n,
            samples: samples_n,
            reward_mean: rewarded.results::<RewardResults>()?.mean_reward,
            pass_rate: pass as f64 / samples_n.max(1) as f64,
            kept: kept_manifest.rows.rows_out,
            kept_fraction: kept_manifest.rows.rows_out as f64 / samples_n.max(1) as f64,
            distinct: distinct as f64 / (prompts_n.max(1) as f64 * n),
            diversity: cluster_coverage(&kept, config.select.clusters)?,
            pairs: pairs_written,
            replay_rows,
            train_rows,
            train_loss,
            held_out_loss,
            dpo_pairs,
            dpo_loss: dpo_step.as_ref().map(|m| m.loss),
            dpo_margin: dpo_step.as_ref().and_then(|m| m.pairs.map(|p| p.margin)),
            dpo_accuracy: dpo_step.as_ref().and_then(|m| m.pairs.map(|p| p.accuracy)),
            first_error_rollouts: first_error.rollouts,
            first_error_seconds: first_error.seconds,
            held_out_accuracy: accuracy,
            held_out_reward: eval_reward,
            predicted_gain: None,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The samples round `round` trains on: the last curation stage's output in its `curate` folder, or the kept
/// samples themselves when there are no stages or nothing was kept.
fn curated_of(config: &RoundsConfig, round: usize, curate_dir: &Path) -> Result<PathBuf> {
    let kept = round_dir(config, round).join("keep/kept.parquet");
    match config.curate.last() {
        Some(last) if manifest(&kept)?.rows.rows_out > 0 => Ok(step_file(curate_dir, config.curate.len() - 1, last)),
        _ => Ok(kept),
    }
}

/// The rows of a dataset a step wrote: none when its manifest says it holds none (a round whose filter kept
/// nothing), without asking the reader, which refuses an empty file as an input.
fn rows_of(path: &Path) -> Result<Vec<arrow::array::RecordBatch>> {
    if manifest(path)?.rows.rows_out == 0 {
        return Ok(Vec::new());
    }
    Ok(read_all(path, read_options())?.0)
}

/// Each prompt's reference answer in scored samples, by prompt id.
fn references_of(scored: &Path) -> Result<std::collections::HashMap<String, String>> {
    let mut references = std::collections::HashMap::new();
    for b in rows_of(scored)? {
        for row in 0..b.num_rows() {
            if let (Some(id), Some(reference)) =
                (column_or_meta(&b, columns::PROMPT_ID, row), column_or_meta(&b, columns::REFERENCE, row))
            {
                references.insert(id, reference);
            }
        }
    }
    Ok(references)
}

/// The share of `clusters` that the rows of `kept` come from (0 without a cluster column).
fn cluster_coverage(kept: &Path, clusters: usize) -> Result<f64> {
    let batches = rows_of(kept)?;
    let mut seen = BTreeSet::new();
    for b in &batches {
        if let Some(c) = b
            .column_by_name(columns::CLUSTER)
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt32Type>().cloned())
        {
            seen.extend(c.iter().flatten());
        }
    }
    Ok(seen.len() as f64 / clusters.max(1) as f64)
}

/// A model folder copied file by file (a round that trained on nothing keeps its model).
fn copy_model(from: &Path, to: &Path) -> Result<()> {
    write_folder(to, |dir| {
        for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
            let path = entry.map_err(|e| Error::io(from, e))?.path();
            if path.is_file() {
                let target = dir.join(path.file_name().expect("a file name"));
                std::fs::copy(&path, &target).map_err(|e| Error::io(&target, e))?;
            }
        }
        Ok(())
    })
}

/// The pool of round `round + 1`: `previous` with `round` set on the rows that round `round` chose
/// (`selected`) and `reward` set to each such prompt's mean sample reward (in `scored`); with neither, the
/// pool gets the two columns empty.
fn mark_pool(previous: &Path, last: Option<(&Path, &Path)>, output: &Path, round: usize) -> Result<()> {
    let mut chosen = BTreeSet::new();
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    if let Some((selected, scored)) = last {
        for b in rows_of(selected)? {
            let ids = b.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
            chosen.extend(ids.iter().flatten().map(str::to_owned));
        }
        for b in rows_of(scored)? {
            let reward = b.column_by_name(columns::REWARD).expect("scored").as_primitive::<Float32Type>().clone();
            for row in 0..b.num_rows() {
                let id = column_or_meta(&b, columns::PROMPT_ID, row).unwrap_or_default();
                let e = sums.entry(id).or_default();
                (e.0, e.1) = (e.0 + reward.value(row) as f64, e.1 + 1);
            }
        }
    }
    let stage = MarkPool { round, last, chosen, sums };
    run_stage(&stage, previous, output, read_options(), |_, _| {})?;
    Ok(())
}

/// The stage behind [`mark_pool`].
struct MarkPool<'a> {
    round: usize,
    last: Option<(&'a Path, &'a Path)>,
    chosen: BTreeSet<String>,
    sums: BTreeMap<String, (f64, u64)>,
}

impl Stage for MarkPool<'_> {
    type Results = ();
    type Error = Error;

    fn name(&self) -> &str {
        "mark-pool"
    }

    fn parameters(&self) -> serde_json::Value {
        let last = self.last;
        serde_json::json!({"round": self.round, "selected": last.map(|l| l.0), "scored": last.map(|l| l.1)})
    }

    fn run(&self, rows: &mut Rows) -> Result<()> {
        let (round, chosen, sums) = (self.round, &self.chosen, &self.sums);
        rows.map(|batch| {
            let ids = batch.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
            let old_round =
                batch.column_by_name(columns::ROUND).map(|c| c.as_primitive::<arrow::datatypes::UInt32Type>().clone());
            let old_reward = batch.column_by_name(columns::REWARD).map(|c| c.as_primitive::<Float32Type>().clone());
            let mut rounds = Vec::with_capacity(ids.len());
            let mut rewards = Vec::with_capacity(ids.len());
            for row in 0..ids.len() {
                let id = ids.value(row);
                let previous_round = old_round.as_ref().filter(|r| r.is_valid(row)).map(|r| r.value(row));
                rounds.push(if chosen.contains(id) { Some(round as u32) } else { previous_round });
                let previous_reward = old_reward.as_ref().filter(|r| r.is_valid(row)).map(|r| r.value(row));
                rewards.push(match sums.get(id) {
                    Some((s, n)) => Some((s / *n as f64) as f32),
                    None => previous_reward,
                });
            }
            let out = with_column(
                &batch,
                columns::field(columns::ROUND, 0).expect("a stage column"),
                Arc::new(UInt32Array::from(rounds)),
            )?;
            Ok(with_column(
                &out,
                columns::field(columns::REWARD, 0).expect("a stage column"),
                Arc::new(Float32Array::from(rewards)),
            )?)
        })?;
        Ok(())
    }
}

/// One training row as JSON: the conversation when the row has one, else prompt and response; `None` for a
/// row without a prompt or with an empty response.
fn training_row(batch: &arrow::array::RecordBatch, row: usize, id: String, source: &str) -> Option<serde_json::Value> {
    if let Some(turns) = whetstone_datasets::messages_at(batch, row) {
        let turns: Vec<_> = turns.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect();
        return Some(serde_json::json!({"id": id, "messages": turns, "source": source}));
    }
    let prompt = text_at(batch, schema::PROMPT, row)?;
    let response = row_response(batch, row).filter(|r| !r.trim().is_empty())?;
    Some(serde_json::json!({"id": id, "prompt": prompt, "response": response, "source": source}))
}

/// The round's training set: the curated samples, then replay rows drawn (seeded) from the human data so
/// that they make up `replay_fraction` of the whole. Samples with an empty answer are left out and counted.
fn mix(config: &RoundsConfig, round: usize, curated: &Path, dir: &Path) -> Result<()> {
    let mut lines = Vec::new();
    let (mut empty, mut repeated) = (0, 0);
    // With `accumulate`, every round's kept samples so far (this round's first), each text pair once.
    let mut sources = vec![curated.to_path_buf()];
    if config.accumulate {
        for r in (1..round).rev() {
            sources.push(curated_of(config, r, &round_dir(config, r).join("curate"))?);
        }
    }
    let mut seen = BTreeSet::new();
    for source in &sources {
        for b in rows_of(source)? {
            let ids = b.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
            for row in 0..b.num_rows() {
                match training_row(&b, row, ids.value(row).to_string(), "self") {
                    Some(line) => {
                        let text =
                            (line["prompt"].to_string(), line["messages"].to_string(), line["response"].to_string());
                        if seen.insert(text) {
                            lines.push(line);
                        } else {
                            repeated += 1;
                        }
                    }
                    None => empty += 1, // nothing to learn from an empty answer
                }
            }
        }
    }
    let own = lines.len();
    let mut replay_rows = 0;
    if let (Some(replay), true) = (&config.replay, config.replay_fraction > 0.0) {
        let (batches, _) = read_all(replay, read_options())?;
        let mut human = Vec::new();
        for b in &batches {
            let ids = b.column_by_name(schema::ID).expect("core column").as_string::<i32>().clone();
            for row in 0..b.num_rows() {
                human.extend(training_row(b, row, format!("replay:{}", ids.value(row)), "replay"));
            }
        }
        let f = config.replay_fraction;
        let want = ((own as f64 * f / (1.0 - f)).round() as usize).min(human.len());
        use rand::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(config.seed_of(round, 5));
        let picked = rand::seq::index::sample(&mut rng, human.len(), want);
        let mut picked: Vec<usize> = picked.into_iter().collect();
        picked.sort_unstable();
        replay_rows = picked.len();
        lines.extend(picked.into_iter().map(|i| human[i].clone()));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = dir.join("train.jsonl");
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    let record = serde_json::json!({"rows": lines.len(), "self_rows": own, "empty_responses_left_out": empty,
        "rounds_accumulated": sources.len(), "repeats_of_earlier_rounds_left_out": repeated,
        "replay_rows": replay_rows,
        "replay_fraction": config.replay_fraction, "from": curated});
    crate::folder::write_json(&dir.join("mix.json"), &record)
}

/// Removes what killed runs left half-written (`.NAME.partial-PID` folders) in the round folders; training
/// checkpoints stay.
fn remove_partials(out: &Path) -> Result<()> {
    for round in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let round = round.map_err(|e| Error::io(out, e))?.path();
        if !round.is_dir() || !round.file_name().is_some_and(|n| n.to_string_lossy().starts_with("round-")) {
            continue;
        }
        for entry in std::fs::read_dir(&round).map_err(|e| Error::io(&round, e))? {
            let path = entry.map_err(|e| Error::io(&round, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') && name.contains(".partial-") {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// Runs the rounds (resuming a run of the same settings in `config.out`), calling `on_event` as it goes.
pub fn run(config: &RoundsConfig, on_event: &mut dyn FnMut(Event)) -> Result<RoundsReport> {
    config.check()?;
    std::fs::create_dir_all(&config.out).map_err(|e| Error::io(&config.out, e))?;
    let settings = config.out.join(SETTINGS_FILE);
    let recorded = serde_json::to_value(config)?;
    if settings.exists() {
        if read_json(&settings)? != recorded {
            return Err(Error::Invalid(format!(
                "{}: holds rounds run with other settings; choose another out folder or remove it",
                config.out.display()
            )));
        }
    } else {
        let mut text = serde_json::to_string_pretty(&recorded)?;
        text.push('\n');
        whetstone_datasets::write::write_atomic(&settings, text.as_bytes())?;
    }
    remove_partials(&config.out)?;
    let mut runner = Runner { config, engine: None, on_event };
    let started = Instant::now();
    let (accuracy, reward) = runner.eval(0, &config.base)?;
    let mut rounds = vec![RoundMetrics {
        round: 0,
        model: config.base.clone(),
        held_out_accuracy: accuracy,
        held_out_reward: reward,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    }];
    (runner.on_event)(Event::Round(&rounds[0]));
    let mut stopped_early = None;
    for round in 1..=config.rounds {
        let metrics_path = round_dir(config, round).join("metrics.json");
        let mut metrics = match std::fs::read(&metrics_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(_) => {
                let m = runner.round(round, Instant::now())?;
                let text = serde_json::to_string_pretty(&m)?;
                whetstone_datasets::write::write_atomic(&metrics_path, text.as_bytes())?;
                m
            }
        };
        let points: Vec<(f64, f64)> =
            rounds.iter().chain(std::iter::once(&metrics)).map(|m| (m.round as f64, m.held_out_accuracy)).collect();
        metrics.predicted_gain = curve::fit(&points).map(|c| c.next_gain(round as f64));
        (runner.on_event)(Event::Round(&metrics));
        rounds.push(metrics);
        report::write(config, &rounds, None)?;
        let gain = rounds.last().and_then(|m| m.predicted_gain);
        if let (Some(threshold), Some(gain)) = (config.stop_gain, gain) {
            if gain < threshold && round < config.rounds {
                (runner.on_event)(Event::Stopped { round, predicted_gain: gain });
                stopped_early = Some(format!(
                    "stopped after round {round}: the learning curve predicts {:+.1} points from round {} (threshold {:.1})",
                    100.0 * gain,
                    round + 1,
                    100.0 * threshold
                ));
                break;
            }
        }
    }
    report::write(config, &rounds, stopped_early.as_deref())?;
    Ok(RoundsReport { out: config.out.clone(), rounds, stopped_early })
}
