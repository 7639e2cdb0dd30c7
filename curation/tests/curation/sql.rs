//! SQL over datasets: tables read as whetstone reads them, whetstone's UDFs agreeing with the stages they
//! come from, results written with manifests, and errors a person can act on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
use whetstone_curation::cluster::assign;
use whetstone_curation::decontam::EvalNgrams;
use whetstone_curation::dedup::minhash::{MinHashOptions, MinHasher};
use whetstone_curation::embed::{embed_dataset, embeddings_of, HashingEmbedder, TextField};
use whetstone_curation::sql::{QueryResult, SqlSession};
use whetstone_datasets::{convert, read_all, ConvertOptions, ReadOptions};

fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("WHETSTONE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if dir.join("README.md").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: no shared data at {}", dir.display());
        None
    }
}

fn one(r: &QueryResult) -> RecordBatch {
    arrow::compute::concat_batches(&r.schema, &r.batches).unwrap()
}

fn session(tables: &[(&str, &Path)]) -> SqlSession {
    let mut s = SqlSession::new().unwrap();
    for (name, path) in tables {
        s.register(name, path, ReadOptions::default()).unwrap();
    }
    s
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let c = arrow::compute::cast(batch.column_by_name(column).unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    c.as_string::<i32>().iter().map(|v| v.unwrap_or("").to_string()).collect()
}

#[test]
fn counts_per_source_match_the_reader_on_t0() {
    let Some(data) = shared() else { return };
    let t0 = data.join("t0-templates");
    let sql = session(&[("t0", &t0)]);
    let r = one(&sql.query("SELECT source, count(*) AS n FROM t0 GROUP BY source ORDER BY source").unwrap());
    let (batches, _) = read_all(&t0, ReadOptions::default()).unwrap();
    let mut want: HashMap<String, u64> = HashMap::new();
    for b in &batches {
        for s in strings(b, "source") {
            *want.entry(s).or_default() += 1;
        }
    }
    assert_eq!(r.num_rows(), want.len(), "one row per source");
    assert_eq!(want.len(), 212, "T0: 220 template files, 8 of them empty");
    let sources = strings(&r, "source");
    let counts = r.column_by_name("n").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
    for (s, n) in sources.iter().zip(counts.values()) {
        assert_eq!(want[s], *n as u64, "{s}");
    }
    let mut sorted = sources.clone();
    sorted.sort();
    assert_eq!(sources, sorted, "ORDER BY holds");
}

#[test]
fn a_whetstone_parquet_and_its_jsonl_are_the_same_table() {
    let Some(data) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let jsonl = data.join("gsm8k/test.jsonl");
    let parquet = dir.path().join("test.parquet");
    convert(&jsonl, &parquet, &ConvertOptions::default(), |_| {}).unwrap();
    let sql = session(&[("j", &jsonl), ("p", &parquet)]);
    assert!(!sql.tables()[0].native && sql.tables()[1].native, "JSONL streams through whetstone's reader; Parquet not");
    let count = |q: &str| one(&sql.query(q).unwrap()).column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0);
    assert_eq!(count("SELECT count(*) FROM j"), 1319);
    assert_eq!(count("SELECT count(*) FROM p"), 1319);
    let differ = "SELECT count(*) FROM (SELECT id, source, prompt, response FROM j \
                  EXCEPT SELECT id, source, prompt, response FROM p)";
    assert_eq!(count(differ), 0, "the same ids, sources and texts");
    let joined = "SELECT count(*) FROM j JOIN p ON j.id = p.id WHERE j.response = p.response";
    assert_eq!(count(joined), 1319);
}

#[test]
fn functions_agree_with_the_stages_they_come_from() {
    let Some(data) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let test = data.join("gsm8k/test.jsonl");
    let sql = session(&[("g", &test)]);
    let r = one(&sql
        .query("SELECT id, prompt, xxh3(prompt) AS h, minhash(prompt) AS m, minhash(prompt, 0.5, 3, 7) AS m2 FROM g")
        .unwrap());
    assert_eq!(r.num_rows(), 1319);
    let prompts = strings(&r, "prompt");
    let hashes = r.column_by_name("h").unwrap().as_primitive::<UInt64Type>();
    let default = MinHasher::new(&MinHashOptions::for_threshold(0.8, 0).unwrap()).unwrap();
    let mut other = MinHashOptions::for_threshold(0.5, 7).unwrap();
    other.shingle = 3;
    let other = MinHasher::new(&other).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(hashes.value(i), xxhash_rust::xxh3::xxh3_64(p.as_bytes()));
        let keys = |c: &str| {
            r.column_by_name(c).unwrap().as_list::<i32>().value(i).as_primitive::<UInt64Type>().values().to_vec()
        };
        assert_eq!(keys("m"), default.band_keys(&default.signature(p)), "row {i}");
        assert_eq!(keys("m2"), other.band_keys(&other.signature(p)), "row {i}");
    }

    // ngram_overlap above 0 exactly where decontamination finds a shared 13-gram.
    let train = data.join("gsm8k/train.jsonl");
    let eval = EvalNgrams::load(std::slice::from_ref(&test), 13).unwrap();
    let q = format!("SELECT prompt, ngram_overlap(prompt, '{}') AS o FROM t", test.display());
    let sql = session(&[("t", &train)]);
    let r = one(&sql.query(&q).unwrap());
    let overlaps = r.column_by_name("o").unwrap().as_primitive::<Float64Type>();
    let mut hits = 0;
    for (i, p) in strings(&r, "prompt").iter().enumerate() {
        assert_eq!(overlaps.value(i) > 0.0, eval.first_set(p).is_some(), "row {i}");
        assert!((overlaps.value(i) - eval.overlap(p)).abs() < 1e-12);
        hits += (overlaps.value(i) > 0.0) as usize;
    }
    let self_overlap = format!("SELECT min(ngram_overlap(prompt, '{}', 5)) FROM g", test.display());
    let sql_g = session(&[("g", &test)]);
    let min = one(&sql_g.query(&self_overlap).unwrap()).column(0).as_primitive::<Float64Type>().value(0);
    assert_eq!(min, 1.0, "every 5-gram of a set is in the set");
    eprintln!("{hits} GSM8K train prompts share a 13-gram with test");

    // nearest() against the stage's own assignment, and vector_sum() against sums per cluster.
    let emb = dir.path().join("emb.parquet");
    let e = HashingEmbedder::fit_dataset(&test, ReadOptions::default(), TextField::Prompt, 64, 1).unwrap();
    embed_dataset(&test, &emb, &e, TextField::Prompt, ReadOptions::default(), |_, _| {}).unwrap();
    let centroids = dir.path().join("centroids.parquet");
    let sql = session(&[("e", &emb)]);
    sql.write("SELECT embedding FROM e ORDER BY id LIMIT 5", &centroids).unwrap();
    let r = one(&sql
        .query(&format!(
            "SELECT nearest(embedding, '{c}') AS c, count(*) AS n, vector_sum(embedding) AS s FROM e GROUP BY \
             nearest(embedding, '{c}') ORDER BY c",
            c = centroids.display()
        ))
        .unwrap());
    let (batches, _) = read_all(&emb, ReadOptions::default()).unwrap();
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let (x, dim) = embeddings_of(&all).unwrap();
    let c_rows = {
        let (b, _) = read_all(&emb, ReadOptions::default()).unwrap();
        let b = arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
        let ids = strings(&b, "id");
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by(|&a, &c| ids[a].cmp(&ids[c]));
        let (v, _) = embeddings_of(&b).unwrap();
        order[..5].iter().flat_map(|&i| v[i * dim..(i + 1) * dim].to_vec()).collect::<Vec<f32>>()
    };
    let (labels, _) = assign(x, dim, &c_rows).unwrap();
    let mut sums = vec![vec![0f64; dim]; 5];
    let mut counts = [0i64; 5];
    for (i, &l) in labels.iter().enumerate() {
        counts[l as usize] += 1;
        for d in 0..dim {
            sums[l as usize][d] += x[i * dim + d] as f64;
        }
    }
    let clusters = r.column_by_name("c").unwrap().as_primitive::<UInt32Type>();
    let ns = r.column_by_name("n").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
    let ss = r.column_by_name("s").unwrap().as_list::<i32>();
    for row in 0..r.num_rows() {
        let c = clusters.value(row) as usize;
        assert_eq!(ns.value(row), counts[c], "cluster {c}");
        let got = ss.value(row);
        let got = got.as_primitive::<Float64Type>();
        for d in 0..dim {
            assert!((got.value(d) - sums[c][d]).abs() < 1e-6, "cluster {c}, dimension {d}");
        }
    }
    assert_eq!(counts.iter().filter(|&&n| n > 0).count(), r.num_rows());
    // nearest_distance() summed is the assignment's inertia.
    let (_, distances) = assign(x, dim, &c_rows).unwrap();
    let inertia: f64 = distances.iter().map(|&d| d as f64).sum();
    let r = one(&sql
        .query(&format!("SELECT sum(nearest_distance(embedding, '{}')) AS d FROM e", centroids.display()))
        .unwrap());
    let got = r.column(0).as_primitive::<Float64Type>().value(0);
    assert!(inertia > 0.0 && (got - inertia).abs() < 1e-6 * inertia, "{got} vs {inertia}");

    // embed() gives the vectors `whet embed` would with the same model (hashing: IDF all 1 in SQL).
    let r = one(&sql
        .query("SELECT embed(prompt, 'hashing') AS v FROM (SELECT prompt FROM e ORDER BY id LIMIT 3)")
        .unwrap());
    let unfitted = HashingEmbedder::fit(std::iter::empty(), 512, 0).unwrap();
    let (b, _) = read_all(&emb, ReadOptions::default()).unwrap();
    let b = arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
    let mut texts: Vec<(String, String)> = strings(&b, "id").into_iter().zip(strings(&b, "prompt")).collect();
    texts.sort();
    let want =
        whetstone_curation::Embedder::embed(&unfitted, &texts[..3].iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>())
            .unwrap();
    let got = r.column(0).as_fixed_size_list();
    assert_eq!(got.value_length(), 512);
    assert_eq!(got.values().as_primitive::<arrow::datatypes::Float32Type>().values().as_ref(), want.as_slice());
}

#[test]
fn a_result_is_written_whole_with_its_manifest() {
    let Some(data) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let test = data.join("gsm8k/test.jsonl");
    let sql = session(&[("g", &test)]);
    let out = dir.path().join("long.parquet");
    let q = "SELECT id, prompt, response FROM g WHERE length(prompt) > 300";
    let m = sql.write(q, &out).unwrap();
    assert!(m.rows.query);
    assert_eq!(m.stage, "sql");
    assert_eq!(m.parameters["query"], q);
    assert_eq!(m.parameters["tables"]["g"], test.display().to_string());
    assert_eq!(m.rows.rows_in, 1319, "rows the table gave");
    let (batches, _) = read_all(&test, ReadOptions::default()).unwrap();
    let long = batches.iter().flat_map(|b| strings(b, "prompt")).filter(|p| p.chars().count() > 300).count();
    assert_eq!(m.rows.rows_out, long as u64);
    assert!(long > 0 && long < 1319);
    let written = whetstone_datasets::Manifest::read_beside(&out).unwrap();
    assert_eq!(written.rows.rows_out, long as u64);

    // A query that fails while rows stream leaves nothing under the output's name.
    let bad = dir.path().join("bad.parquet");
    let e = sql.write(
        "SELECT nearest(embedding, 'no-such-centroids.parquet') FROM (SELECT [0.5, 0.5] AS embedding FROM g)",
        &bad,
    );
    assert!(e.is_err());
    assert!(!bad.exists(), "no partial output");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "the first result and its manifest only: {leftovers:?}");
}

#[test]
fn errors_say_what_is_wrong() {
    let Some(data) = shared() else { return };
    let test = data.join("gsm8k/test.jsonl");
    let sql = session(&[("g", &test)]);
    let e = sql.query("SELECT * FROM t0").unwrap_err().to_string();
    assert!(e.contains("no table named t0") && e.contains("the tables are g"), "{e}");
    let e = sql.query("SELEC prompt FROM g").unwrap_err().to_string();
    assert!(e.starts_with("syntax error in the query:") && e.contains("SELEC"), "{e}");
    let e = sql.query("SELECT xxh3(length(prompt)) FROM g").unwrap_err().to_string();
    assert!(e.contains("xxh3(text): argument 1 is Int32; it takes text"), "{e}");
    let e = sql.query("SELECT nearest(prompt, 'c.parquet') FROM g").unwrap_err().to_string();
    assert!(e.contains("argument 1 is Utf8; it takes a vector"), "{e}");
    let e = sql.query("SELECT embed(prompt, response) FROM g").unwrap_err().to_string();
    assert!(e.contains("the model must be a literal string"), "{e}");
    let e = sql.query("SELECT minhash(prompt, 0.8, 5, 0, 9) FROM g").unwrap_err().to_string();
    assert!(e.contains("give bands and rows together"), "{e}");
    let e = sql.query("SELECT minhash(prompt, 0.8, 5, 0, 9, 13, 1) FROM g").unwrap_err().to_string();
    assert!(e.contains("takes 1 to 6 arguments, given 7"), "{e}");
    let mut s = SqlSession::new().unwrap();
    let e = s.register("bad name", &test, ReadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("use letters, digits and _"), "{e}");
    let e = s.register("x", Path::new("/no/such/file.jsonl"), ReadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("/no/such/file.jsonl"), "{e}");
}
