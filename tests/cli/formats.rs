//! Every source layout and container, the field map, the writers' layouts, ids and atomic writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::*;
use arrow::array::{RecordBatch, StringArray, UInt32Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{json, Value};
use whetstone::datasets::{
    convert, read_all, schema, ConvertOptions, DatasetWriter, FieldMap, OnError, OutputFormat, ReadOptions,
    SourceFormat,
};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn jsonl(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

/// Reads `path` and returns (layout of the first input, rows as JSON objects).
fn read(path: &Path, opts: ReadOptions) -> (Option<SourceFormat>, Vec<Value>) {
    let (batches, reader) = read_all(path, opts).unwrap();
    let batch = concat_batches(&reader.schema(), &batches).unwrap();
    let rows = whetstone::datasets::write::batch_rows_json(&batch).unwrap();
    (reader.reports()[0].format, rows)
}

#[test]
fn alpaca_with_input_system_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "alpaca.json",
        &serde_json::to_string_pretty(&json!([
            {"instruction": "Translate", "input": "chat", "output": "cat"},
            {"instruction": "Add 2", "input": "", "output": "4", "system": "Be brief.",
             "history": [["What is 1+1?", "2"]], "category": "math"}
        ]))
        .unwrap(),
    );
    let (format, rows) = read(&p, ReadOptions::default());
    assert_eq!(format, Some(SourceFormat::Alpaca));
    assert_eq!(rows[0]["prompt"], "Translate\n\nchat");
    assert_eq!(rows[0]["response"], "cat");
    assert!(rows[0].get("messages").is_none());
    assert_eq!(rows[1]["prompt"], "Add 2");
    assert_eq!(rows[1]["meta"], json!({"category": "math"}));
    let roles: Vec<&str> =
        rows[1]["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);

    // Back to Alpaca: the conversation keeps its system and history (LLaMA-Factory's fields).
    let out = dir.path().join("out.jsonl");
    let opts = ConvertOptions { format: Some(OutputFormat::Alpaca), ..Default::default() };
    convert(&p, &out, &opts, |_| {}).unwrap();
    let back: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(back[0], json!({"instruction": "Translate\n\nchat", "input": "", "output": "cat"}));
    assert_eq!(
        back[1],
        json!({"instruction": "Add 2", "input": "", "output": "4", "system": "Be brief.", "history": [["What is 1+1?", "2"]]})
    );
}

#[test]
fn openai_messages_and_sharegpt() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "chat.jsonl",
        &jsonl(&[
            json!({"messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": [{"type": "text", "text": "Name a"}, {"type": "text", "text": "colour"}]},
                {"role": "assistant", "content": "Red."}]}),
            json!({"messages": [{"role": "user", "content": "Unanswered?"}]}),
        ]),
    );
    let (format, rows) = read(&p, ReadOptions::default());
    assert_eq!(format, Some(SourceFormat::Messages));
    assert_eq!(rows[0]["prompt"], "Name a\ncolour");
    assert_eq!(rows[0]["response"], "Red.");
    assert_eq!(rows[0]["messages"].as_array().unwrap().len(), 5);
    assert_eq!(rows[1]["prompt"], "Unanswered?");
    assert!(rows[1].get("response").is_none(), "a conversation without a final answer has a null response");

    let p = write(
        dir.path(),
        "sharegpt.jsonl",
        &jsonl(&[json!({"id": "sg-1", "conversations": [
            {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}], "system": "Math tutor"})]),
    );
    let (format, rows) = read(&p, ReadOptions::default());
    assert_eq!(format, Some(SourceFormat::ShareGpt));
    assert_eq!(rows[0]["id"], "sg-1");
    assert_eq!(
        rows[0]["messages"],
        json!([{"role": "system", "content": "Math tutor"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    );

    // The messages layout writes the conversation as it is.
    let out = dir.path().join("m.jsonl");
    convert(&p, &out, &ConvertOptions { format: Some(OutputFormat::Messages), ..Default::default() }, |_| {}).unwrap();
    let back: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(back["messages"], rows[0]["messages"]);
}

#[test]
fn self_instruct_rows_expand_per_instance() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "tasks.jsonl",
        &jsonl(&[json!({"id": "t1", "instruction": "Antonym of", "instances": [
            {"input": "hot", "output": "cold"}, {"input": "up", "output": "down"}], "is_classification": false})]),
    );
    let out = dir.path().join("t.parquet");
    let m = convert(&p, &out, &ConvertOptions::default(), |_| {}).unwrap();
    assert_eq!((m.rows.rows_in, m.rows.rows_out, m.rows.rows_rejected), (2, 2, 0));
    let (_, rows) = read(&out, ReadOptions::default());
    assert_eq!(rows[0]["id"], "t1-0");
    assert_eq!(rows[1]["id"], "t1-1");
    assert_eq!(rows[1]["prompt"], "Antonym of\n\nup");
    assert_eq!(rows[1]["response"], "down");
    assert_eq!(rows[1]["meta"], json!({"is_classification": false}));
}

#[test]
fn field_map_overrides_recognition() {
    let dir = tempfile::tempdir().unwrap();
    let p =
        write(dir.path(), "reviews.jsonl", &jsonl(&[json!({"uid": 17, "text": "great film", "label": "positive"})]));
    let opts = ReadOptions {
        map: FieldMap::parse(&["prompt=text", "response=label", "id=uid"]).unwrap(),
        on_error: OnError::Fail,
        ..Default::default()
    };
    let (format, rows) = read(&p, opts);
    assert_eq!(format, Some(SourceFormat::Mapped));
    assert_eq!(rows[0], json!({"id": "17", "source": "reviews", "prompt": "great film", "response": "positive"}));
    // The CLI says the same.
    let out = whet_ok(&["head", s(&p), "--json", "--map", "prompt=text", "--map", "response=label"]);
    let row: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["prompt"], "great film");
    assert!(row["meta"]["uid"] == 17, "unmapped fields are kept in meta: {row}");
}

#[test]
fn csv_arrow_parquet_and_gzip_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let csv =
        write(dir.path(), "qa.csv", "question,answer,difficulty\n\"Why, then?\",\"Because\nof this\",3\nq2,a2,1\n");
    let (format, rows) = read(&csv, ReadOptions::default());
    assert_eq!(format, Some(SourceFormat::QuestionAnswer));
    assert_eq!(rows[0]["prompt"], "Why, then?");
    assert_eq!(rows[0]["response"], "Because\nof this");
    assert_eq!(rows[0]["meta"], json!({"difficulty": "3"}), "CSV fields stay text");

    // A Parquet and an Arrow file in someone else's layout (here: prompt/completion with a number column).
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt", DataType::Utf8, false),
        Field::new("completion", DataType::Utf8, true),
        Field::new("votes", DataType::UInt32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["p0", "p1"])),
            Arc::new(StringArray::from(vec![Some("c0"), Some("c1")])),
            Arc::new(UInt32Array::from(vec![Some(5), None])),
        ],
    )
    .unwrap();
    let pq = dir.path().join("pc.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&pq).unwrap(), schema.clone(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let ipc = dir.path().join("pc.arrow");
    let mut w = arrow::ipc::writer::FileWriter::try_new(std::fs::File::create(&ipc).unwrap(), &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    for p in [&pq, &ipc] {
        let (format, rows) = read(p, ReadOptions::default());
        assert_eq!(format, Some(SourceFormat::PromptCompletion), "{}", p.display());
        assert_eq!(rows[0]["response"], "c0");
        assert_eq!(rows[0]["meta"], json!({"votes": 5}));
        assert!(rows[1].get("meta").is_none());
        assert_eq!(rows[1]["source"], "pc");
    }

    // gzip is recognised by its bytes, and the source is the name without its extensions.
    let gz = dir.path().join("train.jsonl.gz");
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, jsonl(&[json!({"prompt": "a", "completion": "b"})]).as_bytes()).unwrap();
    e.finish().unwrap();
    let (_, rows) = read(&gz, ReadOptions::default());
    assert_eq!(rows[0]["source"], "train");
}

#[test]
fn directories_and_globs_read_every_data_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.jsonl", &jsonl(&[json!({"question": "q1", "answer": "a1"})]));
    write(dir.path(), "b.jsonl", &jsonl(&[json!({"question": "q2", "answer": "a2", "source": "own"})]));
    write(dir.path(), "empty.jsonl", "");
    write(dir.path(), "notes.txt", "not data");
    let (_, rows) = read(dir.path(), ReadOptions::default());
    let sources: Vec<&str> = rows.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["a", "own"], "the stem, unless the row brings its own source");
    let pattern = dir.path().join("[ab].jsonl");
    let (_, rows) = read(&pattern, ReadOptions::default());
    assert_eq!(rows.len(), 2);
    // A manifest written into the folder is not read back as data.
    let out = dir.path().join("all.parquet");
    let m = convert(dir.path(), &out, &ConvertOptions::default(), |_| {}).unwrap();
    assert_eq!(m.inputs.len(), 3);
    let m2 = convert(dir.path(), &dir.path().join("again.jsonl"), &ConvertOptions::default(), |_| {}).unwrap();
    assert_eq!(m2.inputs.len(), 4, "the Parquet written there is data now, its manifest is not");
    assert_eq!(m2.rows.rows_out, 4);
}

#[test]
fn ids_are_kept_or_hashed_from_content() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.jsonl",
        &jsonl(&[json!({"prompt": "p", "response": "r"}), json!({"prompt": "p", "response": "r2"})]),
    );
    let b = write(dir.path(), "b.jsonl", &jsonl(&[json!({"prompt": "p", "response": "r", "extra": 1})]));
    let (_, ra) = read(&a, ReadOptions::default());
    let (_, rb) = read(&b, ReadOptions::default());
    assert_ne!(ra[0]["id"], ra[1]["id"], "different content, different id");
    assert_eq!(ra[0]["id"], rb[0]["id"], "the id depends on the content, not on the file");
    assert_eq!(ra[0]["id"], whetstone::datasets::content_id("p", Some("r"), None));
}

#[test]
fn a_failed_write_leaves_no_file_and_a_good_one_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    // Many good rows, then a bad one far into the file: the output must not appear.
    let mut text = String::new();
    for i in 0..50_000 {
        text.push_str(&format!("{}\n", json!({"prompt": format!("p{i}"), "response": "r"})));
    }
    text.push_str("{\"prompt\": 1}\n");
    let input = write(dir.path(), "big.jsonl", &text);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("big.parquet");
    let err = convert(&input, &out, &ConvertOptions::default(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("line 50001") && err.contains("field \"prompt\""), "{err}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "nothing left behind");

    // An existing dataset stays whole until the new one is complete.
    let writer_schema = schema::core_schema();
    let w = DatasetWriter::create(&out, OutputFormat::Parquet, writer_schema.clone()).unwrap();
    w.finish().unwrap();
    let before = std::fs::read(&out).unwrap();
    let mut w = DatasetWriter::create(&out, OutputFormat::Parquet, writer_schema).unwrap();
    let (batches, _) =
        read_all(write(dir.path(), "one.jsonl", "{\"prompt\": \"x\"}\n"), ReadOptions::default()).unwrap();
    w.write(&batches[0]).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), before, "the old file is untouched while writing");
    drop(w); // abandoned: e.g. a panic in the stage
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1, "the abandoned temporary file is removed");
}

#[test]
fn refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x.jsonl", &jsonl(&[json!({"prompt": "a"})]));
    let err = whet_fails(&["convert", s(&p), s(&p)]);
    assert!(err.contains("overwrite an input"), "{err}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), jsonl(&[json!({"prompt": "a"})]));
}

#[test]
fn head_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(100);
    let p = write(dir.path(), "x.jsonl", &jsonl(&[json!({"prompt": long, "response": "line one\nline two"})]));
    let out = whet_ok(&["head", s(&p), "-n", "5"]);
    assert!(out.contains("prompt") && out.contains("response"), "{out}");
    assert!(out.contains("line one⏎line two"), "newlines shown, not breaking rows: {out}");
    assert!(out.contains('…'), "long text truncated: {out}");
    assert!(out.contains("│ id"), "{out}");
}

#[test]
fn large_outputs_span_row_groups_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..30_000 {
        text.push_str(&format!(
            "{}\n",
            json!({"prompt": format!("{i} {}", "lorem ipsum ".repeat(100)), "response": i.to_string()})
        ));
    }
    let input = write(dir.path(), "many.jsonl", &text);
    let out = dir.path().join("many.parquet");
    convert(&input, &out, &ConvertOptions::default(), |_| {}).unwrap();
    let meta = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(&out).unwrap()).unwrap(),
    )
    .clone();
    assert!(meta.num_row_groups() >= 2, "{} row groups", meta.num_row_groups());
    let (_, rows) = read(&out, ReadOptions::default());
    assert_eq!(rows.len(), 30_000);
    assert!(
        rows.iter().enumerate().all(|(i, r)| r["response"].as_str().map(str::parse::<usize>) == Some(Ok(i))),
        "rows keep their order"
    );
}
