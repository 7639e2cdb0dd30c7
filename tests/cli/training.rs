//! `whet train` and `whet model merge` end to end: a tiny model pre-trained from scratch on a synthetic task,
//! a LoRA adapter on top, merged, and the merged folder generating in mistral.rs.

use crate::common::{whet_fails, whet_ok};
use whetstone::selfimprove::tasks::{addition, write_jsonl};

fn held_out(printed: &str) -> (f64, f64) {
    let line = printed.lines().find(|l| l.contains("held-out loss")).unwrap_or_else(|| panic!("{printed}"));
    let numbers: Vec<f64> =
        line.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

fn log_likelihoods(path: &std::path::Path) -> Vec<f64> {
    use arrow::array::AsArray;
    let (batches, _) = whetstone::datasets::read_all(path, Default::default()).unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("log_likelihood")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

#[test]
fn whet_trains_from_scratch_then_lora_then_merges_into_a_folder_mistral_rs_generates_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let task = addition(2, 3_000, 100, 0).unwrap();
    write_jsonl(&dir.join("train.jsonl"), &task.train).unwrap();
    write_jsonl(&dir.join("test.jsonl"), &task.test).unwrap();
    whet_ok(&["model", "tiny", &p("base"), "--corpus", &p("train.jsonl"), "--vocab", "300", "--context", "64"]);

    std::fs::write(
        dir.join("full.toml"),
        "base = \"base\"\ndata = \"train.jsonl\"\neval = \"test.jsonl\"\nout = \"pretrained\"\nmethod = \"full\"\n\
         steps = 80\nbatch = 8\n\n[schedule]\nlr = 3e-3\nwarmup = 4\nshape = \"cosine\"\n",
    )
    .unwrap();
    let printed = whet_ok(&["train", &p("full.toml")]);
    let (before, after) = held_out(&printed);
    assert!(after < 0.5 * before, "pre-training lowers held-out loss: {before} -> {after}\n{printed}");
    assert!(printed.contains("3000 / 3000 / 0") && printed.contains("full"), "{printed}");
    assert!(printed.contains("held-out rows measured / skipped ┆ 100 / 0"), "{printed}");
    assert!(dir.join("pretrained/loss.svg").is_file());
    assert_eq!(std::fs::read_to_string(dir.join("pretrained/metrics.jsonl")).unwrap().lines().count(), 80);

    // The trained model prefers the right sums: each held-out question's answer scores above the answer of
    // another question (the answers shuffled), on average and for most rows.
    let shuffled: Vec<_> = task
        .test
        .iter()
        .zip(task.test.iter().cycle().skip(37))
        .map(|(q, other)| whetstone::selfimprove::tasks::TaskRow { response: other.response.clone(), ..q.clone() })
        .collect();
    write_jsonl(&dir.join("shuffled.jsonl"), &shuffled).unwrap();
    whet_ok(&["score", &p("pretrained"), &p("test.jsonl"), &p("right.parquet")]);
    whet_ok(&["score", &p("pretrained"), &p("shuffled.jsonl"), &p("wrong.parquet")]);
    let (right, wrong) = (log_likelihoods(&dir.join("right.parquet")), log_likelihoods(&dir.join("wrong.parquet")));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let better = right.iter().zip(&wrong).filter(|(r, w)| r > w).count();
    assert!(
        mean(&right) > mean(&wrong) + 0.5 && better >= 65,
        "right {} wrong {} better {better}/100",
        mean(&right),
        mean(&wrong)
    );

    let printed = whet_ok(&[
        "train",
        "--base",
        &p("pretrained"),
        "--data",
        &p("train.jsonl"),
        "--eval",
        &p("test.jsonl"),
        "--out",
        &p("adapter"),
        "--rank",
        "8",
        "--targets",
        "q_proj,v_proj,up_proj,down_proj",
        "--steps",
        "30",
        "--lr",
        "3e-3",
        "--schedule",
        "wsd",
        "--batch",
        "8",
    ]);
    let (before, after) = held_out(&printed);
    assert!(after < before, "LoRA lowers held-out loss: {before} -> {after}\n{printed}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["peft_type"].as_str(), config["r"].as_u64()), (Some("LORA"), Some(8)));

    whet_ok(&["model", "merge", &p("pretrained"), &p("adapter"), &p("merged")]);
    assert!(!dir.join("merged/metrics.jsonl").exists(), "a run's records stay with the run");
    let printed = whet_ok(&[
        "generate",
        &p("merged"),
        &p("test.jsonl"),
        &p("answers.parquet"),
        "--temperature",
        "0",
        "--max-tokens",
        "6",
    ]);
    assert!(printed.contains("100"), "{printed}");
    let generated = whetstone::datasets::Manifest::read_beside(&dir.join("answers.parquet")).unwrap();
    assert_eq!((generated.rows.rows_in, generated.rows.rows_out), (100, 100), "every held-out question answered");
    assert!(generated.results["response_tokens"].as_u64().unwrap() > 0, "the merged model generated tokens");

    let err =
        whet_fails(&["train", "--base", &p("base"), "--data", &p("train.jsonl"), "--out", &p("x"), "--targets", "qkv"]);
    assert!(err.contains("unknown LoRA target module \"qkv\""), "{err}");
    let err = whet_fails(&["train", "--base", &p("base"), "--data", &p("train.jsonl"), "--out", &p("adapter")]);
    assert!(err.contains("already exists"), "{err}");
    let err = whet_fails(&["train", &p("nowhere.toml")]);
    assert!(err.contains("nowhere.toml"), "{err}");
    let err = whet_fails(&[
        "train",
        "--base",
        &p("base"),
        "--data",
        &p("train.jsonl"),
        "--out",
        &p("y"),
        "--dtype",
        "bf16",
        "--cpu",
    ]);
    assert!(err.contains("bf16 trains on a GPU only") && !dir.join("y").exists(), "{err}");
}
