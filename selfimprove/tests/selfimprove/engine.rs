//! The engine on a tiny model made here: seeded, distinct samples; scores that agree with generation;
//! clear errors for prompts the context cannot hold.
#![cfg(feature = "llm")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use whetstone_datasets::run_stage;
use whetstone_selfimprove::engine::generate::{Counter, GenerateStep, OnEngine};
use whetstone_selfimprove::engine::{Backend, Engine, EngineOptions, Job, Prompt, PromptMode, Sample};
use whetstone_selfimprove::{make_tiny_model, ModelFolder, Sampling, TinyLlama};

fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.jsonl");
    let rows: String = (0..400)
        .map(|i| {
            format!(
                "{{\"prompt\": \"Tom has {i} apples and buys {} more. How many apples does he have?\", \
                 \"response\": \"He has {i} + {} = {} apples.\\n#### {}\"}}\n",
                i % 7,
                i % 7,
                i + i % 7,
                i + i % 7
            )
        })
        .collect();
    std::fs::write(&path, rows).unwrap();
    path
}

fn tiny(dir: &Path) -> PathBuf {
    let folder = dir.join("tiny");
    let spec = TinyLlama { vocab: 512, context: 96, ..Default::default() };
    make_tiny_model(&folder, &[corpus(dir)], &spec).unwrap();
    folder
}

fn engine(folder: &Path, max_batch: usize) -> Engine {
    engine_on(folder, max_batch, Backend::Auto)
}

fn engine_on(folder: &Path, max_batch: usize, backend: Backend) -> Engine {
    Engine::load(
        ModelFolder::open(folder).unwrap(),
        EngineOptions { cpu: true, max_batch, dtype: "auto".into(), log: false, backend, paged_attention: false },
    )
    .unwrap()
}

fn jobs(engine: &Engine, sampling: &Sampling, prompts: &[String]) -> Vec<Job> {
    prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let tokens = Arc::new(engine.prompt_tokens(&Prompt::Text(p.clone()), PromptMode::Chat).unwrap());
            (0..sampling.n as u32).map(move |k| Job {
                prompt_tokens: tokens.clone(),
                stream: sampling.stream(&format!("p{i}"), k),
                max_tokens: sampling.max_tokens,
            })
        })
        .collect()
}

#[test]
fn samples_are_distinct_seeded_and_their_log_probs_match_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny(dir.path());
    let batched = engine(&folder, 32);
    let prompts: Vec<String> = (0..8).map(|i| format!("Sara reads {i} pages a day. How many in a week?")).collect();
    let sampling = Sampling { n: 4, temperature: 1.0, max_tokens: 24, ..Default::default() };
    let samples = batched.generate(jobs(&batched, &sampling, &prompts), &sampling, &|_| {}).unwrap();
    assert_eq!(samples.len(), 32);

    // Temperature alone samples (in mistral.rs 0.8.1 it gave greedy output): four distinct texts per prompt.
    let all_distinct = samples
        .chunks(4)
        .filter(|g| g.iter().map(|s| &s.text).collect::<std::collections::HashSet<_>>().len() == 4)
        .count();
    assert!(all_distinct >= 7, "only {all_distinct} of 8 prompts got 4 distinct samples");
    for s in &samples {
        assert_eq!(s.tokens.len(), s.log_probs.len());
        assert!(!s.tokens.is_empty() && s.tokens.len() <= 24);
        assert!(s.log_probs.iter().all(|l| l.is_finite() && *l <= 0.0));
        assert!(["stop", "length"].contains(&s.finish_reason.as_str()), "{}", s.finish_reason);
    }

    // Scoring the drawn tokens after their prompt (one forward pass over the whole sequence) gives the
    // log-probabilities generation recorded token by token (incremental decoding with a KV cache, left-padded
    // batches of 32). This is the check that caught mistral.rs 0.8.1 mixing up the sequences of a CPU decode
    // batch (see engine.rs); on the CPU whetstone's own decoder runs the batch.
    assert_eq!((batched.options().max_batch, batched.options().backend), (32, Backend::Whetstone));
    for (i, group) in samples.chunks(4).enumerate() {
        let prompt = batched.prompt_tokens(&Prompt::Text(prompts[i].clone()), PromptMode::Chat).unwrap();
        for s in group {
            let scored = batched.score(&prompt, &s.tokens).unwrap();
            for (a, b) in scored.iter().zip(&s.log_probs) {
                assert!((a - b).abs() < 1e-4, "prompt {i}: scored {a} vs generated {b}");
            }
        }
    }

    // The same seed gives the same samples, whatever else is asked for at the same time; another seed
    // gives others.
    let again = batched.generate(jobs(&batched, &sampling, &prompts), &sampling, &|_| {}).unwrap();
    assert_eq!(again, samples);
    drop(batched);
    let single = engine(&folder, 1);
    let fewer = single.generate(jobs(&single, &sampling, &prompts[..2]), &sampling, &|_| {}).unwrap();
    // The same tokens; their log-probabilities to rounding (a batch of another size sums in another order).
    let drawn = |s: &[Sample]| s.iter().map(|s| (s.text.clone(), s.tokens.clone())).collect::<Vec<_>>();
    assert_eq!(drawn(&fewer), drawn(&samples[..8]));
    for (a, b) in fewer.iter().zip(&samples).flat_map(|(a, b)| a.log_probs.iter().zip(&b.log_probs)) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // mistral.rs, one sequence at a time, draws the same tokens from its own forward passes. (Their texts
    // differ where a special token other than the end of sequence was drawn: mistral.rs writes it as "�",
    // toktrie's marker byte, and whetstone's decoder leaves it out, as `tokenizers` does.)
    let mistral_rs = engine_on(&folder, 1, Backend::MistralRs);
    let theirs = mistral_rs.generate(jobs(&mistral_rs, &sampling, &prompts[..2]), &sampling, &|_| {}).unwrap();
    let tokens = |s: &[Sample]| s.iter().map(|s| (s.tokens.clone(), s.finish_reason.clone())).collect::<Vec<_>>();
    assert_eq!(tokens(&theirs), tokens(&samples[..8]));
    drop(mistral_rs);
    let reseeded = Sampling { seed: 1, ..sampling.clone() };
    let other = single.generate(jobs(&single, &reseeded, &prompts[..2]), &reseeded, &|_| {}).unwrap();
    assert_ne!(other[..], samples[..8]);

    // Greedy tokens (each the most likely after its prefix) score above the same tokens shuffled.
    let greedy = Sampling { temperature: 0.0, max_tokens: 16, ..Default::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for (i, p) in prompts.iter().enumerate() {
        let prompt = single.prompt_tokens(&Prompt::Text(p.clone()), PromptMode::Chat).unwrap();
        let job = Job { prompt_tokens: Arc::new(prompt.clone()), stream: i as u64, max_tokens: 16 };
        let Sample { tokens, .. } = single.generate(vec![job], &greedy, &|_| {}).unwrap().remove(0);
        let mut shuffled = tokens.clone();
        while shuffled == tokens && tokens.len() > 1 {
            shuffled.shuffle(&mut rng);
        }
        let sum = |t: &[u32]| single.score(&prompt, t).unwrap().iter().sum::<f64>();
        assert!(sum(&tokens) > sum(&shuffled), "prompt {i}: greedy {} vs shuffled {}", sum(&tokens), sum(&shuffled));
    }
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error_naming_the_row_or_a_counted_skip() {
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny(dir.path());
    let engine = engine(&folder, 8);
    let input = dir.path().join("prompts.jsonl");
    let long = "How many apples does Tom have? ".repeat(40);
    std::fs::write(
        &input,
        format!(
            "{{\"id\": \"a\", \"prompt\": \"Tom has 3 apples.\"}}\n{{\"id\": \"b\", \"prompt\": \"{long}\"}}\n\
             {{\"id\": \"c\", \"prompt\": \"Sara has 2 pears.\"}}\n"
        ),
    )
    .unwrap();
    let step =
        GenerateStep { sampling: Sampling { n: 2, max_tokens: 8, ..Default::default() }, mode: PromptMode::Chat };
    let out = dir.path().join("out.parquet");
    let generation = OnEngine { step: &step, engine: &engine, counter: &Counter::default() };
    let err = run_stage(&generation, &input, &out, Default::default(), |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("prompts.jsonl: row 2 (id b), field prompt") && err.contains("context is 96"), "{err}");
    assert!(!out.exists(), "no partial output");

    let skip = whetstone_datasets::ReadOptions { on_error: whetstone_datasets::OnError::Skip, ..Default::default() };
    let m = run_stage(&generation, &input, &out, skip, |_, _| {}).unwrap().manifest;
    assert_eq!((m.rows.rows_in, m.rows.rows_out, m.rows.rows_rejected, m.rows.per_row), (3, 4, 1, 2));
    assert_eq!(m.rejected.by_reason.get("prompt_too_long"), Some(&1));
    assert_eq!(m.results["samples"], 4);
}

/// A model whose next-token distribution is known by hand: every embedding is all ones, the attention and MLP
/// outputs are zero (o_proj and down_proj zero), so the final hidden state is RMSNorm(1) = 1/√(1 + ε) in
/// every dimension, and `lm_head` row y is (l_y, 0, …, 0): the logits are l_y/√(1 + ε) after any context.
#[test]
fn scores_equal_a_hand_computed_log_likelihood() {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny(dir.path());
    let weights = folder.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let (vocab, hidden) = tensors["lm_head.weight"].dims2().unwrap();
    let l: Vec<f32> = (0..vocab).map(|y| ((y * 37) % 11) as f32 / 4.0).collect();
    let mut head = vec![0f32; vocab * hidden];
    for y in 0..vocab {
        head[y * hidden] = l[y];
    }
    tensors.insert("lm_head.weight".into(), Tensor::from_vec(head, (vocab, hidden), &Device::Cpu).unwrap());
    tensors.insert(
        "model.embed_tokens.weight".into(),
        Tensor::ones((vocab, hidden), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    for (name, t) in tensors.iter_mut() {
        if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            *t = t.zeros_like().unwrap();
        }
    }
    candle_core::safetensors::save(&tensors, &weights).unwrap();

    let engine = engine(&folder, 1);
    let prompt = engine.prompt_tokens(&Prompt::Text("Tom has 3 apples.".into()), PromptMode::Chat).unwrap();
    let response = engine.response_tokens("He has 3 + 4 = 7 apples.", PromptMode::Chat).unwrap();
    assert_eq!(response.last(), engine.folder().eos.first(), "the response is scored up to its end");
    let scale = 1.0 / (1.0 + 1e-5f64).sqrt();
    let logits: Vec<f64> = l.iter().map(|&x| x as f64 * scale).collect();
    let log_z = logits.iter().map(|x| x.exp()).sum::<f64>().ln();
    let by_hand: Vec<f64> = response.iter().map(|&t| logits[t as usize] - log_z).collect();
    let scored = engine.score(&prompt, &response).unwrap();
    assert_eq!(scored.len(), by_hand.len());
    for (got, want) in scored.iter().zip(&by_hand) {
        assert!((got - want).abs() < 1e-5, "scored {got}, by hand {want}");
    }

    // The same through the score stage: the row's log-likelihood, mean and perplexity.
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, "{\"prompt\": \"Tom has 3 apples.\", \"response\": \"He has 3 + 4 = 7 apples.\"}\n")
        .unwrap();
    let out = dir.path().join("scored.parquet");
    let step = whetstone_selfimprove::engine::generate::ScoreStep { mode: PromptMode::Chat };
    run_stage(
        &OnEngine { step: &step, engine: &engine, counter: &Counter::default() },
        &input,
        &out,
        Default::default(),
        |_, _| {},
    )
    .unwrap();
    let (batches, _) = whetstone_datasets::read_all(&out, Default::default()).unwrap();
    let column = |name: &str| {
        use arrow::array::AsArray;
        batches[0].column_by_name(name).unwrap().as_primitive::<arrow::datatypes::Float64Type>().value(0)
    };
    let sum: f64 = by_hand.iter().sum();
    assert!((column("log_likelihood") - sum).abs() < 1e-4);
    assert!((column("perplexity") - (-sum / by_hand.len() as f64).exp()).abs() < 1e-4);
}
