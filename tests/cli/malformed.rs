//! Bad input fails with the file, the line (or row) and the field — or, with `--on-error skip`, is
//! counted and recorded in the manifest. A failed conversion leaves nothing under the output's name.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common::*;
use whetstone::datasets::Manifest;

const GOOD: &str = "{\"question\": \"What is 2+2?\", \"answer\": \"#### 4\"}\n";

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Converts `input`, expecting failure; checks the message names the file and each of `wanted`, and that
/// no output (nor a temporary file) is left.
fn fails_naming(input: &Path, wanted: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.parquet");
    let err = whet_fails(&["convert", s(input), s(&out)]);
    let name = input.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "message should name the file {name}:\n{err}");
    for w in wanted {
        assert!(err.contains(w), "message should contain {w:?}:\n{err}");
    }
    assert!(!out.exists(), "no output under the final name after a failure");
    assert!(hidden_files(out_dir.path()).is_empty(), "temporary files removed: {:?}", hidden_files(out_dir.path()));
    err
}

#[test]
fn truncated_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "trunc.jsonl", format!("{GOOD}{GOOD}{{\"question\": \"cut off").as_bytes());
    fails_naming(&p, &["line 3", "invalid JSON", "EOF while parsing"]);
}

#[test]
fn invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(
        dir.path(),
        "latin1.jsonl",
        &[GOOD.as_bytes(), b"{\"question\": \"caf\xe9\", \"answer\": \"x\"}\n"].concat(),
    );
    fails_naming(&p, &["line 2", "invalid UTF-8"]);
}

#[test]
fn missing_field() {
    let dir = tempfile::tempdir().unwrap();
    let p =
        file(dir.path(), "missing.jsonl", format!("{GOOD}{GOOD}{GOOD}{{\"question\": \"no answer\"}}\n").as_bytes());
    fails_naming(&p, &["line 4", "field \"answer\"", "missing"]);
}

#[test]
fn mistyped_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "typed.jsonl", format!("{GOOD}{{\"question\": \"q\", \"answer\": 4}}\n").as_bytes());
    fails_naming(&p, &["line 2", "field \"answer\"", "expected a string, found a number"]);
    let p = file(
        dir.path(),
        "turns.jsonl",
        b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\"}]}\n",
    );
    fails_naming(&p, &["line 1", "field \"messages[1].content\"", "missing"]);
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "empty.jsonl", b"");
    fails_naming(&p, &["empty"]);
    let p = file(dir.path(), "blank.jsonl", b"\n  \n");
    fails_naming(&p, &["empty"]);
}

#[test]
fn corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..2000 {
        writeln!(gz, "{{\"question\": \"question number {i} {}\", \"answer\": \"#### {i}\"}}", "x".repeat(i % 50))
            .unwrap();
    }
    let bytes = gz.finish().unwrap();
    let p = file(dir.path(), "cut.jsonl.gz", &bytes[..bytes.len() / 2]);
    fails_naming(&p, &["corrupt gzip", "line "]);
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid..mid + 64].iter_mut().for_each(|b| *b = !*b);
    let p = file(dir.path(), "flipped.jsonl.gz", &flipped);
    fails_naming(&p, &["corrupt gzip", "line "]);
}

#[test]
fn corrupt_parquet_footer() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    whet_ok(&["convert", s(&data.join("gsm8k/test.jsonl")), s(&good)]);
    let bytes = std::fs::read(&good).unwrap();
    let p = file(dir.path(), "nofooter.parquet", &bytes[..bytes.len() - 100]);
    fails_naming(&p, &["Parquet", "footer"]);
    let p = file(dir.path(), "zero.parquet", b"");
    fails_naming(&p, &["Parquet"]);
}

#[test]
fn csv_and_json_array_name_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "rows.csv", b"question,answer\nq1,a1\nq2,a2\nq3\n");
    fails_naming(&p, &["line 4", "incorrect number of fields"]);
    let p = file(
        dir.path(),
        "array.json",
        b"[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"c\",\n   \"output\": false}\n]\n",
    );
    fails_naming(&p, &["line 3", "field \"output\"", "found a boolean"]);
}

#[test]
fn unknown_layout_says_how_to_map_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "labels.jsonl", b"{\"text\": \"great film\", \"label\": 1}\n");
    fails_naming(&p, &["[text, label]", "--map prompt=FIELD"]);
}

#[test]
fn skip_counts_and_records_every_rejected_row() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        GOOD.to_string(),
        "{\"question\": \"cut\n".to_string(),
        GOOD.to_string(),
        "{\"question\": \"q\", \"answer\": 7}\n".to_string(),
        "{\"question\": \"q\"}\n".to_string(),
        "[1, 2]\n".to_string(),
        GOOD.replace("2+2", "3+3"),
    ];
    let bad_utf8: &[u8] = b"{\"question\": \"\xff\", \"answer\": \"a\"}\n";
    let mut bytes = lines.concat().into_bytes();
    bytes.extend_from_slice(bad_utf8);
    let p = file(dir.path(), "mixed.jsonl", &bytes);
    let out = dir.path().join("out.parquet");
    // The table a person reads is on stdout.
    let stdout = String::from_utf8(whet(&["convert", s(&p), s(&out), "--on-error", "skip"]).stdout).unwrap();
    let m = Manifest::read_beside(&out).unwrap();
    assert_eq!((m.rows.rows_in, m.rows.rows_out, m.rows.rows_rejected), (8, 3, 5), "{stdout}");
    let reasons: Vec<(&str, u64)> = m.rejected.by_reason.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(reasons, [("invalid_json", 1), ("invalid_utf8", 1), ("missing_field", 1), ("wrong_type", 2)]);
    assert!(m.rejected.examples.iter().any(|e| e.contains("mixed.jsonl: line 2")));
    assert!(m.rejected.examples.iter().any(|e| e.contains("line 8") && e.contains("UTF-8")));
    assert!(stdout.contains("rejected because"), "{stdout}");

    // Every rejected row is in the rejected-rows file, with where it was, why, and the row as it was.
    let rejected_file = m.rejected.file.clone().expect("a rejected-rows file");
    assert!(stdout.contains(rejected_file.file_name().unwrap().to_str().unwrap()), "{stdout}");
    let rejected: Vec<serde_json::Value> =
        std::fs::read_to_string(&rejected_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let lines: Vec<u64> = rejected.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 4, 5, 6, 8]);
    assert_eq!(rejected[0]["text"], "{\"question\": \"cut");
    assert_eq!(rejected[1]["field"], "answer");
    assert_eq!(rejected[1]["reason"], "wrong_type");
    assert_eq!(rejected[4]["text"], "{\"question\": \"\u{fffd}\", \"answer\": \"a\"}");

    // A clean run over the same output removes the stale rejected-rows file.
    let clean = file(dir.path(), "clean.jsonl", GOOD.as_bytes());
    whet_ok(&["convert", s(&clean), s(&out)]);
    assert!(!rejected_file.exists());
    assert!(Manifest::read_beside(&out).unwrap().rejected.file.is_none());
}
