//! `whet model tiny`, `whet generate` and `whet score` end to end, on the real GSM8K data.

use crate::common::{s, shared_data, whet_fails, whet_ok};

#[test]
fn whet_model_tiny_writes_a_hugging_face_folder_from_gsm8k() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny");
    let corpus = data.join("gsm8k/train.jsonl");
    let printed = whet_ok(&["model", "tiny", out.to_str().unwrap(), "--corpus", corpus.to_str().unwrap()]);
    assert!(printed.contains("head size 64") && printed.contains("14,946"), "{printed}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    let made: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("whetstone-model.json")).unwrap()).unwrap();
    assert_eq!(made["model"]["corpus_texts"], 14946, "7,473 questions and their answers");

    let err = whet_fails(&["model", "tiny", out.to_str().unwrap(), "--corpus", corpus.to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
    let missing = tmp.path().join("no-such.jsonl");
    let err =
        whet_fails(&["model", "tiny", tmp.path().join("t2").to_str().unwrap(), "--corpus", missing.to_str().unwrap()]);
    assert!(err.contains("no-such.jsonl"), "{err}");
}

/// Reads a whole dataset written by whet.
fn rows(path: &std::path::Path) -> Vec<arrow::array::RecordBatch> {
    whetstone::datasets::read_all(path, Default::default()).unwrap().0
}

fn strings(batches: &[arrow::array::RecordBatch], column: &str) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).unwrap_or_else(|| panic!("no column {column}")).as_string::<i32>();
            (0..c.len()).map(|i| c.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

fn f64s(batches: &[arrow::array::RecordBatch], column: &str) -> Vec<f64> {
    use arrow::array::AsArray;
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column).unwrap().as_primitive::<arrow::datatypes::Float64Type>().values().to_vec()
        })
        .collect()
}

#[test]
fn whet_generate_gives_four_distinct_seeded_samples_per_gsm8k_question_and_whet_score_scores_them() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    whet_ok(&["model", "tiny", s(&model), "--corpus", s(&data.join("gsm8k/train.jsonl"))]);
    let questions = tmp.path().join("questions.jsonl");
    let test = std::fs::read_to_string(data.join("gsm8k/test.jsonl")).unwrap();
    std::fs::write(&questions, test.lines().take(40).map(|l| format!("{l}\n")).collect::<String>()).unwrap();

    let samples = tmp.path().join("samples.parquet");
    let generate = |out: &std::path::Path, seed: &str| {
        whet_ok(&["generate", s(&model), s(&questions), s(out), "-n", "4", "--max-tokens", "48", "--seed", seed])
    };
    let printed = generate(&samples, "7");
    assert!(printed.contains("tokens/s") && printed.contains("of 40 prompts"), "{printed}");
    let out = rows(&samples);
    let texts = strings(&out, "response");
    assert_eq!(texts.len(), 160);
    let distinct = texts.chunks(4).filter(|g| g.iter().collect::<std::collections::HashSet<_>>().len() == 4).count();
    assert!(distinct >= 38, "only {distinct} of 40 questions got 4 distinct samples");
    let gold: Vec<String> = test
        .lines()
        .take(40)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["answer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(strings(&out, "reference")[4], gold[1], "the gold answer rides along");
    assert_eq!(strings(&out, "prompt_id")[5], strings(&out, "id")[5].rsplit_once('#').unwrap().0);
    assert!(strings(&out, "generator")[0].contains("xxh3:"));
    let sampling: serde_json::Value = serde_json::from_str(&strings(&out, "sampling")[0]).unwrap();
    assert_eq!((sampling["n"].as_u64(), sampling["seed"].as_u64()), (Some(4), Some(7)));
    assert!(f64s(&out, "log_likelihood").iter().all(|l| l.is_finite() && *l < 0.0));
    let counted: Vec<u32> = out
        .iter()
        .flat_map(|b| {
            use arrow::array::AsArray;
            b.column_by_name("response_tokens")
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values()
                .to_vec()
        })
        .collect();
    let ids: Vec<usize> = out
        .iter()
        .flat_map(|b| {
            use arrow::array::{Array, AsArray};
            let list = b.column_by_name("response_token_ids").unwrap().as_list::<i32>().clone();
            (0..list.len()).map(move |i| list.value(i).len()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, counted.iter().map(|&n| n as usize).collect::<Vec<_>>(), "one id per generated token");
    assert!(counted.iter().all(|&n| (1..=48).contains(&n)));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("samples.parquet.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["rows"], serde_json::json!({"in": 40, "out": 160, "rejected": 0, "per_row": 4}));
    assert!(manifest["results"]["response_tokens_per_second"].as_f64().unwrap() > 0.0);

    // The same seed gives the same samples; another seed, others.
    let again = tmp.path().join("again.parquet");
    generate(&again, "7");
    assert_eq!(strings(&rows(&again), "response"), texts);
    let other = tmp.path().join("other.parquet");
    generate(&other, "8");
    assert_ne!(strings(&rows(&other), "response"), texts);

    // Scoring the samples: finite log-likelihoods, one per row.
    let scored = tmp.path().join("scored.parquet");
    let printed = whet_ok(&["score", s(&model), s(&samples), s(&scored)]);
    assert!(printed.contains("median perplexity"), "{printed}");
    let scores = rows(&scored);
    let ll = f64s(&scores, "log_likelihood");
    assert_eq!(ll.len(), 160);
    assert!(ll.iter().all(|l| l.is_finite() && *l < 0.0));
    assert!(f64s(&scores, "perplexity").iter().all(|p| p.is_finite() && *p > 1.0));

    // The likelihood reward: exp(mean log-prob) of each scored row, weighed with a verifier.
    let rewarded = tmp.path().join("rewarded.parquet");
    whet_ok(&["reward", s(&scored), s(&rewarded), "--with", "likelihood=0.5", "--with", "gsm8k=0.5"]);
    let rewarded = rows(&rewarded);
    let mean = f64s(&scores, "mean_log_prob");
    use arrow::array::AsArray;
    let got: Vec<f32> = rewarded
        .iter()
        .flat_map(|b| {
            b.column_by_name("reward").unwrap().as_primitive::<arrow::datatypes::Float32Type>().values().to_vec()
        })
        .collect();
    let verdicts = strings(&rewarded, "reward_reason");
    for ((r, m), why) in got.iter().zip(&mean).zip(&verdicts) {
        let verifier = if why.contains("gsm8k 1.000") { 1.0 } else { 0.0 };
        assert!((*r as f64 - (0.5 * m.exp() + 0.5 * verifier)).abs() < 1e-5, "{r} {m} {why}");
        assert!(why.contains("likelihood") && why.contains("perplexity"), "{why}");
    }
    // An LLM judge (this tiny random model replies with noise): every row gets a reward in [0, 1] and a
    // reason, the reply quoted or why it holds no score.
    let judged = tmp.path().join("judged.parquet");
    whet_ok(&["judge", s(&model), s(&samples), s(&judged), "--max-tokens", "4"]);
    let m = whetstone::datasets::Manifest::read_beside(&judged).unwrap();
    let r = &m.results;
    assert_eq!(r["rows_scored"].as_u64().unwrap() + r["rows_without_a_score"].as_u64().unwrap(), 160);
    let judged = rows(&judged);
    let reasons = strings(&judged, "reward_reason");
    assert!(
        reasons.iter().all(|w| w.starts_with("judge: ") || w.contains("no score") || w.contains("outside")),
        "{reasons:?}"
    );
    let template = tmp.path().join("judge.txt");
    std::fs::write(&template, "Is this right? {prompt}").unwrap();
    let j2 = tmp.path().join("j2.parquet");
    let err = whet_fails(&["judge", s(&model), s(&samples), s(&j2), "--template", s(&template)]);
    assert!(err.contains("must contain {response}"), "{err}");
    let err = whet_fails(&["judge", s(&model), s(&samples), s(&j2), "--scale", "5,1"]);
    assert!(err.contains("lowest then the highest"), "{err}");

    // Generated rows carry the generator's log-likelihood, which the likelihood reward reads per response token;
    // rows with neither it nor `whet score`'s get no likelihood, with the reason saying what to run.
    let printed = whet_ok(&["reward", s(&samples), s(&tmp.path().join("x.parquet")), "--with", "likelihood"]);
    assert!(printed.contains("mean log-prob -N, perplexity N") && printed.contains("160"), "{printed}");
    let plain = tmp.path().join("plain.jsonl");
    std::fs::write(&plain, "{\"prompt\": \"What is 2 + 2?\", \"response\": \"4\"}\n").unwrap();
    let printed = whet_ok(&["reward", s(&plain), s(&tmp.path().join("y.parquet")), "--with", "likelihood"]);
    assert!(printed.contains("score the rows under a model first (whet score)"), "{printed}");
}

#[test]
fn whet_generate_refuses_bad_models_and_prompts_with_errors_that_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let questions = tmp.path().join("q.jsonl");
    std::fs::write(&questions, "{\"prompt\": \"What is 2 + 2?\"}\n").unwrap();
    let out = tmp.path().join("out.parquet");
    let missing = tmp.path().join("no-model");
    let err = whet_fails(&["generate", s(&missing), s(&questions), s(&out)]);
    assert!(err.contains("no-model: no such model folder") && err.contains("whet model tiny"), "{err}");

    let corpus = tmp.path().join("corpus.jsonl");
    let lines: String =
        (0..300).map(|i| format!("{{\"prompt\": \"What is {i} + {i}?\", \"response\": \"{}\"}}\n", 2 * i)).collect();
    std::fs::write(&corpus, lines).unwrap();
    let model = tmp.path().join("tiny");
    whet_ok(&["model", "tiny", s(&model), "--corpus", s(&corpus), "--vocab", "400", "--context", "64"]);
    let long = tmp.path().join("long.jsonl");
    std::fs::write(&long, format!("{{\"id\": \"q1\", \"prompt\": \"{}\"}}\n", "What is 2 + 2? ".repeat(30))).unwrap();
    let err = whet_fails(&["generate", s(&model), s(&long), s(&out)]);
    assert!(err.contains("long.jsonl: row 1 (id q1), field prompt") && err.contains("context is 64"), "{err}");
    assert!(err.contains("--on-error skip"), "{err}");
    let err = whet_fails(&["generate", s(&model), s(&questions), s(&out), "--paged-attention", "--cpu"]);
    assert!(err.contains("paged attention runs on a GPU only"), "{err}");

    let tokenizer = model.join("tokenizer.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tokenizer).unwrap()).unwrap();
    json["decoder"] = serde_json::Value::Null;
    std::fs::write(&tokenizer, json.to_string()).unwrap();
    let err = whet_fails(&["generate", s(&model), s(&questions), s(&out)]);
    assert!(err.contains("tokenizer.json: the tokenizer has no decoder"), "{err}");
    assert!(!out.exists());
}
