//! How `whet` behaves as a command: a closed pipe, an unknown choice, an error with its cause.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn a_reader_that_stops_early_ends_whet_quietly_with_status_0() {
    let Some(data) = shared_data() else { return };
    let train = data.join("gsm8k/train.jsonl");
    // `whet head --json train.jsonl -n 7473 | head -1`: the reader takes one line and closes the pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_whet"))
        .args(["head", "--json", "-n", "7473", s(&train)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap(); // then dropped: closed
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("{\"id\":"), "{first}");
    assert!(out.status.success(), "status {:?}; stderr:\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_choice_is_refused_with_the_valid_ones() {
    let stderr = whet_fails(&["select", "in.parquet", "out.parquet", "--method", "nosuch", "--budget", "10"]);
    assert!(stderr.contains("invalid value 'nosuch' for '--method <METHOD>'"), "{stderr}");
    assert!(stderr.contains("[possible values: random, rs2, kmq, kcenter, deita, iterative]"), "{stderr}");
    let stderr = whet_fails(&["dedup", "in.parquet", "out.parquet", "--method", "fuzzy"]);
    assert!(stderr.contains("[possible values: exact, minhash, semantic]"), "{stderr}");
    let stderr = whet_fails(&["head", "in.jsonl", "--on-error", "ignore"]);
    assert!(stderr.contains("[possible values: fail, skip]"), "{stderr}");
}

#[test]
fn an_error_says_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("no-such-template.txt");
    let stderr = whet_fails(&["judge", "no-model", "in.jsonl", "out.parquet", "--template", s(&template)]);
    // The error, then its cause (the operating system's words), once.
    assert!(stderr.starts_with(&format!("error: {}: cannot read it: No such file", template.display())), "{stderr}");
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}
