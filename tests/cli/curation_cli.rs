//! The curation commands end to end through `whet`: embed → cluster → select, dedup, filter, decontam.

use crate::common::*;
use whetstone::datasets::Manifest;

#[test]
fn embed_cluster_select_through_the_cli() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb.parquet");
    let clustered = dir.path().join("k8.parquet");
    let picked = dir.path().join("pick.parquet");
    whet_ok(&["embed", s(&data.join("gsm8k/test.jsonl")), s(&emb), "--dim", "128", "--text", "both"]);
    assert_eq!(Manifest::read_beside(&emb).unwrap().parameters["dim"], 128);
    let streamed = dir.path().join("k8-mini.parquet");
    let table = whet_ok(&["kmeans", s(&emb), s(&streamed), "--k", "8", "--mini-batch", "256", "--max-iter", "3"]);
    assert!(table.contains("1,319"), "{table}");
    let m = Manifest::read_beside(&streamed).unwrap();
    assert_eq!(m.parameters["algorithm"], "kmeans++/mini-batch");
    assert_eq!(m.results["sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(), 1319);
    let table = whet_ok(&["kmeans", s(&emb), s(&clustered), "--k", "8", "--seed", "1"]);
    assert!(table.contains("inertia") && table.contains("1,319"), "{table}");
    let lloyd = Manifest::read_beside(&clustered).unwrap().results["inertia"].as_f64().unwrap();
    assert!(m.results["inertia"].as_f64().unwrap() < lloyd * 1.05, "mini-batch lands near Lloyd's inertia");
    for method in ["random", "rs2", "kmq", "kcenter"] {
        let table = whet_ok(&[
            "select",
            s(&clustered),
            s(&picked),
            "--method",
            method,
            "--budget",
            "0.05",
            "--label",
            "source",
        ]);
        assert!(table.contains(method) && table.contains("66") && table.contains("1 of 1"), "{method}: {table}");
        let m = Manifest::read_beside(&picked).unwrap();
        assert_eq!((m.rows.rows_in, m.rows.rows_out), (1319, 66));
        assert!(m.results["mean_distance"].as_f64().unwrap() > 0.0);
    }
    let e =
        whet_fails(&["select", s(&clustered), s(&picked), "--method", "random", "--budget", "10", "--label", "nosuch"]);
    assert!(e.contains("no column \"nosuch\"") && e.contains("embedding, cluster"), "every column is listed: {e}");
    let e = whet_fails(&["select", s(&clustered), s(&picked), "--method", "deita", "--budget", "10"]);
    assert!(e.contains("no score column \"quality\""), "{e}");
    let e = whet_fails(&["kmeans", s(&data.join("gsm8k/test.jsonl")), s(&picked), "--k", "3"]);
    assert!(e.contains("no `embedding` column") && e.contains("whet embed"), "{e}");
}

#[test]
fn dedup_filter_decontam_through_the_cli() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let train = data.join("gsm8k/train.jsonl");
    let out = dir.path().join("out.parquet");
    let table = whet_ok(&["decontam", s(&train), s(&out), "--eval", s(&data.join("gsm8k/test.jsonl"))]);
    assert!(table.contains("contaminated"), "{table}");
    let m = Manifest::read_beside(&out).unwrap();
    assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
    for method in ["exact", "minhash"] {
        whet_ok(&["dedup", s(&train), s(&out), "--method", method]);
        let m = Manifest::read_beside(&out).unwrap();
        assert_eq!(m.rows.rows_in, 7473);
        assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
        assert_eq!(m.parameters["method"], method);
    }
    let table = whet_ok(&["filter", s(&train), s(&out), "--min-response", "60"]);
    assert!(table.contains("length"), "GSM8K has answers under 60 characters: {table}");
}

#[test]
fn curate_runs_a_pipeline_whose_manifests_chain() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("gsm8k.toml");
    let test_set = data.join("gsm8k/test.jsonl");
    std::fs::write(
        &pipeline,
        format!(
            r#"
input = {train:?}
output = "curated.parquet"
seed = 3

[[stage]]
run = "filter"
min_response = 60
special_tokens = "reject"

[[stage]]
run = "dedup"
method = "minhash"
threshold = 0.7

[[stage]]
run = "decontam"
eval = [{test:?}]

[[stage]]
run = "embed"
dim = 64

[[stage]]
run = "select"
method = "kmq"
budget = 150
k = 10
"#,
            train = s(&data.join("gsm8k/train.jsonl")),
            test = s(&test_set),
        ),
    )
    .unwrap();
    let table = whet_ok(&["curate", s(&pipeline)]);
    assert!(table.contains("select") && table.contains("decontam"), "{table}");
    // Relative paths are the pipeline file's: the output lands beside it.
    let out = dir.path().join("curated.parquet");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("curated.parquet.pipeline.json")).unwrap())
            .unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    // Every stage's manifest: rows add up, and it read exactly what the stage before it wrote.
    let manifests: Vec<Manifest> = steps
        .iter()
        .map(|st| Manifest::read_beside(std::path::Path::new(st["output"].as_str().unwrap())).unwrap())
        .collect();
    assert_eq!(manifests[0].rows.rows_in, 7473);
    assert!(manifests[0].rows.rows_rejected > 0, "GSM8K has answers under 60 characters");
    for pair in manifests.windows(2) {
        assert_eq!(pair[1].inputs[0].xxh3_128, pair[0].output.xxh3_128);
        assert_eq!(pair[1].rows.rows_in, pair[0].rows.rows_out);
    }
    for m in &manifests {
        assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected, "{}", m.stage);
    }
    assert_eq!(manifests[4].output.path, out);
    assert_eq!(manifests[4].rows.rows_out, 150);
    assert_eq!(manifests[1].parameters["options"]["threshold"], 0.7);
    assert_eq!(manifests[0].parameters["special_tokens"], "reject");
    assert!(!manifests[0].rejected.by_reason.contains_key("special_tokens"), "GSM8K's <<48/2=24>> are no markers");
    assert_eq!(manifests[3].parameters["dim"], 64);
    assert_eq!(manifests[4].parameters["seed"], 3, "the pipeline's seed reaches the stages");

    // Mistakes in the file are named.
    std::fs::write(&pipeline, "input = \"x\"\noutput = \"y\"\n[[stage]]\nrun = \"filter\"\nmax_symbol = 0.3\n")
        .unwrap();
    let e = whet_fails(&["curate", s(&pipeline)]);
    assert!(e.contains("gsm8k.toml") && e.contains("max_symbol"), "{e}");
    std::fs::write(
        &pipeline,
        "input = \"x\"\noutput = \"y\"\n[[stage]]\nrun = \"filter\"\nspecial_tokens = \"drop\"\n",
    )
    .unwrap();
    let e = whet_fails(&["curate", s(&pipeline)]);
    assert!(e.contains("drop") && e.contains("strip"), "{e}");
    std::fs::write(&pipeline, "input = \"x\"\noutput = \"y\"\n[[stage]]\nrun = \"sort\"\n").unwrap();
    let e = whet_fails(&["curate", s(&pipeline)]);
    assert!(e.contains("sort"), "{e}");
    std::fs::write(
        &pipeline,
        format!("input = {test_set:?}\noutput = \"y.parquet\"\n[[stage]]\nrun = \"cluster\"\nk = 3\n"),
    )
    .unwrap();
    let e = whet_fails(&["curate", s(&pipeline)]);
    assert!(e.contains("stage 1 (cluster)") && e.contains("no `embedding` column"), "{e}");
}
