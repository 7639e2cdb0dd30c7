//! The curation commands end to end through `whet`: embed → cluster → select, dedup, filter, decontam.

mod common;

use common::*;
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
    let table = whet_ok(&["cluster", s(&emb), s(&clustered), "--k", "8", "--seed", "1"]);
    assert!(table.contains("inertia") && table.contains("1,319"), "{table}");
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
    let e = whet_fails(&["select", s(&clustered), s(&picked), "--method", "deita", "--budget", "10"]);
    assert!(e.contains("no score column \"quality\""), "{e}");
    let e = whet_fails(&["cluster", s(&data.join("gsm8k/test.jsonl")), s(&picked), "--k", "3"]);
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
