use whetstone_datasets::{read_all, Error, OnError, Position, ReadOptions, SourceFormat};

use crate::{alpaca_lines, shared_data};

#[test]
fn gsm8k_train_reads_whole_with_its_layout_recognised() {
    let Some(data) = shared_data() else { return };
    let (batches, reader) = read_all(data.join("gsm8k/train.jsonl"), ReadOptions::default()).unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 7473);
    let report = &reader.reports()[0];
    assert_eq!((report.rows_in, report.rows_out, report.rows_rejected), (7473, 7473, 0));
    assert_eq!(report.format, Some(SourceFormat::QuestionAnswer));
    let prompts = whetstone_datasets::schema::PROMPT;
    for b in &batches {
        let p = arrow::array::AsArray::as_string::<i32>(b.column_by_name(prompts).unwrap());
        assert!(p.iter().all(|t| t.is_some_and(|t| !t.trim().is_empty())), "every question is a prompt");
    }
}

#[test]
fn a_bad_line_stops_the_read_naming_file_line_and_field_or_is_counted_when_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    let mut text = alpaca_lines(0..3);
    text.push_str("{\"instruction\": 7, \"output\": \"x\"}\n"); // line 4: a number where text belongs
    text.push_str("{\"instruction\": \"no closing brace\"\n"); // line 5: not JSON
    text.push_str(&alpaca_lines(3..5));
    std::fs::write(&path, text).unwrap();

    let Err(Error::Row(e)) = read_all(&path, ReadOptions::default()) else { panic!("a bad row must stop the read") };
    assert_eq!((e.path.as_path(), e.position), (path.as_path(), Position::Line(4)));
    assert_eq!(e.field.as_deref(), Some("instruction"));

    let skip = ReadOptions { on_error: OnError::Skip, ..Default::default() };
    let (batches, reader) = read_all(&path, skip).unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    let r = &reader.reports()[0];
    assert_eq!((r.rows_in, r.rows_out, r.rows_rejected), (7, 5, 2), "rows in = rows out + rows rejected");
    assert_eq!(reader.rejections().total(), 2);
    assert_eq!(
        reader.rejections().by_reason.keys().map(String::as_str).collect::<Vec<_>>(),
        ["invalid_json", "wrong_type"]
    );
}

#[test]
fn the_same_rows_read_alike_from_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layouts = [
        ("alpaca.jsonl", r#"{"instruction": "Add 2 and 3.", "output": "5"}"#, SourceFormat::Alpaca),
        ("completion.jsonl", r#"{"prompt": "Add 2 and 3.", "completion": "5"}"#, SourceFormat::PromptCompletion),
        ("gsm8k.jsonl", r#"{"question": "Add 2 and 3.", "answer": "5"}"#, SourceFormat::QuestionAnswer),
        (
            "messages.jsonl",
            r#"{"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]}"#,
            SourceFormat::Messages,
        ),
        (
            "sharegpt.jsonl",
            r#"{"conversations": [{"from": "human", "value": "Add 2 and 3."}, {"from": "gpt", "value": "5"}]}"#,
            SourceFormat::ShareGpt,
        ),
    ];
    for (name, line, format) in layouts {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let (batches, reader) = read_all(&path, ReadOptions::default()).unwrap();
        assert_eq!(reader.reports()[0].format, Some(format), "{name}");
        let rows = whetstone_datasets::write::batch_rows_json(&batches[0]).unwrap();
        assert_eq!(rows.len(), 1, "{name}");
        assert_eq!(rows[0]["prompt"], "Add 2 and 3.", "{name}: {}", rows[0]);
        assert_eq!(rows[0]["response"], "5", "{name}: {}", rows[0]);
    }
}

#[test]
fn a_parquet_file_of_many_row_groups_reads_as_one_stream_whole_or_only_the_columns_asked_for() {
    use arrow::array::AsArray;
    use whetstone_datasets::schema;
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("rows.jsonl");
    std::fs::write(&jsonl, alpaca_lines(0..20_000)).unwrap();
    let (batches, _) = read_all(&jsonl, ReadOptions::default()).unwrap();
    // Row groups of 3,001 rows: seven, none aligned with the reader's batches of 8,192.
    let path = dir.path().join("rows.parquet");
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(3_001)).build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batches[0].schema(), Some(props))
            .unwrap();
    batches.iter().for_each(|b| w.write(b).unwrap());
    assert_eq!(w.close().unwrap().num_row_groups(), 7);
    let prompts = |b: &arrow::array::RecordBatch| -> Vec<String> {
        b.column_by_name(schema::PROMPT).unwrap().as_string::<i32>().iter().map(|p| p.unwrap().to_string()).collect()
    };
    let want: Vec<String> = (0..20_000).map(|i| format!("instruction {i}")).collect();

    let (whole, reader) = read_all(&path, ReadOptions::default()).unwrap();
    let sizes: Vec<usize> = whole.iter().map(|b| b.num_rows()).collect();
    assert_eq!(sizes, [8192, 8192, 3616], "batches cut as one reader over the file cuts them");
    assert_eq!(whole.iter().flat_map(prompts).collect::<Vec<_>>(), want, "every row once, in file order");
    let names = |b: &arrow::array::RecordBatch| -> Vec<String> {
        b.schema().fields().iter().map(|f| f.name().clone()).collect()
    };
    assert_eq!(names(&whole[0]), names(&batches[0]), "every column");
    assert_eq!((reader.reports()[0].rows_in, reader.reports()[0].rows_out), (20_000, 20_000));

    let columns = Some(std::sync::Arc::new(vec![schema::PROMPT.to_string(), "absent".into(), schema::ID.into()]));
    let (some, reader) = read_all(&path, ReadOptions { columns, ..Default::default() }).unwrap();
    assert_eq!(names(&some[0]), [schema::PROMPT, schema::ID], "the columns asked for that the file has, in that order");
    assert_eq!(some.iter().flat_map(prompts).collect::<Vec<_>>(), want);
    assert_eq!(reader.reports()[0].rows_in, 20_000);
    // A JSON input is read whole, then projected the same way.
    let columns = Some(std::sync::Arc::new(vec![schema::PROMPT.to_string(), schema::ID.into()]));
    let (json, _) = read_all(&jsonl, ReadOptions { columns, ..Default::default() }).unwrap();
    assert_eq!(names(&json[0]), names(&some[0]));
    assert_eq!(json.iter().flat_map(prompts).collect::<Vec<_>>(), want);

    // Inputs of different columns are refused as soon as the second is read, whatever the columns read.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let extra = arrow::array::UInt32Array::from_iter_values(0..batches[0].num_rows() as u32);
    let mut fields: Vec<_> = batches[0].schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow::datatypes::Field::new("extra", arrow::datatypes::DataType::UInt32, false)));
    let mut columns = batches[0].columns().to_vec();
    columns.push(std::sync::Arc::new(extra));
    let with_extra =
        arrow::array::RecordBatch::try_new(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)), columns)
            .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(mixed.join("a.parquet")).unwrap(),
        with_extra.schema(),
        None,
    )
    .unwrap();
    w.write(&with_extra).unwrap();
    w.close().unwrap();
    std::fs::write(mixed.join("b.jsonl"), alpaca_lines(0..3)).unwrap();
    let columns = Some(std::sync::Arc::new(vec![schema::PROMPT.to_string()]));
    let Err(err) = read_all(&mixed, ReadOptions { columns, ..Default::default() }) else {
        panic!("inputs of different columns read as one")
    };
    let err = err.to_string();
    assert!(err.contains("b.jsonl") && err.contains("differ from earlier inputs"), "{err}");
}
