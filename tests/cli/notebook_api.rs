//! The notebook API on real data: datasets in memory, their columns, and how they display.

use whetstone::prelude::*;

#[test]
fn a_dataset_reads_counts_and_gives_its_columns() {
    let Some(data) = crate::common::shared_data() else { return };
    let d = Dataset::open(data.join("gsm8k/test.jsonl")).unwrap();
    assert_eq!(d.rows(), 1319);
    let lengths = d.lengths("prompt").unwrap();
    assert_eq!(lengths.len(), 1319);
    assert!(lengths.iter().all(|&l| l > 10.0));
    let err = d.lengths("nosuch").unwrap_err().to_string();
    assert!(err.contains("no column \"nosuch\"") && err.contains("prompt"), "{err}");
    assert!(d.labels("source").unwrap().iter().all(|s| s == "test"));
    let text = d.to_string();
    assert!(text.starts_with("1,319 rows × "), "{text}");
    assert!(text.contains("the first 10"), "{text}");
    assert_eq!(text.lines().count(), 3 + 10, "caption, header, rule and ten rows");
}

#[test]
fn a_stage_run_from_a_notebook_reports_every_row() {
    let Some(data) = crate::common::shared_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sub/gsm8k.parquet");
    let done = run(Step::Filter(FilterStep::default()), data.join("gsm8k/test.jsonl"), &out).unwrap();
    let rows = done.manifest.rows;
    assert_eq!(rows.rows_in, 1319);
    assert_eq!(rows.rows_in, rows.rows_out + rows.rows_rejected);
    assert_eq!(done.dataset().unwrap().rows() as u64, rows.rows_out);
}
