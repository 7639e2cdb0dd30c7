//! The trainer's forward pass and mistral.rs give the same logits for the same folder and tokens (f32, CPU),
//! before training and after a LoRA run merged into a folder: what is trained is what generates.
#![cfg(feature = "llm")]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use whetstone_selfimprove::engine::{Engine, EngineOptions, Prompt, PromptMode};
use whetstone_selfimprove::train::llama::{Inputs, Llama, Trainable, TARGET_MODULES};
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
            tokens.extend(engine.response_tokens("3 + 4 = 7", PromptMode::Chat).unwrap());
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
        lora: LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, targets: TARGET_MODULES.map(String::from).to_vec() },
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

/// A tiny Llama folder turned into a Qwen2 one: q/k/v biases (seeded, non-zero) and tied embeddings.
fn qwen2_from(llama: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for entry in std::fs::read_dir(llama).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
    config["model_type"] = "qwen2".into();
    config["tie_word_embeddings"] = true.into();
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let mut weights = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    weights.remove("lm_head.weight");
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    for l in 0..layers {
        for (i, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            let rows = weights[&format!("model.layers.{l}.self_attn.{name}.weight")].dim(0).unwrap();
            let bias: Vec<f32> = (0..rows).map(|r| ((r * 7 + i * 13 + l as usize) % 11) as f32 * 0.02 - 0.1).collect();
            weights.insert(format!("model.layers.{l}.self_attn.{name}.bias"), Tensor::new(bias, &Device::Cpu).unwrap());
        }
    }
    candle_core::safetensors::save(&weights, out.join("model.safetensors")).unwrap();
}

#[test]
fn a_qwen2_folder_with_attention_biases_and_tied_embeddings_gives_mistral_rs_s_logits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(
        &data,
        (0..200).map(|i| format!("Question {i}: what is {i} times 3? It is {}.\n", 3 * i)).collect::<String>(),
    )
    .unwrap();
    let llama = dir.path().join("llama");
    make_tiny_model(&llama, std::slice::from_ref(&data), &TinyLlama { vocab: 320, context: 64, ..Default::default() })
        .unwrap();
    let qwen = dir.path().join("qwen2");
    qwen2_from(&llama, &qwen);
    let model = Llama::load(&qwen, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    let engine = engine(&qwen);
    let tokens =
        engine.prompt_tokens(&Prompt::Text("Question 7: what is 7 times 3?".into()), PromptMode::Chat).unwrap();
    let d = max_abs_diff(&engine.logits(&tokens).unwrap(), &candle_logits(&model, &tokens));
    eprintln!("qwen2: {} tokens, max |Δ logit| = {d:.2e}", tokens.len());
    assert!(d < 1e-4, "logits differ by {d}");
    let without_biases = Llama::load(&llama, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    assert!(
        max_abs_diff(&candle_logits(&without_biases, &tokens), &candle_logits(&model, &tokens)) > 1e-3,
        "the Qwen2 parts (biases, tied head) count"
    );
}
