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

#[test]
fn whet_trains_dpo_and_a_reward_model_on_pairs_and_rewards_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let pairs = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| {
                format!(
                    "{}\n",
                    serde_json::json!({"prompt": format!("What is {i} plus {i}?"), "chosen": format!("It is {}.", 2 * i),
                        "rejected": "No idea, sorry."})
                )
            })
            .collect()
    };
    std::fs::write(dir.join("pairs.jsonl"), pairs(0..80)).unwrap();
    std::fs::write(dir.join("held.jsonl"), pairs(80..100)).unwrap();
    let corpus: String = (0..100)
        .map(|i| {
            format!("{{\"prompt\": \"What is {i} plus {i}?\", \"response\": \"It is {}. No idea, sorry.\"}}\n", 2 * i)
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    whet_ok(&["model", "tiny", &p("base"), "--corpus", &p("corpus.jsonl"), "--vocab", "300", "--context", "64"]);
    let common = ["--base", &p("base"), "--data", &p("pairs.jsonl"), "--eval", &p("held.jsonl"), "--steps", "12"];
    let printed = whet_ok(
        &[
            &["train"][..],
            &common,
            &["--out", &p("dpo"), "--objective", "dpo", "--beta", "0.5", "--rpo-alpha", "0.2", "--lr", "2e-2"],
        ]
        .concat(),
    );
    assert!(printed.contains("lora, dpo") && printed.contains("80 / 80 / 0"), "{printed}");
    let after = printed.lines().find(|l| l.contains("held-out pairs: accuracy / margin, after")).unwrap();
    assert!(after.contains("100%") || after.contains(" 9"), "DPO ranks the held-out pairs: {after}");

    let printed =
        whet_ok(&[&["train"][..], &common, &["--out", &p("rm"), "--objective", "reward", "--lr", "2e-2"]].concat());
    assert!(printed.contains("lora, reward"), "{printed}");
    std::fs::write(
        dir.join("samples.jsonl"),
        "{\"prompt\": \"What is 90 plus 90?\", \"response\": \"It is 180.\"}\n{\"prompt\": \"What is 90 plus 90?\", \"response\": \"No idea, sorry.\"}\n",
    )
    .unwrap();
    whet_ok(&["reward", &p("samples.jsonl"), &p("scored.parquet"), "--with", &format!("rm:{}", p("rm"))]);
    let m = whetstone::datasets::Manifest::read_beside(&dir.join("scored.parquet")).unwrap();
    assert_eq!(m.rows.rows_out, 2);
    assert!(
        m.results["reasons"].as_object().unwrap().keys().any(|k| k.starts_with("reward model score")),
        "{}",
        m.results
    );
    let err = whet_fails(&["reward", &p("samples.jsonl"), &p("x.parquet"), "--with", &format!("rm:{}", p("base"))]);
    assert!(err.contains("not a reward model"), "{err}");
}

#[test]
fn whet_order_writes_a_curriculum_and_whet_train_follows_it_or_weighs_skills_as_it_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let rows = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| {
                let (a, b) = (i % 10, i / 10 % 10);
                let (prompt, response, skill) = match i % 2 {
                    0 => (format!("{a} plus {b}?"), (a + b).to_string(), "plus"),
                    _ => (format!("{} minus {b}?", a + b), a.to_string(), "minus"),
                };
                format!("{{\"id\": \"r{i}\", \"prompt\": \"{prompt}\", \"response\": \"{response}\", \"source\": \"{skill}\"}}\n")
            })
            .collect()
    };
    std::fs::write(dir.join("train.jsonl"), rows(0..300)).unwrap();
    std::fs::write(dir.join("eval.jsonl"), rows(300..340)).unwrap();
    whet_ok(&["model", "tiny", &p("base"), "--corpus", &p("train.jsonl"), "--vocab", "300", "--context", "64"]);

    let printed =
        whet_ok(&["order", &p("train.jsonl"), &p("ordered.parquet"), "--by", "easy-to-hard", "--model", &p("base")]);
    assert!(printed.contains("easy-to-hard") && printed.contains("300"), "{printed}");
    let common = ["--base", &p("base"), "--method", "full", "--steps", "6", "--batch", "4"];
    let printed = whet_ok(
        &[&["train", "--data", &p("ordered.parquet"), "--out", &p("file-run"), "--order", "file"][..], &common]
            .concat(),
    );
    assert!(printed.contains("order") && printed.contains("file"), "{printed}");

    let printed = whet_ok(
        &[
            &[
                "train",
                "--data",
                &p("train.jsonl"),
                "--eval",
                &p("eval.jsonl"),
                "--out",
                &p("skill-run"),
                "--order",
                "skill-it",
                "--skill-column",
                "source",
                "--order-every",
                "2",
            ][..],
            &common,
        ]
        .concat(),
    );
    assert!(printed.contains("skill-it (3 re-orderings"), "{printed}");
    assert!(printed.contains("skill-it's last update (step 4"), "{printed}");
    assert!(printed.contains("minus") && printed.contains("plus"), "{printed}");
    assert_eq!(std::fs::read_to_string(dir.join("skill-run/order.jsonl")).unwrap().lines().count(), 3);

    let e = whet_fails(&["order", &p("train.jsonl"), &p("x.jsonl"), "--by", "skill-it"]);
    assert!(e.contains("whet train --order skill-it"), "{e}");
    let e = whet_fails(
        &[&["train", "--data", &p("train.jsonl"), "--out", &p("y"), "--order", "skill-it"][..], &common].concat(),
    );
    assert!(e.contains("skill_column"), "{e}");
}
