//! The trainer on tiny models made here: packing that changes no logits, gradients that reach every weight,
//! LoRA that lowers held-out loss, adapters that round-trip through the PEFT layout and merge, resumable runs,
//! and clear refusals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use whetstone_selfimprove::train::llama::{Inputs, Llama, Trainable};
use whetstone_selfimprove::train::lora::{load_with_adapter, merge, LoraSpec};
use whetstone_selfimprove::train::schedule::{Schedule, Shape};
use whetstone_selfimprove::train::{eval_loss, train, LoraConfig, Method, TrainConfig};
use whetstone_selfimprove::{make_tiny_model, Error, TinyLlama};

fn rows(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            format!("{{\"id\": \"r{i}\", \"prompt\": \"What is {i} plus {i}?\", \"response\": \"It is {}.\"}}\n", 2 * i)
        })
        .collect()
}

/// A tiny model, a training set and a held-out set of the same pattern.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let train = dir.join("train.jsonl");
    let eval = dir.join("eval.jsonl");
    std::fs::write(&train, rows(0..200)).unwrap();
    std::fs::write(&eval, rows(200..240)).unwrap();
    let folder = dir.join("tiny");
    let spec = TinyLlama { vocab: 320, context: 64, ..Default::default() };
    make_tiny_model(&folder, std::slice::from_ref(&train), &spec).unwrap();
    (folder, train, eval)
}

fn config(dir: &Path, base: &Path, data: &Path, out: &str) -> TrainConfig {
    TrainConfig {
        base: base.to_path_buf(),
        data: data.to_path_buf(),
        out: dir.join(out),
        lora: LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.1,
            targets: ["q_proj", "v_proj", "up_proj"].map(String::from).to_vec(),
        },
        schedule: Schedule { lr: 1e-2, warmup: 2, floor: 0.1, shape: Shape::Cosine, ..Default::default() },
        batch: 4,
        steps: Some(12),
        cpu: true,
        ..Default::default()
    }
}

/// The held-out rows as the trainer reads them.
fn eval_examples(base: &Path, eval_set: &Path) -> whetstone_selfimprove::train::data::Examples {
    let folder = whetstone_selfimprove::ModelFolder::open(base).unwrap();
    let tokenizer = whetstone_selfimprove::prompt::PromptTokenizer::new(&folder).unwrap();
    whetstone_selfimprove::train::data::read_examples(
        eval_set,
        &tokenizer,
        whetstone_selfimprove::prompt::PromptMode::Chat,
        64,
        Default::default(),
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn logits(model: &Llama, rows: &[Vec<u32>]) -> Tensor {
    model.forward(&Inputs::causal(rows, &Device::Cpu, DType::F32).unwrap(), true, None).unwrap()
}

#[test]
fn packed_examples_get_the_logits_they_get_alone_and_gradients_reach_every_weight() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _, _) = setup(dir.path());
    let model = Llama::load(&base, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    let (a, b) = (vec![5u32, 17, 42, 99, 3], vec![7u32, 8, 250]);
    let alone_a = logits(&model, std::slice::from_ref(&a));
    let alone_b = logits(&model, std::slice::from_ref(&b));
    let packed_row = [a.clone(), b.clone()].concat();
    let segments = vec![[vec![0; a.len()], vec![1; b.len()]].concat()];
    let packed =
        model.forward(&Inputs::new(&[packed_row], &segments, &Device::Cpu, DType::F32).unwrap(), true, None).unwrap();
    assert!(max_abs_diff(&packed.narrow(1, 0, a.len()).unwrap(), &alone_a) < 1e-5);
    assert!(
        max_abs_diff(&packed.narrow(1, a.len(), b.len()).unwrap(), &alone_b) < 1e-5,
        "the second example starts afresh"
    );

    // LoRA starts from the base exactly (B = 0).
    let trainable = Trainable::Lora {
        targets: vec!["q_proj".into(), "down_proj".into()],
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        seed: 1,
    };
    let lora = Llama::load(&base, &Device::Cpu, DType::F32, &trainable).unwrap();
    assert_eq!(lora.trainable.len(), 2 * 2 * 2, "A and B for 2 modules in 2 layers");
    assert!(max_abs_diff(&logits(&lora, std::slice::from_ref(&a)), &alone_a) < 1e-6);

    // One step of full training moves every weight: no op in the forward pass stops the gradient.
    let full = Llama::load(&base, &Device::Cpu, DType::F32, &Trainable::Full).unwrap();
    let before: BTreeMap<String, Tensor> =
        full.trainable.iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
    let out = logits(&full, std::slice::from_ref(&a));
    let loss = candle_nn::loss::cross_entropy(
        &out.squeeze(0).unwrap(),
        &Tensor::new(&[17u32, 42, 99, 3, 1], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let grads = loss.backward().unwrap();
    let mut grads_by_name = BTreeMap::new();
    for (name, var) in &full.trainable {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient reaches {name}"));
        grads_by_name.insert(name.clone(), g.clone());
    }
    let mut adam = whetstone_selfimprove::train::optim::AdamW::new(Default::default(), &full.trainable).unwrap();
    adam.step(&full.trainable, &grads_by_name, 1e-3).unwrap();
    for (name, var) in &full.trainable {
        if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
            continue; // only the rows of the tokens seen move
        }
        assert!(max_abs_diff(var.as_tensor(), &before[name]) > 0.0, "{name} did not move");
    }
}

#[test]
fn lora_lowers_held_out_loss_and_its_adapter_round_trips_through_the_peft_layout_and_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, eval_set) = setup(dir.path());
    let mut cfg = config(dir.path(), &base, &train_set, "adapter");
    cfg.eval = Some(eval_set.clone());
    cfg.steps = Some(40);
    cfg.eval_every = 20;
    let mut seen = 0;
    let report = train(&cfg, &mut |m, steps| {
        seen += 1;
        assert_eq!(steps, 40);
        assert!(m.loss.is_finite() && m.lr > 0.0 && m.tokens > 0, "{m:?}");
        true
    })
    .unwrap();
    assert_eq!(seen, 40);
    assert_eq!((report.rows_in, report.examples), (200, 200));
    let (before, after) = (report.eval_loss_before.unwrap(), report.eval_loss_after.unwrap());
    assert!(after < before * 0.8, "held-out loss {before:.3} -> {after:.3}");
    assert!(report.final_loss < report.first_loss);

    let out = &cfg.out;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["peft_type"].as_str(), config["r"].as_u64(), config["lora_alpha"].as_f64()),
        (Some("LORA"), Some(4), Some(8.0))
    );
    assert_eq!(config["target_modules"], serde_json::json!(["q_proj", "v_proj", "up_proj"]));
    let tensors = candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 3 * 2 * 2);
    assert_eq!(tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].dims(), [4, 128]);
    assert_eq!(tensors["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"].dims(), [352, 4]);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 40);
    assert!(std::fs::read_to_string(out.join("loss.svg")).unwrap().starts_with("<svg"));
    assert_eq!(LoraSpec::read(out).unwrap().target_modules.len(), 3);

    // Loaded back, the adapter gives the held-out loss the run measured.
    let eval = eval_examples(&base, &eval_set);
    let (loaded, _) = load_with_adapter(&base, out, &Device::Cpu, DType::F32).unwrap();
    let again = eval_loss(&loaded, &eval.examples, 4, 64, false).unwrap();
    assert!((again - after).abs() < 1e-5, "{again} vs {after}");

    // Merged into a folder, the weights give the adapter's logits.
    let merged = dir.path().join("merged");
    merge(&base, out, &merged).unwrap();
    let merged_model = Llama::load(&merged, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    let tokens = vec![eval.examples[0].tokens.clone()];
    let d = max_abs_diff(&logits(&merged_model, &tokens), &logits(&loaded, &tokens));
    assert!(d < 1e-4, "merged vs adapter logits differ by {d}");
    assert!(merged.join("tokenizer.json").is_file() && merged.join("whetstone-trained.json").is_file());
    let e = merge(&base, out, &merged).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn a_stopped_run_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, _) = setup(dir.path());
    let whole = config(dir.path(), &base, &train_set, "whole");
    train(&whole, &mut |_, _| true).unwrap();

    let mut broken = config(dir.path(), &base, &train_set, "broken");
    broken.checkpoint_every = 4;
    let e = train(&broken, &mut |m, _| m.step < 6).unwrap_err();
    assert!(matches!(e, Error::Stopped(_)), "{e}");
    assert!(!broken.out.exists(), "no output until the run ends");
    assert!(dir.path().join(".broken.checkpoint/state.json").is_file());
    let mut steps = vec![];
    let report = train(&broken, &mut |m, _| {
        steps.push(m.step);
        true
    })
    .unwrap();
    assert_eq!(report.resumed_at, 4);
    assert_eq!(steps, (5..=12).collect::<Vec<_>>(), "steps 5 to 6 are redone from the checkpoint at 4");
    assert!(!dir.path().join(".broken.checkpoint").exists(), "the checkpoint goes once the run ends");
    let read = |p: &Path| std::fs::read(p.join("adapter_model.safetensors")).unwrap();
    assert!(read(&whole.out) == read(&broken.out), "resumed weights equal the unbroken run's");
    assert_eq!(std::fs::read_to_string(whole.out.join("metrics.jsonl")).unwrap().lines().count(), 12);

    // Another seed: other weights.
    let mut other = config(dir.path(), &base, &train_set, "other");
    other.seed = 1;
    train(&other, &mut |_, _| true).unwrap();
    assert!(read(&whole.out) != read(&other.out));
}

#[test]
fn full_training_writes_a_model_folder_and_bad_settings_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, _) = setup(dir.path());
    let mut full = config(dir.path(), &base, &train_set, "full");
    full.method = Method::Full;
    full.steps = Some(3);
    let report = train(&full, &mut |_, _| true).unwrap();
    assert!(report.trainable_parameters > 400_000, "{}", report.trainable_parameters);
    let model = Llama::load(&full.out, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    assert_eq!(model.config, whetstone_selfimprove::train::llama::LlamaConfig::read(&base).unwrap());
    whetstone_selfimprove::ModelFolder::open(&full.out).unwrap();

    // A weight the forward pass would not use is refused rather than dropped.
    let biased = dir.path().join("biased");
    std::fs::create_dir(&biased).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(base.join(f), biased.join(f)).unwrap();
    }
    let mut weights = candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    weights.insert("model.layers.0.mlp.up_proj.bias".into(), Tensor::zeros(352, DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&weights, biased.join("model.safetensors")).unwrap();
    let e = Llama::load(&biased, &Device::Cpu, DType::F32, &Trainable::Frozen).err().unwrap().to_string();
    assert!(e.contains("model.layers.0.mlp.up_proj.bias") && e.contains("mlp_bias"), "{e}");

    let refused = |change: &dyn Fn(&mut TrainConfig)| {
        let mut c = config(dir.path(), &base, &train_set, "refused");
        change(&mut c);
        train(&c, &mut |_, _| true).unwrap_err().to_string()
    };
    let e = refused(&|c| c.lora.targets = vec!["qkv_proj".into()]);
    assert!(e.contains("unknown LoRA target module \"qkv_proj\"") && e.contains("q_proj"), "{e}");
    let e = refused(&|c| c.lora.r = 0);
    assert!(e.contains("rank must be at least 1"), "{e}");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let e = refused(&|c| c.data = empty.clone());
    assert!(e.contains("empty.jsonl") && e.contains("empty"), "{e}");
    let unanswered = dir.path().join("unanswered.jsonl");
    std::fs::write(&unanswered, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n").unwrap();
    let e = refused(&|c| {
        c.data = unanswered.clone();
        c.on_error = whetstone_selfimprove::train::OnError::Skip;
    });
    assert!(e.contains("unanswered.jsonl: no examples to train on (2 rows read, 2 rejected)"), "{e}");
    let e = refused(&|c| c.max_len = Some(65));
    assert!(e.contains("longer than the model's context (64"), "{e}");
    let long = dir.path().join("long.jsonl");
    std::fs::write(
        &long,
        format!("{}{{\"id\": \"x\", \"prompt\": \"{}\", \"response\": \"y\"}}\n", rows(0..5), "word ".repeat(80)),
    )
    .unwrap();
    let e = refused(&|c| c.data = long.clone());
    assert!(e.contains("long.jsonl: row 6 (id x)") && e.contains("--on-error skip"), "{e}");
    let mut skip = config(dir.path(), &base, &long, "skipped");
    skip.on_error = whetstone_selfimprove::train::OnError::Skip;
    skip.steps = Some(1);
    skip.schedule.warmup = 0;
    let report = train(&skip, &mut |_, _| true).unwrap();
    assert_eq!((report.rows_in, report.examples, report.rejected.by_reason["too_long"]), (6, 5, 1));
    let e = refused(&|c| c.distill_alpha = 0.5);
    assert!(e.contains("teacher"), "{e}");
}

#[test]
fn kl_to_the_base_and_distillation_from_a_teacher_run_and_pull_toward_their_targets() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, eval_set) = setup(dir.path());
    // Distilling from the base itself with α = 0 keeps the model at the base: nothing to learn.
    let mut distil = config(dir.path(), &base, &train_set, "distil");
    distil.teacher = Some(base.clone());
    distil.distill_alpha = 0.0;
    distil.eval = Some(eval_set.clone());
    distil.lora.dropout = 0.0;
    let r = train(&distil, &mut |m, _| {
        // KL(base ‖ base) is 0 at the start and its gradient too; Adam turns rounding noise into small steps.
        assert!(m.objective.abs() < 1e-2, "the model stays near the base: {m:?}");
        true
    })
    .unwrap();
    assert!((r.eval_loss_after.unwrap() - r.eval_loss_before.unwrap()).abs() < 0.05, "{r:?}");

    // A strong KL term holds the model nearer the base than training without it, measured in the KL itself.
    let eval = eval_examples(&base, &eval_set);
    let rows: Vec<Vec<u32>> = eval.examples.iter().map(|e| e.tokens.clone()).take(8).collect();
    let width = rows.iter().map(Vec::len).min().unwrap();
    let rows: Vec<Vec<u32>> = rows.into_iter().map(|r| r[..width].to_vec()).collect();
    let base_model = Llama::load(&base, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    let log_softmax = |t: Tensor| candle_nn::ops::log_softmax(&t, candle_core::D::Minus1).unwrap();
    let base_logp = log_softmax(logits(&base_model, &rows));
    let kl_from_base = |out: &Path| {
        let (model, _) = load_with_adapter(&base, out, &Device::Cpu, DType::F32).unwrap();
        let logp = log_softmax(logits(&model, &rows));
        let kl = (logp.exp().unwrap() * (&logp - &base_logp).unwrap()).unwrap().sum(candle_core::D::Minus1).unwrap();
        kl.mean_all().unwrap().to_scalar::<f32>().unwrap()
    };
    train(&config(dir.path(), &base, &train_set, "free"), &mut |_, _| true).unwrap();
    let mut held = config(dir.path(), &base, &train_set, "held");
    held.kl_beta = 5.0;
    train(&held, &mut |_, _| true).unwrap();
    let (free_kl, held_kl) = (kl_from_base(&dir.path().join("free")), kl_from_base(&held.out));
    assert!(held_kl < 0.8 * free_kl, "KL(model ‖ base) with β = 5: {held_kl}, without: {free_kl}");
}
