//! The trainer's forward pass and mistral.rs give the same logits for the same folder and tokens (f32, CPU),
//! before training and after a LoRA run merged into a folder: what is trained is what generates.
#![cfg(feature = "llm")]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use whetstone_selfimprove::engine::{Backend, Engine, EngineOptions, Prompt, PromptMode};
use whetstone_selfimprove::train::llama::{Inputs, Llama, Trainable, TARGET_MODULES};
use whetstone_selfimprove::train::lora::{load_with_adapter, merge};
use whetstone_selfimprove::train::schedule::Schedule;
use whetstone_selfimprove::train::{train, LoraConfig, TrainConfig};
use whetstone_selfimprove::{make_tiny_model, ModelFolder, TinyLlama};

fn engine(folder: &Path) -> Engine {
    let options = EngineOptions { dtype: "f32".into(), backend: Backend::MistralRs, ..EngineOptions::on(true) };
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

/// `greedy_exact` (one teacher-forced candle pass) says a row is right exactly when mistral.rs's greedy
/// answer, checked by the exact-match verifier, is right: the benchmark's accuracy is greedy accuracy.
#[test]
fn teacher_forced_exact_match_agrees_with_mistral_rs_greedy_answers() {
    use whetstone_selfimprove::bench::skills;
    use whetstone_selfimprove::engine::greedy_answers;
    use whetstone_selfimprove::prompt::PromptTokenizer;
    use whetstone_selfimprove::reward::{verify::ExactMatch, Candidate, Reward};
    use whetstone_selfimprove::tasks::TaskRow;
    use whetstone_selfimprove::train::data::example;
    use whetstone_selfimprove::train::greedy_exact;
    use whetstone_selfimprove::train::schedule::Shape;

    let dir = tempfile::tempdir().unwrap();
    let data = skills::make(3000, 4, 0.0, 5).unwrap();
    let lines: String = data
        .pool
        .iter()
        .map(|r| serde_json::json!({"id": r.id, "prompt": r.prompt, "response": r.response}).to_string() + "\n")
        .collect();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, lines).unwrap();
    let base = dir.path().join("tiny");
    make_tiny_model(&base, std::slice::from_ref(&pool), &TinyLlama { vocab: 400, context: 128, ..Default::default() })
        .unwrap();
    let trained = dir.path().join("trained");
    let config = TrainConfig {
        base,
        data: pool,
        out: trained.clone(),
        method: whetstone_selfimprove::train::Method::Full,
        schedule: Schedule { lr: 3e-3, warmup: 5, floor: 0.1, shape: Shape::Cosine, ..Default::default() },
        steps: Some(150),
        cpu: true,
        ..Default::default()
    };
    train(&config, &mut |_, _| true).unwrap();

    // Held-out rows and rows trained on, so that some answers are right and some wrong.
    let rows: Vec<TaskRow> = data
        .test
        .iter()
        .chain(data.pool.iter().take(60))
        .map(|r| TaskRow { id: r.id.clone(), prompt: r.prompt.clone(), response: r.response.clone() })
        .collect();
    let tokenizer = PromptTokenizer::new(&ModelFolder::open(&trained).unwrap()).unwrap();
    let examples: Vec<_> = rows
        .iter()
        .map(|r| example(&tokenizer, &Prompt::Text(r.prompt.clone()), &r.response, PromptMode::Chat).unwrap())
        .collect();
    let model = Llama::load(&trained, &Device::Cpu, DType::F32, &Trainable::Frozen).unwrap();
    let teacher_forced = greedy_exact(&model, &examples, 16, 128).unwrap();

    let answers = greedy_answers(&engine(&trained), rows.iter().map(|r| r.prompt.as_str()), 24).unwrap();
    let verifier = ExactMatch { case_sensitive: true };
    let generated: Vec<bool> = rows
        .iter()
        .zip(&answers)
        .map(|(r, a)| {
            let c = Candidate { prompt: &r.prompt, response: a, reference: Some(&r.response), ..Default::default() };
            verifier.score(&c).value == 1.0
        })
        .collect();
    let right = generated.iter().filter(|&&ok| ok).count();
    assert!(right >= 5 && right + 5 <= rows.len(), "{right} of {} right: the check needs both kinds", rows.len());
    let differ: Vec<String> = (0..rows.len())
        .filter(|&i| teacher_forced[i] != generated[i])
        .map(|i| format!("{:?} → {:?} (reference {:?})", rows[i].prompt, answers[i], rows[i].response))
        .collect();
    assert!(differ.is_empty(), "teacher-forced and generated verdicts differ on {} rows: {differ:#?}", differ.len());
}
