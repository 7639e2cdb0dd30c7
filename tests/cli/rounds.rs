//! `whet rounds` end to end: two rounds on a tiny model, killed with SIGKILL mid-training and mid-generation
//! and started again, end with the same model and metrics as an uninterrupted run; every step leaves its
//! dataset, manifest and pairs, and the report, chart and metrics dataset are written; a round with DPO after
//! SFT trains on its pairs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{s, whet_fails, whet_ok};
use whetstone::selfimprove::rounds::first_error;
use whetstone::selfimprove::tasks::{addition, write_jsonl};

/// A tiny model, a prompt pool and a held-out set in `dir`; returns the rounds' TOML for an output folder.
fn setup(dir: &Path) {
    let task = addition(2, 200, 16, 7).unwrap();
    write_jsonl(&dir.join("pool.jsonl"), &task.train[..120]).unwrap();
    write_jsonl(&dir.join("human.jsonl"), &task.train[120..]).unwrap();
    write_jsonl(&dir.join("test.jsonl"), &task.test).unwrap();
    whet_ok(&[
        "model",
        "tiny",
        s(&dir.join("tiny")),
        "--corpus",
        s(&dir.join("pool.jsonl")),
        "--vocab",
        "300",
        "--context",
        "64",
    ]);
}

fn config(dir: &Path, out: &str) -> std::path::PathBuf {
    // A random model rarely answers right, so the test keeps each prompt's two best samples whatever their
    // reward: every step has rows to work on.
    let text = format!(
        r#"base = "tiny"
prompts = "pool.jsonl"
eval = "test.jsonl"
replay = "human.jsonl"
out = "{out}"
rounds = 2
seed = 3
reward = ["exact"]
replay_fraction = 0.25
eval_max_tokens = 6

[select]
method = "iterative"
prompts = 24
clusters = 4

[generate]
n = 3
temperature = 1.0
max_tokens = 6

[keep]
by = "top-k:2"
min_reward = 0.0

[train]
method = "lora"
steps = 12
batch = 4
checkpoint_every = 3
on_error = "skip"
lora = {{ r = 4, alpha = 8.0, targets = ["q_proj", "v_proj", "up_proj"] }}
schedule = {{ lr = 1e-2, warmup = 2 }}
"#
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `whet rounds`, kills it with SIGKILL once `wait_for` says so (given each stderr line), and
/// returns whether it was killed (it may have finished first).
fn run_and_kill(config: &Path, wait_for: impl Fn(&str) -> bool) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_whet"))
        .args(["rounds", s(config)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if wait_for(&line) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
    }
    assert!(child.wait().unwrap().success(), "whet rounds failed");
    false
}

fn metrics_without_times(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v.as_object_mut().unwrap().remove("model");
            v
        })
        .collect()
}

#[test]
fn rounds_killed_at_any_point_resume_to_the_same_model_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);

    let whole = config(dir, "whole");
    let printed = whet_ok(&["rounds", s(&whole)]);
    assert!(printed.contains("held-out accuracy"), "{printed}");
    let out = dir.join("whole");
    for step in ["select", "generate", "reward", "keep", "curate", "mix", "train", "model", "eval"] {
        assert!(out.join("round-2").join(step).is_dir(), "round-2/{step} is missing");
    }
    for f in ["metrics.parquet", "metrics.jsonl", "rounds.svg", "report.md", "rounds.json"] {
        assert!(out.join(f).is_file(), "{f} is missing");
    }
    // Every sample is accounted for: kept + rejected = generated.
    let kept = whetstone::datasets::Manifest::read_beside(&out.join("round-1/keep/kept.parquet")).unwrap();
    let generated = whetstone::datasets::Manifest::read_beside(&out.join("round-1/generate/samples.parquet")).unwrap();
    assert_eq!(generated.rows.rows_out, 72);
    assert_eq!(kept.rows.rows_in, 72);
    assert_eq!(kept.rows.rows_out + kept.rows.rows_rejected, 72);
    assert_eq!(kept.rows.rows_out, 48, "top-2 of 3 samples for 24 prompts");
    // Round 2 chose none of round 1's prompts.
    let ids = |p: &Path| -> std::collections::BTreeSet<String> {
        let (batches, _) = whetstone::datasets::read_all(p, Default::default()).unwrap();
        batches
            .iter()
            .flat_map(|b| {
                use arrow::array::{Array, AsArray};
                let c = b.column_by_name("id").unwrap().as_string::<i32>().clone();
                (0..c.len()).map(move |i| c.value(i).to_string())
            })
            .collect()
    };
    let (first, second) =
        (ids(&out.join("round-1/select/prompts.parquet")), ids(&out.join("round-2/select/prompts.parquet")));
    assert_eq!((first.len(), second.len()), (24, 24));
    assert!(first.is_disjoint(&second));
    // Pairs (a random model seldom answers right, so there may be none): each prefers the better sample, and
    // the round's metrics count them.
    let pairs = std::fs::read_to_string(out.join("round-1/keep/pairs.jsonl")).unwrap();
    for line in pairs.lines() {
        let pair: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(pair["chosen_reward"].as_f64() > pair["rejected_reward"].as_f64(), "{pair}");
    }
    let round_1 = whetstone::selfimprove::rounds::read_metrics(&out).unwrap().remove(1);
    assert_eq!(round_1.pairs, pairs.lines().count() as u64);
    assert_eq!(round_1.kept, 48);
    assert_eq!(round_1.pass_rate, 1.0, "with min_reward 0 every sample passes");
    let mix: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("round-1/mix/mix.json")).unwrap()).unwrap();
    let (rows, replay) = (mix["rows"].as_u64().unwrap(), mix["replay_rows"].as_u64().unwrap());
    assert!(replay > 0 && (replay as f64 / rows as f64 - 0.25).abs() < 0.05, "{mix}");

    // The same run, killed mid-training (after a checkpoint), then mid-generation, then left to finish.
    let broken = config(dir, "broken");
    let out_b = dir.join("broken");
    let checkpoint = out_b.join("round-1/.train.checkpoint");
    let started = Instant::now();
    let killed = run_and_kill(&broken, |line| {
        if line.contains("round 1 · train") {
            while !checkpoint.exists() && started.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(5));
            }
            return true;
        }
        false
    });
    assert!(killed && checkpoint.exists() && !out_b.join("round-1/train").exists(), "killed mid-training");
    assert!(run_and_kill(&broken, |line| line.contains("round 2 · generate")));
    assert!(!out_b.join("round-2/generate").exists(), "killed mid-generation");
    assert!(!run_and_kill(&broken, |_| false));
    let left: Vec<_> = std::fs::read_dir(out_b.join("round-2")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().starts_with('.')), "half-written folders removed: {left:?}");

    let model = |out: &Path| std::fs::read(out.join("round-2/model/model.safetensors")).unwrap();
    assert!(model(&out) == model(&out_b), "the resumed run's final model differs from the uninterrupted one's");
    assert_eq!(metrics_without_times(&out), metrics_without_times(&out_b));
    let adapter = |out: &Path| std::fs::read(out.join("round-1/train/adapter_model.safetensors")).unwrap();
    assert!(adapter(&out) == adapter(&out_b));

    // A filter that keeps nothing (a random model seldom answers right): the round trains on nothing and keeps
    // its model, and says so.
    let text = std::fs::read_to_string(&whole)
        .unwrap()
        .replace("out = \"whole\"", "out = \"strict\"")
        .replace("rounds = 2", "rounds = 1")
        .replace("by = \"top-k:2\"\nmin_reward = 0.0", "by = \"best-of-n\"\nmin_reward = 1.0");
    let strict = dir.join("strict.toml");
    std::fs::write(&strict, text).unwrap();
    whet_ok(&["rounds", s(&strict)]);
    let out_s = dir.join("strict");
    let m = whetstone::datasets::Manifest::read_beside(&out_s.join("round-1/keep/kept.parquet")).unwrap();
    assert_eq!(m.rows.rows_out, 0, "a random model answered right");
    assert!(out_s.join("round-1/train/no-data.txt").is_file());
    let weights = |p: &Path| std::fs::read(p.join("model.safetensors")).unwrap();
    assert!(weights(&out_s.join("round-1/model")) == weights(&dir.join("tiny")));

    // DPO after SFT: the round's pairs (a reward that always differs between samples: their likelihood) train the
    // SFT model further, with itself as the reference, and the result is the round's model.
    let text = std::fs::read_to_string(&whole)
        .unwrap()
        .replace("out = \"whole\"", "out = \"dpo\"")
        .replace("rounds = 2", "rounds = 1")
        .replace("reward = [\"exact\"]", "reward = [\"exact\", \"likelihood\"]\neval_reward = [\"exact\"]")
        + "\n[preference]\nmethod = \"dpo\"\nsteps = 6\nlr = 5e-3\n";
    let dpo = dir.join("dpo.toml");
    std::fs::write(&dpo, text).unwrap();
    let printed = whet_ok(&["rounds", s(&dpo)]);
    assert!(printed.contains("DPO pairs"), "{printed}");
    let out_d = dir.join("dpo");
    let round_1 = whetstone::selfimprove::rounds::read_metrics(&out_d).unwrap().remove(1);
    assert!(round_1.dpo_pairs == round_1.pairs && round_1.pairs == 24, "{round_1:?}");
    assert!(round_1.dpo_loss.is_some_and(f64::is_finite) && round_1.dpo_accuracy.is_some(), "{round_1:?}");
    let trained = std::fs::read_to_string(out_d.join("round-1/prefer/whetstone-adapter.json")).unwrap();
    assert!(trained.contains("\"objective\": \"dpo\"") && trained.contains("sft-model"), "{trained}");
    assert_eq!(std::fs::read_to_string(out_d.join("round-1/prefer/metrics.jsonl")).unwrap().lines().count(), 6);
    assert!(weights(&out_d.join("round-1/model")) != weights(&out_d.join("round-1/sft-model")), "DPO moved the model");
    let eval = whetstone::datasets::Manifest::read_beside(&out_d.join("round-1/eval/scored.parquet")).unwrap();
    assert_eq!(eval.parameters["reward"], "exact", "held-out answers are measured by eval_reward");

    // First-error pairing, wired into a round: roll-outs from each step (line) of every rejected answer below
    // min_reward 1; no answer of a random model reaches it, so every first error is the first step and each pair
    // keeps its chosen answer (the search itself: first_error's unit tests).
    let text = std::fs::read_to_string(&dpo)
        .unwrap()
        .replace("out = \"dpo\"", "out = \"first-error\"")
        .replace("min_reward = 0.0", "min_reward = 1.0")
        + "pairing = \"first-error\"\nrollouts = 2\n";
    let first_error = dir.join("first-error.toml");
    std::fs::write(&first_error, text).unwrap();
    let printed = whet_ok(&["rounds", s(&first_error)]);
    assert!(printed.contains("first-error roll-outs"), "{printed}");
    let out_f = dir.join("first-error");
    let read = |p: &Path| whetstone::selfimprove::keep::read_pairs(p).unwrap();
    let (before, after) =
        (read(&out_f.join("round-1/keep/pairs.jsonl")), read(&out_f.join("round-1/first-error/pairs.jsonl")));
    assert_eq!(before.len(), after.len());
    let searched = before.iter().filter(|p| first_error::steps(&p.rejected).len() > 1).count();
    assert!(searched > 0, "some rejected answer has two steps or more, so the search runs");
    let round_1 = whetstone::selfimprove::rounds::read_metrics(&out_f).unwrap().remove(1);
    assert_eq!(round_1.first_error_rollouts as usize, 2 * searched, "two roll-outs after each rejected first step");
    assert_eq!(before, after, "nothing recovers: every pair as it was");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_f.join("round-1/first-error/first-error.json")).unwrap())
            .unwrap();
    assert_eq!(report["pairs"].as_u64().unwrap() as usize, before.len());
    assert_eq!(report["left_as_they_were"].as_u64().unwrap() as usize, before.len() - searched);
    assert_eq!(report["first_error_at"]["1"].as_u64().unwrap_or(0) as usize, searched);
    assert!(round_1.dpo_pairs > 0, "DPO trained on the re-made pairs");

    // Another seed gives another run; other settings in the same folder are refused.
    let text = std::fs::read_to_string(&broken).unwrap().replace("seed = 3", "seed = 4");
    std::fs::write(&broken, text).unwrap();
    let err = whet_fails(&["rounds", s(&broken)]);
    assert!(err.contains("holds rounds run with other settings"), "{err}");
}

#[test]
fn the_gsm8k_rounds_example_reads_and_checks() {
    use whetstone::selfimprove::rounds::RoundsConfig;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = RoundsConfig::read(&root.join("examples/gsm8k.toml")).unwrap();
    assert_eq!(config.reward, ["gsm8k"]);
    assert_eq!((config.select.prompts, config.generate.n, config.curate.len()), (1024, 8, 1));
    assert!(config.prompts.ends_with("shared/data/gsm8k/train.jsonl"), "{}", config.prompts.display());
    // With a model folder in place of the one a user downloads, the settings pass the checks.
    let tmp = tempfile::tempdir().unwrap();
    config.base = tmp.path().to_path_buf();
    for p in [&mut config.prompts, &mut config.eval] {
        if !p.exists() {
            *p = tmp.path().join("x.jsonl");
            std::fs::write(&*p, "{\"prompt\": \"1 + 1?\", \"response\": \"2\"}\n").unwrap();
        }
    }
    config.replay = Some(config.prompts.clone());
    config.check().unwrap();
    config.keep.by = "best".into();
    assert!(config.check().unwrap_err().to_string().contains("best-of-n"));
}
