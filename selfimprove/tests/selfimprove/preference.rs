//! DPO on tiny models made here: gradients that match finite differences and TRL's formula computed in PyTorch,
//! a held-out preference that training raises, runs that resume to the same bytes, and clear refusals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::json;
use whetstone_selfimprove::prompt::{PromptMode, PromptTokenizer};
use whetstone_selfimprove::train::data::{pack, read_pair_examples, Example};
use whetstone_selfimprove::train::llama::Llama;
use whetstone_selfimprove::train::lora::load_with_adapter;
use whetstone_selfimprove::train::preference::{chosen_tokens, objective, pair_losses};
use whetstone_selfimprove::train::schedule::Schedule;
use whetstone_selfimprove::train::{train, LoraConfig, Objective, OnError, TrainConfig};
use whetstone_selfimprove::{make_tiny_model, Error, ModelFolder, TinyLlama};

/// Pairs whose chosen answer is the sum and whose rejected one declines: a preference a tiny model can learn.
fn pairs(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            let row = json!({"prompt_id": format!("p{i}"), "prompt": format!("What is {i} plus {i}?"),
                "chosen": format!("It is {}.", 2 * i), "rejected": "No idea, sorry.", "chosen_reward": 1.0,
                "rejected_reward": 0.0});
            format!("{row}\n")
        })
        .collect()
}

fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (train_set, eval_set) = (dir.join("pairs.jsonl"), dir.join("eval-pairs.jsonl"));
    std::fs::write(&train_set, pairs(0..120)).unwrap();
    std::fs::write(&eval_set, pairs(120..150)).unwrap();
    let corpus = dir.join("corpus.jsonl");
    let text: String = (0..150)
        .map(|i| {
            format!("{{\"prompt\": \"What is {i} plus {i}?\", \"response\": \"It is {}. No idea, sorry.\"}}\n", 2 * i)
        })
        .collect();
    std::fs::write(&corpus, text).unwrap();
    let base = dir.join("tiny");
    // Grouped-query attention, so the check covers the head repetition too.
    let spec = TinyLlama {
        vocab: 320,
        hidden: 128,
        heads: 2,
        kv_heads: 1,
        intermediate: 160,
        context: 64,
        ..Default::default()
    };
    make_tiny_model(&base, &[corpus], &spec).unwrap();
    (base, train_set, eval_set)
}

fn config(dir: &Path, base: &Path, data: &Path, out: &str) -> TrainConfig {
    TrainConfig {
        base: base.to_path_buf(),
        data: data.to_path_buf(),
        out: dir.join(out),
        objective: Objective::Dpo,
        beta: 0.5,
        lora: LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.1,
            targets: ["q_proj", "v_proj", "up_proj"].map(String::from).to_vec(),
        },
        schedule: Schedule { lr: 2e-2, warmup: 2, ..Default::default() },
        batch: 4,
        steps: Some(12),
        cpu: true,
        ..Default::default()
    }
}

fn read_pairs(base: &Path, file: &Path) -> Vec<Example> {
    let tokenizer = PromptTokenizer::new(&ModelFolder::open(base).unwrap()).unwrap();
    read_pair_examples(file, &tokenizer, PromptMode::Chat, 64, OnError::Fail).unwrap().examples
}

/// The objective of `examples`' pairs laid out by `rows`, and its gradient for each adapter tensor.
fn objective_and_gradients(
    model: &Llama,
    examples: &[Example],
    rows: &[Vec<usize>],
    beta: f64,
    rpo_alpha: f64,
) -> (Tensor, BTreeMap<String, Tensor>) {
    let losses = pair_losses(model, None, examples, rows, beta, 0, None).unwrap();
    let total = objective(&losses, examples.len() / 2, chosen_tokens(examples, rows), rpo_alpha).unwrap();
    let store = total.backward().unwrap();
    let grads = model.trainable.iter().map(|(k, v)| (k.clone(), store.get(v.as_tensor()).unwrap().clone())).collect();
    (total, grads)
}

#[test]
fn dpo_gradients_match_finite_differences_and_trl_s_formula_computed_in_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, _) = setup(dir.path());
    // A few DPO steps first, so the adapters' B matrices are not zero and every gradient is non-trivial.
    let mut warm = config(dir.path(), &base, &train_set, "adapter");
    warm.lora.dropout = 0.0;
    warm.steps = Some(3);
    train(&warm, &mut |_, _| true).unwrap();

    let examples: Vec<Example> = read_pairs(&base, &train_set).into_iter().take(6).collect();
    // Packed: each pair's answers share rows with other pairs' (the per-answer sums must keep them apart).
    let rows = pack(&examples, &[0, 3, 1, 2, 5, 4], 64, true);
    assert!(rows.iter().any(|r| r.len() > 1), "the check covers packed rows: {rows:?}");
    let (beta, rpo_alpha) = (0.5, 0.3);
    // f64, so central differences are exact to far below the tolerance.
    let (model, _) = load_with_adapter(&base, &warm.out, &Device::Cpu, DType::F64).unwrap();
    let (value, grads) = objective_and_gradients(&model, &examples, &rows, beta, rpo_alpha);
    let value = value.to_scalar::<f64>().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (name, var) in &model.trainable {
        let original = var.as_tensor().copy().unwrap();
        let flat: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        let g: Vec<f64> = grads[name].flatten_all().unwrap().to_vec1().unwrap();
        for k in [0, flat.len() / 3, flat.len() - 1] {
            let at = |x: f64| {
                let mut moved = flat.clone();
                moved[k] = x;
                var.set(&Tensor::from_vec(moved, original.dims(), &Device::Cpu).unwrap()).unwrap();
                objective_and_gradients(&model, &examples, &rows, beta, rpo_alpha).0.to_scalar::<f64>().unwrap()
            };
            let numeric = (at(flat[k] + eps) - at(flat[k] - eps)) / (2.0 * eps);
            assert!((numeric - g[k]).abs() < 1e-6 + 1e-4 * g[k].abs(), "{name}[{k}]: {} vs {numeric}", g[k]);
            checked += 1;
        }
        var.set(&original).unwrap();
    }
    assert_eq!(checked, 3 * 2 * 2 * 3, "three entries of each A and B of 3 modules in 2 layers");
    assert!(value > 0.0 && value.is_finite());

    // TRL's formula in PyTorch (scripts/dpo_check.py), on the same folder, adapter and token ids, in f32.
    let (model, _) = load_with_adapter(&base, &warm.out, &Device::Cpu, DType::F32).unwrap();
    let (value, grads) = objective_and_gradients(&model, &examples, &rows, beta, rpo_alpha);
    let value = value.to_scalar::<f32>().unwrap();
    let check = dir.path().join("dpo-check");
    std::fs::create_dir_all(&check).unwrap();
    let answers: Vec<_> = examples
        .chunks(2)
        .map(|p| json!({"prompt_len": p[0].prompt_len, "chosen": p[0].tokens, "rejected": p[1].tokens}))
        .collect();
    let grads: serde_json::Map<String, serde_json::Value> =
        grads.iter().map(|(k, g)| (k.clone(), json!(g.flatten_all().unwrap().to_vec1::<f32>().unwrap()))).collect();
    let case = json!({"base": base, "adapter": warm.out, "beta": beta, "rpo_alpha": rpo_alpha, "pairs": answers,
        "whetstone": {"loss": value, "gradients": grads}});
    std::fs::write(check.join("case.json"), case.to_string()).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let has_torch = std::process::Command::new(&python)
        .args(["-c", "import torch, transformers, peft"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("skipping the PyTorch half: .venv has no torch, transformers and peft (pip install them to run it)");
        return;
    }
    let out = std::process::Command::new(&python)
        .arg(root.join("scripts/dpo_check.py"))
        .arg(check.join("case.json"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "DPO loss or gradients differ from TRL's formula by more than 1e-4");
    assert!(report.contains("agree"), "{report}");
}

#[test]
fn dpo_raises_the_held_out_preference_and_a_stopped_run_resumes_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, eval_set) = setup(dir.path());
    let mut whole = config(dir.path(), &base, &train_set, "whole");
    whole.eval = Some(eval_set.clone());
    whole.eval_every = 6;
    whole.rpo_alpha = 0.2;
    let report = train(&whole, &mut |m, _| {
        let p = m.pairs.expect("DPO steps log their pairs");
        assert_eq!(p.pairs, 4);
        assert!((p.margin - (p.chosen_reward - p.rejected_reward)).abs() < 1e-9 && (0.0..=1.0).contains(&p.accuracy));
        true
    })
    .unwrap();
    assert_eq!(
        (report.objective, report.rows_in, report.examples, report.eval_examples),
        (Objective::Dpo, 120, 120, 30)
    );
    let (before, after) = (report.eval_pairs_before.unwrap(), report.eval_pairs_after.unwrap());
    // The adapters start at zero: the policy is its reference, every margin 0 and the loss log 2.
    assert!(
        before.margin.abs() < 1e-6 && before.accuracy == 0.0 && (before.loss - 2f64.ln()).abs() < 1e-5,
        "{before:?}"
    );
    assert!(after.accuracy > 0.9 && after.margin > 0.5 && after.loss < 0.5, "held-out pairs after 12 steps: {after:?}");
    let metrics = std::fs::read_to_string(whole.out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    assert!(lines[5]["eval_pairs"]["accuracy"].is_number() && lines[4].get("eval_pairs").is_none());
    assert!(
        lines[0]["pairs"]["margin"].is_number() && lines[0]["objective"].as_f64() > lines[0]["loss"].as_f64(),
        "RPO adds to the loss"
    );

    let mut broken = config(dir.path(), &base, &train_set, "broken");
    broken.eval = whole.eval.clone();
    broken.eval_every = 6;
    broken.rpo_alpha = 0.2;
    broken.checkpoint_every = 4;
    let e = train(&broken, &mut |m, _| m.step < 6).unwrap_err();
    assert!(matches!(e, Error::Stopped(_)), "{e}");
    let resumed = train(&broken, &mut |_, _| true).unwrap();
    assert_eq!(resumed.resumed_at, 4);
    let read = |p: &Path| std::fs::read(p.join("adapter_model.safetensors")).unwrap();
    assert!(read(&whole.out) == read(&broken.out), "the resumed run's adapter is the unbroken run's, byte for byte");
    let numbers = |p: &Path| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(p.join("metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let m = v.as_object_mut().unwrap();
                m.remove("seconds");
                m.remove("tokens_per_s");
                v
            })
            .collect()
    };
    assert_eq!(numbers(&whole.out), numbers(&broken.out), "and so are its losses, rewards and held-out measures");
    assert_eq!(resumed.eval_pairs_before, report.eval_pairs_before);
}

#[test]
fn bad_pairs_are_named_by_line_and_field_or_counted_and_sft_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, _) = setup(dir.path());
    let bad = dir.path().join("bad.jsonl");
    let mut text = pairs(0..8);
    text.push_str("{\"prompt\": \"What is 1 plus 1?\", \"chosen\": \"It is 2.\"}\n");
    text.push_str("{\"prompt\": \"What is 1 plus 1?\", \"chosen\": \"\", \"rejected\": \"No.\"}\n");
    text.push_str(&format!(
        "{{\"prompt\": \"{}\", \"chosen\": \"a\", \"rejected\": \"b\"}}\n",
        "very long ".repeat(40)
    ));
    std::fs::write(&bad, text).unwrap();
    let cfg = config(dir.path(), &base, &bad, "out");
    let e = train(&cfg, &mut |_, _| true).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl: line 9, field rejected"), "{e}");
    let mut skip = cfg.clone();
    skip.on_error = OnError::Skip;
    skip.steps = Some(2);
    let r = train(&skip, &mut |_, _| true).unwrap();
    // An empty answer is still an answer (its end token): only the pair missing one and the long one are left out.
    assert_eq!((r.rows_in, r.examples), (11, 9));
    assert_eq!(r.rejected.by_reason, [("no_response".to_string(), 1), ("too_long".to_string(), 1)].into());

    for (change, says) in [
        (&(|c: &mut TrainConfig| c.beta = 0.0) as &dyn Fn(&mut TrainConfig), "beta"),
        (&|c: &mut TrainConfig| c.kl_beta = 0.1, "kl_beta"),
        (&|c: &mut TrainConfig| c.rpo_alpha = -1.0, "rpo_alpha"),
    ] {
        let mut c = config(dir.path(), &base, &train_set, "refused");
        change(&mut c);
        let e = train(&c, &mut |_, _| true).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn a_reward_model_learns_to_rank_pairs_or_scored_samples_and_scores_as_a_reward() {
    use whetstone_selfimprove::reward::model::RewardModel;
    use whetstone_selfimprove::reward::stage::{RewardSpec, RewardStep};
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, eval_set) = setup(dir.path());
    let mut rm = config(dir.path(), &base, &train_set, "rm");
    rm.objective = Objective::Reward;
    rm.eval = Some(eval_set.clone());
    rm.steps = Some(20);
    let r = train(&rm, &mut |_, _| true).unwrap();
    assert_eq!((r.objective, r.examples, r.eval_examples), (Objective::Reward, 120, 30));
    let (before, after) = (r.eval_pairs_before.unwrap(), r.eval_pairs_after.unwrap());
    assert_eq!((before.accuracy, before.margin), (0.0, 0.0), "a zero head scores every answer 0");
    assert!(after.accuracy > 0.9 && after.margin > 0.0, "held-out pairs ranked right (AUC): {after:?}");
    assert!(rm.out.join("reward_head.safetensors").is_file() && rm.out.join("adapter_config.json").is_file());

    // Loaded back, it scores a held-out sum above a refusal, and as a reward stage gives σ(score) in [0, 1].
    let model = RewardModel::load(&rm.out).unwrap();
    let prompt = whetstone_selfimprove::prompt::Prompt::Text("What is 140 plus 140?".into());
    let (right, refusal) =
        (model.score(&prompt, "It is 280.").unwrap(), model.score(&prompt, "No idea, sorry.").unwrap());
    assert!(right > refusal, "{right} vs {refusal}");
    let samples = dir.path().join("samples.jsonl");
    let text: String = (130..140)
        .flat_map(|i| {
            [format!("It is {}.", 2 * i), "No idea, sorry.".to_string()].into_iter().enumerate().map(move |(k, a)| {
                format!("{}\n", json!({"id": format!("s{i}-{k}"), "prompt_id": format!("p{i}"), "prompt": format!("What is {i} plus {i}?"), "response": a, "reference": format!("It is {}.", 2 * i)}))
            })
        })
        .collect();
    std::fs::write(&samples, text).unwrap();
    let spec = RewardSpec::parse(&format!("rm:{}", rm.out.display())).unwrap();
    let scored = dir.path().join("scored.parquet");
    RewardStep { rewards: vec![spec] }.run(&samples, &scored, Default::default()).unwrap();
    let (batches, _) = whetstone_datasets::read_all(&scored, Default::default()).unwrap();
    use arrow::array::AsArray;
    let rewards: Vec<f32> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("reward").unwrap().as_primitive::<arrow::datatypes::Float32Type>().values().to_vec()
        })
        .collect();
    assert_eq!(rewards.len(), 20);
    assert!(rewards.iter().all(|r| (0.0..=1.0).contains(r)));
    assert!(rewards.chunks(2).filter(|p| p[0] > p[1]).count() >= 9, "{rewards:?}");
    let e = RewardSpec::parse(&format!("rm:{}", base.display())).unwrap_err().to_string();
    assert!(e.contains("not a reward model") && e.contains("--objective reward"), "{e}");

    // Listwise: a prompt's samples scored by a verifier; every two with different rewards make a pair, and a
    // prompt whose samples all have one reward has nothing to rank (counted).
    let verified = dir.path().join("verified.parquet");
    let exact = RewardSpec::parse("exact").unwrap();
    let mut text = std::fs::read_to_string(&samples).unwrap();
    text.push_str(&format!("{}\n", json!({"id": "same", "prompt_id": "p-same", "prompt": "What is 1 plus 1?", "response": "No idea, sorry.", "reference": "It is 2."})));
    std::fs::write(&samples, text).unwrap();
    RewardStep { rewards: vec![exact] }.run(&samples, &verified, Default::default()).unwrap();
    let mut listwise = config(dir.path(), &base, &verified, "rm-listwise");
    listwise.objective = Objective::Reward;
    listwise.steps = Some(4);
    listwise.batch = 2;
    let r = train(&listwise, &mut |m, _| {
        assert_eq!(m.pairs.unwrap().pairs, 2, "two prompts a step, one pair each");
        true
    })
    .unwrap();
    assert_eq!((r.rows_in, r.examples), (21, 20));
    assert_eq!(r.rejected.by_reason["one_reward"], 1);
}
