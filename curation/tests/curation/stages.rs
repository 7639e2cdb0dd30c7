//! The curation stages on real data: embed → cluster → select, their manifests, and clear errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, FixedSizeListArray, RecordBatch};
use arrow::datatypes::{DataType, Field, UInt32Type};
use whetstone_curation::cluster::cluster_dataset;
use whetstone_curation::cluster::KMeansOptions;
use whetstone_curation::embed::{embed_dataset, embeddings_of, with_embedding, HashingEmbedder, TextField};
use whetstone_curation::select::{select_dataset, Budget, Method, SelectOptions};
use whetstone_datasets::{read_all, DatasetWriter, OutputFormat, ReadOptions};

fn gsm8k_test() -> Option<PathBuf> {
    let dir = std::env::var_os("WHETSTONE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let p = dir.join("gsm8k/test.jsonl");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: no shared data at {}", dir.display());
        None
    }
}

fn one(path: &Path) -> RecordBatch {
    let (batches, reader) = read_all(path, ReadOptions::default()).unwrap();
    arrow::compute::concat_batches(&reader.schema(), &batches).unwrap()
}

/// Embeds GSM8K test with the hashing embedder into `dir/emb.parquet`.
fn embedded(dir: &Path) -> Option<PathBuf> {
    let input = gsm8k_test()?;
    let out = dir.join("emb.parquet");
    let e = HashingEmbedder::fit_dataset(&input, ReadOptions::default(), TextField::Prompt, 256, 1).unwrap();
    let m = embed_dataset(&input, &out, &e, TextField::Prompt, ReadOptions::default(), |_, _| {}).unwrap();
    assert_eq!((m.rows.rows_in, m.rows.rows_out), (1319, 1319));
    assert_eq!(m.stage, "embed");
    assert_eq!(m.parameters["dim"], 256);
    Some(out)
}

#[test]
fn embed_cluster_select_on_gsm8k() {
    let dir = tempfile::tempdir().unwrap();
    let Some(emb) = embedded(dir.path()) else { return };
    let batch = one(&emb);
    let (vectors, dim) = embeddings_of(&batch).unwrap();
    assert_eq!(dim, 256);
    for v in vectors.chunks(dim) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit vectors: {norm}");
    }

    let clustered = dir.path().join("clustered.parquet");
    let (m, model) =
        cluster_dataset(&emb, &clustered, &KMeansOptions::new(16, 3), ReadOptions::default(), |_| {}).unwrap();
    assert_eq!(model.sizes.iter().sum::<u64>(), 1319);
    assert!(model.sizes.iter().all(|&s| s > 0), "k clusters, none empty");
    assert_eq!(m.results["sizes"].as_array().unwrap().len(), 16);
    let labels = one(&clustered);
    let clusters = labels.column_by_name("cluster").unwrap().as_primitive::<UInt32Type>();
    assert!(clusters.values().iter().all(|&c| c < 16));
    // Same seed, same clusters.
    let again = dir.path().join("again.parquet");
    let (_, model2) =
        cluster_dataset(&emb, &again, &KMeansOptions::new(16, 3), ReadOptions::default(), |_| {}).unwrap();
    assert_eq!(model.inertia, model2.inertia);
    assert_eq!(model.sizes, model2.sizes);

    let mut distances = Vec::new();
    for method in [Method::Random, Method::Kmq, Method::Kcenter] {
        let out = dir.path().join(format!("{method:?}.parquet"));
        let opts = SelectOptions::new(method, Budget::Count(64), 5);
        let (m, cov) = select_dataset(&clustered, &out, &opts, ReadOptions::default(), |_| {}).unwrap();
        assert_eq!(m.rows.rows_out, 64);
        assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
        assert_eq!(m.rejected.by_reason["not_selected"], 1319 - 64);
        assert_eq!(m.results["selected"], 64);
        let picked = one(&out);
        let reasons = picked.column_by_name("selected_by").unwrap().as_string::<i32>();
        assert!(reasons.iter().all(|r| r.unwrap().starts_with(&format!("{method:?}").to_lowercase())));
        assert!(picked.column_by_name("cluster").is_some(), "selected rows keep their cluster");
        // Written whole (text and vectors, read again in a second pass), each with its own cluster.
        let ids = picked.column_by_name("id").unwrap().as_string::<i32>();
        let all_ids = labels.column_by_name("id").unwrap().as_string::<i32>();
        let all_prompts = labels.column_by_name("prompt").unwrap().as_string::<i32>();
        let picked_clusters = picked.column_by_name("cluster").unwrap().as_primitive::<UInt32Type>();
        let prompts = picked.column_by_name("prompt").unwrap().as_string::<i32>();
        for i in 0..picked.num_rows() {
            let row = (0..labels.num_rows()).find(|&r| all_ids.value(r) == ids.value(i)).unwrap();
            assert_eq!(prompts.value(i), all_prompts.value(row));
            assert_eq!(picked_clusters.value(i), clusters.value(row), "row {i}");
        }
        assert_eq!(embeddings_of(&picked).unwrap().1, 256);
        assert!(cov.cluster_entropy.is_some());
        distances.push((method, cov.mean_distance, cov.max_distance, cov.cluster_entropy.unwrap()));
    }
    let (random, kmq, kcenter) = (distances[0], distances[1], distances[2]);
    assert!(kmq.3 > random.3, "kMQ spreads over clusters more evenly than random: {distances:?}");
    assert!(kcenter.2 < random.2, "k-center has the smallest worst case: {distances:?}");
}

#[test]
fn semantic_dedup_groups_near_identical_embeddings() {
    use whetstone_curation::dedup::semantic::{dedup_semantic, SemanticIndex, SemanticOptions};
    let dir = tempfile::tempdir().unwrap();
    let Some(emb) = embedded(dir.path()) else { return };
    // Plant duplicates: rows 10..20 get the embeddings of rows 0..10 (as paraphrases would).
    let batch = one(&emb);
    let (vectors, dim) = embeddings_of(&batch).unwrap();
    let mut planted = vectors.to_vec();
    for r in 0..10 {
        let copy = planted[r * dim..(r + 1) * dim].to_vec();
        planted[(r + 10) * dim..(r + 11) * dim].copy_from_slice(&copy);
    }
    let input = dir.path().join("planted.parquet");
    write(&input, with_embedding(batch, planted, dim).unwrap());
    for index in [SemanticIndex::Clusters, SemanticIndex::Hnsw] {
        let opts = SemanticOptions { index, ..Default::default() };
        let out = dir.path().join("semantic.parquet");
        let m = dedup_semantic(&input, &out, &opts, ReadOptions::default(), |_| {}).unwrap();
        assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
        assert!(m.rows.rows_rejected >= 10, "the planted copies are found: {}", m.rows.rows_rejected);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(m.rejected.file.as_ref().unwrap())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, m.rows.rows_rejected);
        let ids = one(&input).column_by_name("id").unwrap().as_string::<i32>().clone();
        for r in 10..20 {
            let dropped = lines.iter().find(|l| l["row"]["id"] == ids.value(r)).expect("planted copy dropped");
            assert_eq!(dropped["row"]["dup_of"], ids.value(r - 10), "the first row of a group is kept");
            assert!(dropped["row"].get("embedding").is_none(), "the rejected-rows log leaves the vectors out");
        }
        // Same input, same result.
        let again =
            dedup_semantic(&input, &dir.path().join("again.parquet"), &opts, ReadOptions::default(), |_| {}).unwrap();
        assert_eq!(again.rows, m.rows);
        assert_eq!(again.output.xxh3_128, m.output.xxh3_128, "{index:?}");
    }
}

#[test]
fn iterative_rounds_follow_cluster_scores_and_skip_chosen_rows() {
    let dir = tempfile::tempdir().unwrap();
    let Some(emb) = embedded(dir.path()) else { return };
    let clustered = dir.path().join("k4.parquet");
    cluster_dataset(&emb, &clustered, &KMeansOptions::new(4, 2), ReadOptions::default(), |_| {}).unwrap();
    let batch = one(&clustered);
    let clusters = batch.column_by_name("cluster").unwrap().as_primitive::<UInt32Type>().values().to_vec();
    // Last round's scores: cluster 0 is where the model falls short (high gap), the others barely; rows
    // 0..100 were chosen in round 0.
    let reward: Vec<Option<f32>> =
        clusters.iter().enumerate().map(|(i, &c)| (i % 3 == 0).then_some(if c == 0 { 4.0 } else { 1.0 })).collect();
    let round: Vec<Option<u32>> = (0..batch.num_rows()).map(|i| (i < 100).then_some(0)).collect();
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("reward", DataType::Float32, true));
    fields.push(Field::new("round", DataType::UInt32, true));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(arrow::array::Float32Array::from(reward)));
    columns.push(Arc::new(arrow::array::UInt32Array::from(round)));
    let pool = dir.path().join("pool.parquet");
    write(&pool, RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap());

    let out = dir.path().join("round1.parquet");
    let opts = SelectOptions { round: 1, ..SelectOptions::new(Method::Iterative, Budget::Count(120), 4) };
    let (m, _) = select_dataset(&pool, &out, &opts, ReadOptions::default(), |_| {}).unwrap();
    assert_eq!(m.rows.rows_out, 120, "the whole round budget, not budget / k");
    let weights = &m.results["cluster_weights"];
    let w0 = weights["0"].as_f64().unwrap();
    assert!((w0 - 4.0 / 7.0).abs() < 1e-9, "w ∝ s: 4 / (4 + 1 + 1 + 1): {weights}");
    let picked = one(&out);
    let picked_clusters = picked.column_by_name("cluster").unwrap().as_primitive::<UInt32Type>();
    let from_0 = picked_clusters.values().iter().filter(|&&c| c == 0).count();
    let size_0 = clusters[100..].iter().filter(|&&c| c == 0).count();
    assert_eq!(from_0, size_0.min((120.0 * w0).round() as usize), "cluster 0 gets its weighted share");
    assert!(picked.column_by_name("round").unwrap().as_primitive::<UInt32Type>().values().iter().all(|&r| r == 1));
    let ids = one(&pool).column_by_name("id").unwrap().as_string::<i32>().clone();
    let earlier: std::collections::HashSet<&str> = (0..100).map(|i| ids.value(i)).collect();
    let picked_ids = picked.column_by_name("id").unwrap().as_string::<i32>().clone();
    assert!(picked_ids.iter().all(|id| !earlier.contains(id.unwrap())), "rows of round 0 are not chosen again");
    // Without a cluster column it says what to run.
    let opts = SelectOptions::new(Method::Iterative, Budget::Count(10), 0);
    let e = select_dataset(&emb, &dir.path().join("x.parquet"), &opts, ReadOptions::default(), |_| {}).unwrap_err();
    assert!(e.to_string().contains("whet kmeans"), "{e}");
}

#[test]
fn bad_parameters_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let Some(emb) = embedded(dir.path()) else { return };
    let out = dir.path().join("out.parquet");
    let err = |r: whetstone_curation::Result<_>| match r {
        Ok(_) => panic!("should fail"),
        Err(e) => e.to_string(),
    };
    let e = err(cluster_dataset(&emb, &out, &KMeansOptions::new(5000, 0), ReadOptions::default(), |_| {}).map(|_| ()));
    assert!(e.contains("k = 5000") && e.contains("1319 rows"), "{e}");
    let select = |opts: SelectOptions, input: &Path| {
        select_dataset(input, &out, &opts, ReadOptions::default(), |_| {}).map(|_| ())
    };
    let e = err(select(SelectOptions::new(Method::Random, Budget::Count(2000), 0), &emb));
    assert!(e.contains("budget of 2000") && e.contains("1319"), "{e}");
    let e = err(select(
        SelectOptions { label: Some("skill".into()), ..SelectOptions::new(Method::Random, Budget::Count(10), 0) },
        &emb,
    ));
    assert!(e.contains("no column \"skill\""), "{e}");
    assert!(!out.exists(), "no output after a failure");

    // No embedding column at all.
    let e = err(select(SelectOptions::new(Method::Kmq, Budget::Count(10), 0), &gsm8k_test().unwrap()));
    assert!(e.contains("no `embedding` column") && e.contains("whet embed"), "{e}");

    // A NaN in one vector, and vectors of the wrong type.
    let batch = one(&emb);
    let (vectors, dim) = embeddings_of(&batch).unwrap();
    let mut broken = vectors.to_vec();
    broken[7 * dim + 3] = f32::NAN;
    let nan = dir.path().join("nan.parquet");
    write(&nan, with_embedding(batch.clone(), broken, dim).unwrap());
    let e = err(select(SelectOptions::new(Method::Kcenter, Budget::Count(10), 0), &nan));
    assert!(e.contains("row 7") && e.contains("NaN"), "{e}");
    let wrong = dir.path().join("wrong.parquet");
    let ints = arrow::array::Int32Array::from(vec![0; batch.num_rows() * 2]);
    let list =
        FixedSizeListArray::try_new(Arc::new(Field::new("item", DataType::Int32, false)), 2, Arc::new(ints), None)
            .unwrap();
    let i = batch.schema().index_of("embedding").unwrap();
    let mut cols = batch.columns().to_vec();
    cols[i] = Arc::new(list);
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = Field::new("embedding", cols[i].data_type().clone(), true);
    write(&wrong, RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols).unwrap());
    let e = err(select(SelectOptions::new(Method::Kcenter, Budget::Count(10), 0), &wrong));
    assert!(e.contains("Int32") && e.contains("not Float32"), "{e}");
}

fn write(path: &Path, batch: RecordBatch) {
    let mut w = DatasetWriter::create(path, OutputFormat::Parquet, batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

fn shared() -> Option<PathBuf> {
    gsm8k_test().map(|p| p.parent().unwrap().parent().unwrap().to_path_buf())
}

fn rejected_lines(m: &whetstone_datasets::Manifest) -> Vec<serde_json::Value> {
    let Some(f) = &m.rejected.file else { return Vec::new() };
    std::fs::read_to_string(f).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn dedup_and_decontamination_counts_add_up_on_real_data() {
    use whetstone_curation::decontam::decontaminate;
    use whetstone_curation::dedup::exact::dedup_exact;
    let Some(data) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();

    let out = dir.path().join("t0.parquet");
    let m = dedup_exact(&data.join("t0-templates"), &out, ReadOptions::default(), |_, _| {}).unwrap();
    assert_eq!(m.rows.rows_in, 41_813);
    assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
    assert_eq!(m.rejected.by_reason["exact_duplicate"], m.rows.rows_rejected);
    assert!(m.rows.rows_rejected >= 816, "T0 repeats at least 816 rows exactly: {}", m.rows.rows_rejected);
    let dropped = rejected_lines(&m);
    assert_eq!(dropped.len() as u64, m.rows.rows_rejected);
    let kept_ids: std::collections::HashSet<String> =
        one(&out).column_by_name("id").unwrap().as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
    assert!(dropped.iter().all(|d| kept_ids.contains(d["row"]["dup_of"].as_str().unwrap())), "dup_of names a kept row");
    let exact = m.rows.rows_rejected;

    // Near duplicates include the exact ones (T0 asks many questions about one passage: those are near).
    use whetstone_curation::dedup::minhash::{dedup_minhash, MinHashOptions};
    let out = dir.path().join("t0-near.parquet");
    let opts = MinHashOptions::for_threshold(0.8, 1).unwrap();
    let m = dedup_minhash(&data.join("t0-templates"), &out, &opts, ReadOptions::default(), |_, _| {}).unwrap();
    assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
    assert!(m.rows.rows_rejected > exact, "{} near vs {exact} exact", m.rows.rows_rejected);
    let near = rejected_lines(&m);
    assert_eq!(near.len() as u64, m.rows.rows_rejected);
    assert!(near.iter().all(|d| d["reason"] == "near_duplicate" && d["row"]["dup_of"].is_string()));

    let out = dir.path().join("gsm8k.parquet");
    let test = data.join("gsm8k/test.jsonl");
    let m = decontaminate(
        &data.join("gsm8k/train.jsonl"),
        &out,
        std::slice::from_ref(&test),
        13,
        ReadOptions::default(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(m.rows.rows_in, 7473);
    assert_eq!(m.rows.rows_in, m.rows.rows_out + m.rows.rows_rejected);
    assert!(m.rows.rows_rejected > 0, "GSM8K train shares some 13-grams with its test set");
    assert_eq!(m.results["contaminated_by_eval_set"][test.display().to_string()], m.rows.rows_rejected);
    assert_eq!(rejected_lines(&m).len() as u64, m.rows.rows_rejected);
    // Against itself, everything is contaminated; with a longer n, less is.
    let m = decontaminate(
        &test,
        &dir.path().join("self.parquet"),
        std::slice::from_ref(&test),
        13,
        ReadOptions::default(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(m.rows.rows_out, 0);
    let err =
        decontaminate(&test, &dir.path().join("x.parquet"), &[], 13, ReadOptions::default(), |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("at least one evaluation set"));
}

#[test]
fn filters_drop_bad_rows_with_named_reasons() {
    use whetstone_curation::filters::special_tokens::SpecialTokenMode;
    use whetstone_curation::filters::{filter_dataset, EmptyOrRefused, Filter, Length, RepeatedNgrams};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    let rows = [
        serde_json::json!({"prompt": "Name a primary colour.", "response": "Red."}),
        serde_json::json!({"prompt": "Say something.", "response": "As an AI language model, I cannot."}),
        serde_json::json!({"prompt": "Repeat.", "response": "la la la la la la la la la la la la la la"}),
        serde_json::json!({"prompt": "?", "response": "ok"}),
    ];
    std::fs::write(&input, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let filters: Vec<Box<dyn Filter>> = vec![
        Box::new(Length { min_prompt: 2, max_prompt: 1000, min_response: 1, max_response: 1000 }),
        Box::new(RepeatedNgrams { n: 3, max_ratio: 0.5 }),
        Box::new(EmptyOrRefused),
    ];
    let out = dir.path().join("kept.parquet");
    let m = filter_dataset(
        &input,
        &out,
        SpecialTokenMode::Keep,
        &filters,
        serde_json::json!({}),
        ReadOptions::default(),
        |_, _| {},
    )
    .unwrap()
    .manifest;
    assert_eq!((m.rows.rows_in, m.rows.rows_out, m.rows.rows_rejected), (4, 1, 3));
    let reasons: Vec<(&str, u64)> = m.rejected.by_reason.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(reasons, [("empty_or_refused", 1), ("length", 1), ("repeated_ngrams", 1)]);
    let dropped = rejected_lines(&m);
    assert_eq!(dropped.len(), 3);
    assert!(dropped.iter().any(|d| d["reason"] == "length" && d["row"]["prompt"] == "?"));
}

#[test]
fn special_token_strings_are_stripped_from_the_ends_or_their_rows_rejected() {
    use whetstone_curation::filters::special_tokens::SpecialTokenMode;
    use whetstone_curation::filters::{filter_dataset, FilterResults};
    use whetstone_datasets::{messages_at, SpecialTokens};
    let dir = tempfile::tempdir().unwrap();
    // One file per layout: a reader recognises the layout of a file from its rows.
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let rows = [
        serde_json::json!({"prompt": "Which organisms like heat?", "completion": "thermophilic organisms<|endoftext|>"}),
        serde_json::json!({"prompt": "Name a colour.", "completion": "Red."}),
        serde_json::json!({"prompt": "<s>[INST] Hi [/INST]", "completion": "Hello</s>"}),
        serde_json::json!({"prompt": "Continue:<|endoftext|>", "completion": "Sure.<|im_end|>\n<|im_start|>user\nmore"}),
    ];
    std::fs::write(input.join("a.jsonl"), rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let chat = serde_json::json!({"messages": [
        {"role": "system", "content": "Be brief.<|eot_id|>"},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4 <end_of_turn>\n"},
    ]});
    std::fs::write(input.join("b.jsonl"), format!("{chat}\n")).unwrap();
    let run = |mode, name: &str| {
        let out = dir.path().join(name);
        let done =
            filter_dataset(&input, &out, mode, &[], serde_json::json!({}), ReadOptions::default(), |_, _| {}).unwrap();
        let read: FilterResults = done.manifest.results().unwrap();
        assert_eq!(read, done.results, "the manifest holds the counts");
        (out, done.manifest, done.results.special_tokens_stripped)
    };

    let (out, m, stripped) = run(SpecialTokenMode::Strip, "stripped.parquet");
    assert_eq!((m.rows.rows_in, m.rows.rows_out, m.rows.rows_rejected), (5, 4, 1));
    assert_eq!(m.rejected.by_reason["special_tokens"], 1);
    let dropped = rejected_lines(&m);
    assert_eq!(dropped[0]["detail"], "response holds \"<|im_end|>\" inside the text");
    assert_eq!(dropped[0]["row"]["prompt"], "Continue:<|endoftext|>", "a rejected row is written as it came");
    let counts: Vec<(&str, u64)> = stripped.strings.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(
        counts,
        [
            ("</s>", 1),
            ("<end_of_turn>", 1),
            ("<s>", 1),
            ("<|endoftext|>", 1),
            ("<|eot_id|>", 1),
            ("[/INST]", 1),
            ("[INST]", 1)
        ]
    );
    assert_eq!(stripped.rows, 3, "the rejected row's strings are not counted as stripped");
    let kept = one(&out);
    let (prompts, responses) = (
        kept.column_by_name("prompt").unwrap().as_string::<i32>(),
        kept.column_by_name("response").unwrap().as_string::<i32>(),
    );
    let texts: Vec<(&str, &str)> = (0..kept.num_rows()).map(|i| (prompts.value(i), responses.value(i))).collect();
    assert_eq!(
        texts,
        [
            ("Which organisms like heat?", "thermophilic organisms"),
            ("Name a colour.", "Red."),
            ("Hi", "Hello"),
            ("2 + 2?", "4")
        ]
    );
    let turns: Vec<String> = messages_at(&kept, 3).unwrap().into_iter().map(|m| m.content).collect();
    assert_eq!(turns, ["Be brief.", "2 + 2?", "4"], "a chat row's turns are stripped with its prompt and response");
    let known = SpecialTokens::known();
    assert!(texts.iter().all(|(p, r)| known.first(p).is_none() && known.first(r).is_none()));

    let (_, m, stripped) = run(SpecialTokenMode::Reject, "rejected.parquet");
    assert_eq!((m.rows.rows_out, m.rows.rows_rejected), (1, 4));
    assert_eq!(stripped.rows, 0);
    let details: Vec<String> = rejected_lines(&m).iter().map(|d| d["detail"].as_str().unwrap().to_string()).collect();
    assert!(details.contains(&"response holds \"<|endoftext|>\"".to_string()), "{details:?}");
    assert!(details.contains(&"messages[0].content holds \"<|eot_id|>\"".to_string()), "{details:?}");

    let (_, m, stripped) = run(SpecialTokenMode::Keep, "kept.parquet");
    assert_eq!((m.rows.rows_out, stripped), (5, Default::default()));
}
