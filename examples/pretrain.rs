//! Pre-trains a tiny Llama from scratch on 2-digit addition (CPU, full training) and measures held-out
//! exact-match accuracy with greedy decoding in mistral.rs, before and after; then LoRA-fine-tunes the
//! result on 3-digit sums and reports held-out loss. The measurement behind the trainer's numbers:
//!
//!     cargo run --release --example pretrain -- [STEPS] [LORA_STEPS]

use std::time::Instant;

use whetstone::selfimprove::engine::greedy_answers;
use whetstone::selfimprove::engine::{Engine, EngineOptions};
use whetstone::selfimprove::tasks::{addition, exact_match, write_jsonl};
use whetstone::selfimprove::train::llama::TARGET_MODULES;
use whetstone::selfimprove::train::schedule::{Schedule, Shape};
use whetstone::selfimprove::train::{train, LoraConfig, Method, TrainConfig};
use whetstone::selfimprove::{make_tiny_model, ModelFolder, TinyLlama};

fn accuracy(folder: &std::path::Path, rows: &[whetstone::selfimprove::tasks::TaskRow]) -> f64 {
    let engine = Engine::load(ModelFolder::open(folder).unwrap(), EngineOptions::default()).unwrap();
    exact_match(rows, &greedy_answers(&engine, rows.iter().map(|r| r.prompt.as_str()), 6).unwrap())
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number of steps")).collect();
    let (steps, lora_steps) = (args.first().copied().unwrap_or(600), args.get(1).copied().unwrap_or(100));
    let dir = tempfile::tempdir().unwrap();
    let task = addition(2, 9_500, 500, 0).unwrap();
    let (train_set, test_set) = (dir.path().join("train.jsonl"), dir.path().join("test.jsonl"));
    write_jsonl(&train_set, &task.train).unwrap();
    write_jsonl(&test_set, &task.test).unwrap();
    let base = dir.path().join("tiny");
    make_tiny_model(
        &base,
        std::slice::from_ref(&train_set),
        &TinyLlama { vocab: 300, context: 64, ..Default::default() },
    )
    .unwrap();
    let test_rows = &task.test[..200];
    let before = accuracy(&base, test_rows);

    let started = Instant::now();
    let full = TrainConfig {
        base: base.clone(),
        data: train_set.clone(),
        eval: Some(test_set.clone()),
        out: dir.path().join("pretrained"),
        method: Method::Full,
        schedule: Schedule { lr: 3e-3, warmup: steps / 20, floor: 0.1, shape: Shape::Cosine, ..Default::default() },
        batch: 16,
        steps: Some(steps),
        eval_every: steps / 4,
        cpu: true,
        ..Default::default()
    };
    let report = train(&full, &mut |m, n| {
        if m.step % 50 == 0 || m.step == n {
            eprintln!("step {}/{n} loss {:.3} lr {:.2e} {:.0} tokens/s", m.step, m.loss, m.lr, m.tokens_per_s);
        }
        true
    })
    .unwrap();
    let after = accuracy(&full.out, test_rows);
    println!(
        "full training from scratch: {} steps, {} parameters, {:.0} tokens/s, {:.0} s; held-out loss {:.3} -> {:.3}; \
         exact match on {} held-out sums: {:.1}% -> {:.1}% (chance about 0.5%)",
        report.steps,
        report.trainable_parameters,
        report.tokens_per_s,
        started.elapsed().as_secs_f64(),
        report.eval_loss_before.unwrap(),
        report.eval_loss_after.unwrap(),
        test_rows.len(),
        100.0 * before,
        100.0 * after
    );

    // LoRA on a shifted task: sums with a 3-digit first number.
    let shifted: Vec<_> =
        addition(3, 4_000, 500, 1).unwrap().train.into_iter().filter(|r| r.prompt.len() > 15).collect();
    let (lora_train, lora_test) = (dir.path().join("lora-train.jsonl"), dir.path().join("lora-test.jsonl"));
    write_jsonl(&lora_train, &shifted[300..]).unwrap();
    write_jsonl(&lora_test, &shifted[..300]).unwrap();
    let lora = TrainConfig {
        base: full.out.clone(),
        data: lora_train,
        eval: Some(lora_test),
        out: dir.path().join("adapter"),
        lora: LoraConfig { r: 8, alpha: 16.0, dropout: 0.05, targets: TARGET_MODULES.map(String::from).to_vec() },
        schedule: Schedule {
            lr: 2e-3,
            warmup: lora_steps / 10,
            floor: 0.1,
            shape: Shape::Cosine,
            ..Default::default()
        },
        batch: 16,
        steps: Some(lora_steps),
        cpu: true,
        ..Default::default()
    };
    let r = train(&lora, &mut |_, _| true).unwrap();
    println!(
        "LoRA (r 8, all 7 modules): {} steps, {} trainable parameters, {:.0} tokens/s; held-out loss {:.3} -> {:.3}",
        r.steps,
        r.trainable_parameters,
        r.tokens_per_s,
        r.eval_loss_before.unwrap(),
        r.eval_loss_after.unwrap()
    );
}
