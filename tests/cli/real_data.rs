//! The real shared data: GSM8K, the T0 templates, Self-Instruct.

use crate::common::*;
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use serde_json::Value;
use whetstone::datasets::{read_all, schema, Manifest, ReadOptions};

fn all_rows(spec: &std::path::Path) -> RecordBatch {
    let (batches, reader) = read_all(spec, ReadOptions::default()).expect("read");
    concat_batches(&reader.schema(), &batches).unwrap()
}

fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn inspect_gsm8k_reports_7473_rows() {
    let Some(data) = shared_data() else { return };
    let out = whet_ok(&["inspect", s(&data.join("gsm8k/train.jsonl")), "--json"]);
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["rows"], 7473);
    assert_eq!(v["format"], "question-answer (jsonl)");
    let columns: Vec<&str> = v["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(columns, schema::CORE_COLUMNS);
    assert_eq!(v["with_response"], 7473);
    assert!(v["lengths"]["prompt"]["chars"]["p50"].as_u64().unwrap() > 100);
    // The human form is tables, not a dump.
    let table = whet_ok(&["inspect", s(&data.join("gsm8k/test.jsonl"))]);
    assert!(table.contains("1,319") && table.contains("p99"), "{table}");
}

#[test]
fn t0_folder_converts_to_one_dataset_with_counts_that_add_up() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t0.parquet");
    whet_ok(&["convert", s(&data.join("t0-templates")), s(&out)]);
    let m = Manifest::read_beside(&out).unwrap();
    assert_eq!(m.rows.rows_out, 41_813);
    assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
    assert_eq!(m.rows.rows_rejected, 0);
    assert_eq!(m.inputs.len(), 220);
    assert_eq!(m.inputs.iter().filter(|i| i.rows_in == 0).count(), 8, "8 template files have no rows");
    assert_eq!(m.inputs.iter().map(|i| i.rows_in).sum::<u64>(), 41_813);
    assert!(m.inputs.iter().all(|i| i.xxh3_128.len() == 32 && i.bytes > 0 || i.rows_in == 0));
    assert_eq!(m.output.rows, 41_813);
    assert_eq!(m.stage, "convert");
    // One Parquet file: every row, sources named after the template files, ids unique per template.
    let batch = all_rows(&out);
    assert_eq!(batch.num_rows(), 41_813);
    let sources = batch.column_by_name("source").unwrap().as_string::<i32>();
    let distinct: std::collections::BTreeSet<&str> = sources.iter().flatten().collect();
    assert_eq!(distinct.len(), 212, "220 templates less 8 empty ones");
    assert!(distinct.contains("trec_fine_grained_HUM_context_first") || distinct.iter().any(|s| s.starts_with("trec")));
    // The manifest's hash names the bytes on disk.
    let on_disk = std::fs::read(&out).unwrap();
    assert_eq!(m.output.bytes, on_disk.len() as u64);
    assert_eq!(m.output.xxh3_128, format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&on_disk)));
}

/// JSONL → Parquet → JSONL keeps every row and every field.
fn round_trip(input: &std::path::Path) -> (RecordBatch, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("a.parquet");
    let jsonl = dir.path().join("b.jsonl");
    whet_ok(&["convert", s(input), s(&parquet)]);
    whet_ok(&["convert", s(&parquet), s(&jsonl)]);
    let original = all_rows(input);
    assert_eq!(all_rows(&parquet), original, "Parquet holds exactly what was read");
    assert_eq!(all_rows(&jsonl), original, "the JSONL written back reads as the same dataset");
    (original, json_lines(&jsonl))
}

#[test]
fn gsm8k_round_trips_field_for_field() {
    let Some(data) = shared_data() else { return };
    let input = data.join("gsm8k/train.jsonl");
    let (_, rows) = round_trip(&input);
    let original = json_lines(&input);
    assert_eq!(rows.len(), original.len());
    for (o, r) in original.iter().zip(&rows) {
        assert_eq!(r["prompt"], o["question"]);
        assert_eq!(r["response"], o["answer"]);
        assert_eq!(r["source"], "train");
        assert!(r.get("meta").is_none(), "GSM8K rows have no other fields");
    }
}

#[test]
fn self_instruct_round_trips_with_its_other_fields_in_meta() {
    let Some(data) = shared_data() else { return };
    let input = data.join("self-instruct/seed_tasks.jsonl");
    let (_, rows) = round_trip(&input);
    let original = json_lines(&input);
    assert_eq!(rows.len(), 175);
    for (o, r) in original.iter().zip(&rows) {
        assert_eq!(r["id"], o["id"], "the source's id is kept");
        let instance = &o["instances"][0];
        let input = instance["input"].as_str().unwrap();
        let instruction = o["instruction"].as_str().unwrap();
        let prompt = if input.is_empty() { instruction.to_string() } else { format!("{instruction}\n\n{input}") };
        assert_eq!(r["prompt"], prompt.as_str());
        assert_eq!(r["response"], instance["output"]);
        assert_eq!(r["meta"]["name"], o["name"]);
        assert_eq!(r["meta"]["is_classification"], o["is_classification"]);
    }
}

#[test]
fn t0_round_trips_and_ids_are_stable_across_runs() {
    let Some(data) = shared_data() else { return };
    let input = data.join("t0-templates");
    let (original, rows) = round_trip(&input);
    assert_eq!(rows.len(), 41_813);
    let again = all_rows(&input);
    assert_eq!(again.column(0), original.column(0), "same rows, same ids, every run");
    let ids = original.column(0).as_string::<i32>();
    assert!(ids.iter().flatten().all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
    // T0 completions end with the GPT-2 end-of-text marker; it is kept as the data has it.
    assert!(rows[0]["response"].as_str().unwrap().ends_with("<|endoftext|>"));
}

#[test]
fn exports_trainer_layouts_from_real_data() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = data.join("self-instruct/user_oriented_instructions.jsonl");
    let alpaca = dir.path().join("a.jsonl");
    let messages = dir.path().join("m.jsonl.gz");
    whet_ok(&["convert", s(&input), s(&alpaca), "--format", "alpaca"]);
    whet_ok(&["convert", s(&input), s(&messages), "--format", "messages"]);
    let rows = json_lines(&alpaca);
    assert_eq!(rows.len(), 252);
    let original = json_lines(&input);
    assert_eq!(rows[0]["output"], original[0]["instances"][0]["output"]);
    assert!(rows[0]["instruction"].as_str().unwrap().starts_with(original[0]["instruction"].as_str().unwrap()));
    assert_eq!(rows[0]["input"], "");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&messages).unwrap()),
        &mut text,
    )
    .unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["messages"][0]["role"], "user");
    assert_eq!(first["messages"][1]["role"], "assistant");
    assert_eq!(first["messages"][1]["content"], original[0]["instances"][0]["output"]);
    assert_eq!(text.lines().count(), 252);
}

#[test]
fn t0s_endoftext_strings_are_found_warned_of_and_stripped() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t0 = dir.path().join("t0.parquet");
    let out = crate::common::whet(&["convert", s(&data.join("t0-templates")), s(&t0)]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: 41,813 rows hold special-token strings (<|endoftext|> ×41,813), kept as text"),
        "{stderr}"
    );
    let batch = all_rows(&t0);
    let responses = batch.column_by_name("response").unwrap().as_string::<i32>();
    assert!(responses.iter().flatten().all(|r| r.ends_with("<|endoftext|>")), "convert keeps the text as it is");

    let found: Value = serde_json::from_str(&whet_ok(&["inspect", s(&data.join("t0-templates")), "--json"])).unwrap();
    let strings = found["special_tokens"]["strings"].as_array().unwrap();
    assert_eq!(strings.len(), 1, "{strings:?}");
    let endoftext = &strings[0];
    assert_eq!(
        (endoftext["string"].as_str(), endoftext["family"].as_str()),
        (Some("<|endoftext|>"), Some("GPT-2/NeoX"))
    );
    assert_eq!([&endoftext["rows"], &endoftext["occurrences"], &endoftext["at_ends"]], [41_813; 3]);
    assert_eq!(endoftext["examples"][0]["field"], "response");
    assert!(endoftext["examples"][0]["context"].as_str().unwrap().ends_with("<|endoftext|>"));
    let table = whet_ok(&["inspect", s(&t0)]);
    assert!(table.contains("<|endoftext|>") && table.contains("41,813 of 41,813 rows hold"), "{table}");

    let clean = dir.path().join("clean.parquet");
    let shown = whet_ok(&["filter", s(&t0), s(&clean), "--special-tokens", "strip"]);
    assert!(shown.contains("stripped from 41,813 rows: <|endoftext|> ×41,813"), "{shown}");
    let m = Manifest::read_beside(&clean).unwrap();
    assert_eq!(m.results["special_tokens_stripped"]["strings"]["<|endoftext|>"], 41_813);
    assert_eq!(m.parameters["special_tokens"], "strip");
    assert_eq!(m.rows.rows_rejected, m.rejected.by_reason.values().sum::<u64>());
    assert!(!m.rejected.by_reason.contains_key("special_tokens"), "T0's strings are all at the ends");
    let table = whet_ok(&["inspect", s(&clean)]);
    assert!(table.contains("special-token strings: none"), "{table}");
    let batch = all_rows(&clean);
    let responses = batch.column_by_name("response").unwrap().as_string::<i32>();
    assert!(responses.iter().flatten().all(|r| !r.contains("<|endoftext|>") && r == r.trim_end()));
}
