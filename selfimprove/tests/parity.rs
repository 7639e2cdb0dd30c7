//! The trainer's forward pass and mistral.rs give the same logits for the same folder and tokens (f32, CPU),
//! before training and after a LoRA run merged into a folder: what is trained is what generates.
#![cfg(feature = "llm")]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use whetstone_selfimprove::engine::{Engine, EngineOptions, Prompt, PromptMode};
use whetstone_selfimprove::train::llama::{Inputs, Llama, Trainable};
use whetstone_selfimprove::train::lora::{load_with_adapter, merge};
use whetstone_selfimprove::train::schedule::Schedule;
use whetstone_selfimprove::train::{train, LoraConfig, TrainConfig};
use whetstone_selfimprove::{make_tiny_model, ModelFolder, TinyLlama};

fn engine(folder: &Path) -> Engine {
    let options = EngineOptions { cpu: true, max_batch: 1, dtype: "f32".into(), log: false };
    Engine::load(ModelFolder::open(folder).unwrap(), options).unwrap()
}

fn candle_logits(model: &Llama, tokens: &[u32]) -> Tensor {
    let inputs = Inputs::causal(&[tokens.to_vec()], &Device::Cpu, DType::F32).unwrap();
    model.forward(&inputs, true, None).unwrap().squeeze(0).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn candle_and_mistral_rs_agree_on_logits_before_and_after_a_merged_lora_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    let rows: String = (0..120)
        .map(|i| {
            format!("{{\"prompt\": \"Add {i} and {}.\", \"response\": \"{} + {} = {}\"}}\n", i % 9, i, i % 9, i + i % 9)
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let base = dir.path().join("tiny");
    // Grouped-query attention (4 heads, 2 key/value heads) so the head repetition is checked too.
    let spec = TinyLlama { vocab: 400, hidden: 256, heads: 4, kv_heads: 2, context: 96, ..Default::default() };
    make_tiny_model(&base, std::slice::from_ref(&data), &spec).unwrap();

    let prompts = ["Add 3 and 4.", "Add 100 and 7. Then add it again, and once more, slowly."];
    let check = |folder: &Path, model: &Llama, what: &str| {
        let engine = engine(folder);
        for p in prompts {
            let mut tokens = engine.prompt_tokens(&Prompt::Text(p.into()), PromptMode::Chat).unwrap();
            tokens.extend(engine.response_tokens("3 + 4 = 7").unwrap());
            let theirs = engine.logits(&tokens).unwrap();
            let ours = candle_logits(model, &tokens);
            assert_eq!(theirs.dims(), ours.dims());
            let d = max_abs_diff(&theirs, &ours);
            eprintln!("{what}: {} tokens, max |Δ logit| = {d:.2e}", tokens.len());
            assert!(d < 1e-4, "{what}: logits differ by {d}");
        }
    };
    let model = Llama::load(&base, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    check(&base, &model, "base");

    let config = TrainConfig {
        base: base.clone(),
        data: data.clone(),
        out: dir.path().join("adapter"),
        lora: LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
        },
        schedule: Schedule { lr: 1e-2, ..Default::default() },
        steps: Some(10),
        cpu: true,
        ..Default::default()
    };
    train(&config, &mut |_, _| true).unwrap();
    let merged = dir.path().join("merged");
    merge(&base, &config.out, &merged).unwrap();
    let (adapted, _) = load_with_adapter(&base, &config.out, &Device::Cpu, DType::F32).unwrap();
    let moved = max_abs_diff(&candle_logits(&adapted, &[5, 6, 7]), &candle_logits(&model, &[5, 6, 7]));
    assert!(moved > 1e-2, "training moved the logits ({moved})");
    check(&merged, &adapted, "merged adapter");
}
