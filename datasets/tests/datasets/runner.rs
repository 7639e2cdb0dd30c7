use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use serde::{Deserialize, Serialize};
use whetstone_datasets::{
    read_all, run_stage, schema, Dropped, Error, Manifest, OnError, ReadOptions, Rows, Selection, Stage, StageError,
};

use crate::alpaca_lines;

/// Three files of 5, 4 and 6 rows: a folder the reader yields as several batches.
fn three_files(dir: &Path) -> std::path::PathBuf {
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    for (name, range) in [("a.jsonl", 0..5), ("b.jsonl", 5..9), ("c.jsonl", 9..15)] {
        std::fs::write(input.join(name), alpaca_lines(range)).unwrap();
    }
    input
}

/// The number in a row's prompt, `instruction N`.
fn numbers(batch: &RecordBatch) -> Vec<usize> {
    let prompts = batch.column_by_name(schema::PROMPT).unwrap().as_string::<i32>();
    prompts.iter().map(|p| p.unwrap().trim_start_matches("instruction ").parse().unwrap()).collect()
}

fn output_numbers(path: &Path) -> Vec<usize> {
    read_all(path, ReadOptions::default()).unwrap().0.iter().flat_map(numbers).collect()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counted {
    looked_at: u64,
}

/// Drops the rows whose number is a multiple of 3, each with its reason.
struct DropThirds;

impl Stage for DropThirds {
    type Results = Counted;
    type Error = Error;

    fn name(&self) -> &str {
        "drop-thirds"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"every": 3})
    }

    fn run(&self, rows: &mut Rows) -> Result<Counted, Error> {
        let mut looked_at = 0;
        rows.filter(|batch| {
            let n = numbers(&batch);
            looked_at += n.len() as u64;
            let keep: Vec<u32> = (0..n.len() as u32).filter(|&i| n[i as usize] % 3 != 0).collect();
            let gone =
                (0..n.len()).filter(|&i| n[i] % 3 == 0).map(|i| (i, "third".into(), format!("{} % 3 == 0", n[i])));
            let dropped = Dropped::rows(&batch, gone)?;
            Ok((arrow::compute::take_record_batch(&batch, &UInt32Array::from(keep))?, dropped))
        })?;
        Ok(Counted { looked_at })
    }
}

#[test]
fn every_row_is_counted_once_and_the_results_read_back_typed() {
    let dir = tempfile::tempdir().unwrap();
    let input = three_files(dir.path());
    // A bad line the reader skips, on top of the rows the stage drops.
    std::fs::write(input.join("d.jsonl"), "{\"instruction\": \"broken\"\n").unwrap();
    let output = dir.path().join("out.parquet");
    let read = ReadOptions { on_error: OnError::Skip, ..Default::default() };
    let done = run_stage(&DropThirds, &input, &output, read, |_, _| {}).unwrap();

    let m = Manifest::read_beside(&output).unwrap();
    assert_eq!((m.rows.rows_in, m.rows.rows_out, m.rows.rows_rejected), (16, 10, 6), "in = out + rejected");
    assert_eq!(m.rejected.by_reason.get("third"), Some(&5));
    assert_eq!(m.rejected.by_reason.get("invalid_json"), Some(&1));
    assert_eq!(m.stage, "drop-thirds");
    assert_eq!(m.parameters["every"], 3);
    assert_eq!(m.results::<Counted>().unwrap(), Counted { looked_at: 15 }, "the stage's results, read back typed");
    assert_eq!(done.results, Counted { looked_at: 15 });
    assert!(m.results::<Vec<u64>>().is_err(), "results read as the wrong type are an error, not a zero");
    assert_eq!(output_numbers(&output), [1, 2, 4, 5, 7, 8, 10, 11, 13, 14]);
    // Every rejected row is in the rejected-rows file with its reason.
    let lines = std::fs::read_to_string(m.rejected.file.unwrap()).unwrap();
    let reasons: Vec<String> =
        lines.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].to_string()).collect();
    assert_eq!(reasons.len(), 6);
    assert_eq!(reasons.iter().filter(|r| r.contains("third")).count(), 5);
}

/// A stage for a test: its name and what its run does (no parameters, no results).
struct Named<F>(&'static str, F);

fn named<F: Fn(&mut Rows) -> Result<(), Error>>(name: &'static str, run: F) -> Named<F> {
    Named(name, run)
}

impl<F: Fn(&mut Rows) -> Result<(), Error>> Stage for Named<F> {
    type Results = ();
    type Error = Error;

    fn name(&self) -> &str {
        self.0
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn run(&self, rows: &mut Rows) -> Result<(), Error> {
        (self.1)(rows)
    }
}

#[test]
fn a_stage_that_loses_rows_is_an_internal_error_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = three_files(dir.path());
    let output = dir.path().join("out.parquet");
    // A stage that loses a row without saying why: a bug the runner refuses to write.
    let loses_a_row = named("loses-a-row", |rows| rows.map(|batch| Ok(batch.slice(1, batch.num_rows() - 1))));
    let err = run_stage(&loses_a_row, &input, &output, ReadOptions::default(), |_, _| {}).unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "our own bug, not the user's: {err}");
    assert!(err.to_string().contains("internal error: stage loses-a-row turned 5 rows into 4"), "{err}");
    assert!(!output.exists() && !whetstone_datasets::write::manifest_path(&output).exists());
}

#[test]
fn an_expanding_stage_accounts_for_rows_per_input_row() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    // Two rows for every input row but row 0, which is dropped.
    let twice = named("twice", |rows| {
        rows.expand(2, |batch| {
            let n = numbers(&batch);
            let keep: Vec<u32> = (0..n.len() as u32).filter(|&i| n[i as usize] != 0).flat_map(|i| [i, i]).collect();
            let gone = n.iter().position(|&x| x == 0).map(|i| (i, "zero".to_string(), String::new()));
            Ok((arrow::compute::take_record_batch(&batch, &UInt32Array::from(keep))?, Dropped::rows(&batch, gone)?))
        })
    });
    let done = run_stage(&twice, &three_files(dir.path()), &output, ReadOptions::default(), |_, _| {}).unwrap();
    let r = done.manifest.rows;
    assert_eq!((r.rows_in, r.rows_out, r.rows_rejected, r.per_row), (15, 28, 1, 2), "in = out / 2 + rejected");
    assert_eq!(done.manifest.results, serde_json::Value::Null, "a stage that finds nothing records no results");
}

/// Keeps the rows whose number is odd, decided over the whole column, and adds each kept row's number
/// times ten as a column: the values must land on their own rows across batches. `in_order: false` hands
/// the kept rows back reversed.
fn odd_rows(in_order: bool) -> Named<impl Fn(&mut Rows) -> Result<(), Error>> {
    named("odd-rows", move |rows| {
        rows.whole_columns(&[schema::PROMPT], |batches| {
            let mut all = Vec::new();
            for b in batches {
                let b = b?;
                assert_eq!(b.num_columns(), 1, "only the columns asked for are read in pass one");
                all.extend(numbers(&b));
            }
            let mut keep: Vec<u32> = (0..all.len() as u32).filter(|&i| all[i as usize] % 2 == 1).collect();
            if !in_order {
                keep.reverse();
            }
            let tens = UInt32Array::from_iter_values(keep.iter().map(|&i| all[i as usize] as u32 * 10));
            let field = arrow::datatypes::Field::new("tens", arrow::datatypes::DataType::UInt32, false);
            Ok(Selection {
                columns: vec![(field, Arc::new(tens) as _)],
                dropped: [("even".to_string(), (all.len() - keep.len()) as u64)].into(),
                keep,
                ..Default::default()
            })
        })
    })
}

#[test]
fn a_whole_column_stage_writes_the_rows_it_keeps_in_input_order_with_its_columns_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let input = three_files(dir.path());
    let output = dir.path().join("out.parquet");
    let done = run_stage(&odd_rows(true), &input, &output, ReadOptions::default(), |_, _| {}).unwrap();
    let r = done.manifest.rows;
    assert_eq!((r.rows_in, r.rows_out, r.rows_rejected), (15, 7, 8));
    let (batches, _) = read_all(&output, ReadOptions::default()).unwrap();
    let mut seen = Vec::new();
    for b in &batches {
        let tens = b.column_by_name("tens").unwrap().as_primitive::<arrow::datatypes::UInt32Type>();
        for (n, t) in numbers(b).into_iter().zip(tens.values()) {
            assert_eq!(*t as usize, n * 10, "the added value sits on its own row");
            seen.push(n);
        }
    }
    assert_eq!(seen, [1, 3, 5, 7, 9, 11, 13]);

    // Kept rows out of order are our bug, not the user's: refused, and nothing written.
    let output = dir.path().join("unordered.parquet");
    let err = run_stage(&odd_rows(false), &input, &output, ReadOptions::default(), |_, _| {}).unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err}");
    assert!(!output.exists());
}

/// A stage error comes back as the stage said it.
#[test]
fn a_stage_error_keeps_its_message() {
    let fails = named("fails", |rows| {
        rows.map(|_| Err(StageError::from("the embedder is missing: run scripts/fetch-minilm.sh")))
    });
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    let err = run_stage(&fails, &three_files(dir.path()), &output, ReadOptions::default(), |_, _| {}).unwrap_err();
    assert_eq!(err.to_string(), "the embedder is missing: run scripts/fetch-minilm.sh");
    assert!(!output.exists());
}
