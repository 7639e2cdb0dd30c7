//! An in-process Ballista cluster (one scheduler, three executors, four partitions per stage) answers as the
//! local session does, with whetstone's functions decoded on the executors.

use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use whetstone_curation::sql::cluster::LocalCluster;
use whetstone_curation::sql::{QueryResult, SqlSession};
use whetstone_datasets::{convert, ConvertOptions, ReadOptions};

fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("WHETSTONE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    dir.join("README.md").exists().then_some(dir)
}

fn rows_sorted(r: &QueryResult) -> Vec<String> {
    let batch = arrow::compute::concat_batches(&r.schema, &r.batches).unwrap();
    let mut rows: Vec<String> =
        whetstone_datasets::write::batch_rows_json(&batch).unwrap().into_iter().map(|v| v.to_string()).collect();
    rows.sort();
    rows
}

fn one(r: &QueryResult) -> RecordBatch {
    arrow::compute::concat_batches(&r.schema, &r.batches).unwrap()
}

#[test]
fn queries_on_a_cluster_answer_as_they_do_locally() {
    let Some(data) = shared() else {
        eprintln!("skipped: no shared data");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Two Parquet files, so the scan alone has partitions to spread.
    let (a, b) = (dir.path().join("t0/a.parquet"), dir.path().join("t0/b.parquet"));
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    let t0 = data.join("t0-templates");
    let files: Vec<PathBuf> = {
        let mut f: Vec<PathBuf> = std::fs::read_dir(&t0).unwrap().map(|e| e.unwrap().path()).collect();
        f.sort();
        f
    };
    let half = dir.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    for f in &files[..files.len() / 2] {
        std::fs::copy(f, half.join(f.file_name().unwrap())).unwrap();
    }
    convert(&half, &a, &ConvertOptions::default(), |_| {}).unwrap();
    let rest = dir.path().join("rest");
    std::fs::create_dir_all(&rest).unwrap();
    for f in &files[files.len() / 2..] {
        std::fs::copy(f, rest.join(f.file_name().unwrap())).unwrap();
    }
    convert(&rest, &b, &ConvertOptions::default(), |_| {}).unwrap();
    let table = a.parent().unwrap().to_path_buf();

    let cluster = LocalCluster::start(3, 2, 4).unwrap();
    let mut remote = cluster.session().unwrap();
    remote.register("t0", &table, ReadOptions::default()).unwrap();
    let mut local = SqlSession::new().unwrap();
    local.register("t0", &table, ReadOptions::default()).unwrap();

    let queries = [
        "SELECT source, count(*) AS n, sum(length(prompt)) AS chars FROM t0 GROUP BY source",
        "SELECT id, xxh3(prompt) AS h FROM t0 WHERE length(response) < 20",
        "SELECT k, count(*) AS n FROM (SELECT unnest(minhash(prompt || ' ' || response)) AS k FROM t0) \
         GROUP BY k HAVING count(*) > 50",
    ];
    for q in queries {
        let (l, r) = (local.query(q).unwrap(), remote.query(q).unwrap());
        assert!(l.rows() > 0, "{q}: some rows");
        assert_eq!(rows_sorted(&l), rows_sorted(&r), "{q}");
    }
    // Sums of floats depend on the order they are added in: equal to 1e-9 of their size.
    let q = "SELECT source, vector_sum(embed(prompt, 'hashing')) AS s FROM t0 WHERE source LIKE 'adversarial_qa%' \
             GROUP BY source ORDER BY source";
    let (l, r) = (one(&local.query(q).unwrap()), one(&remote.query(q).unwrap()));
    assert!(l.num_rows() >= 2, "adversarial_qa has 10 templates");
    assert_eq!(l.column(0), r.column(0), "the same groups");
    let (ls, rs) = (l.column(1).as_list::<i32>(), r.column(1).as_list::<i32>());
    for i in 0..l.num_rows() {
        let (a, b) = (ls.value(i), rs.value(i));
        let (a, b) = (a.as_primitive::<Float64Type>(), b.as_primitive::<Float64Type>());
        assert_eq!(a.len(), 512);
        for (x, y) in a.values().iter().zip(b.values()) {
            assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
    let n = one(&remote.query("SELECT count(*) FROM t0").unwrap());
    let m = one(&local.query("SELECT count(*) FROM t0").unwrap());
    assert_eq!(n, m);

    // A table the executors cannot read themselves is refused with what to do.
    let e = remote.register("g", &data.join("gsm8k/test.jsonl"), ReadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("whet convert"), "{e}");
}

/// A pipeline (its TOML given the output path) run here and on an in-process cluster of 3 executors.
fn here_and_on_a_cluster(
    dir: &Path,
    toml: impl Fn(&str) -> String,
) -> (whetstone_curation::pipeline::PipelineReport, whetstone_curation::pipeline::PipelineReport) {
    let write = |name: &str, out: &str| {
        let p = dir.join(name);
        std::fs::write(&p, toml(out)).unwrap();
        whetstone_curation::pipeline::Pipeline::load(&p).unwrap()
    };
    let here = write("here.toml", "here/out.parquet").run(|_, _, _| {}).unwrap();
    let cluster = LocalCluster::start(3, 2, 4).unwrap();
    let mut session = cluster.session().unwrap();
    let there = whetstone_curation::sql::curate::run_pipeline(
        &write("there.toml", "there/out.parquet"),
        &mut session,
        |_, _, _| {},
    )
    .unwrap();
    (here, there)
}

/// `whet curate --cluster`'s library path: filter, exact dedup, MinHash dedup and decontamination with their
/// row work on the cluster write what the run on one machine writes, row for row and manifest for manifest.
#[test]
fn a_pipeline_on_a_cluster_writes_what_it_writes_here() {
    let Some(data) = shared() else {
        eprintln!("skipped: no shared data");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t0 = data.join("t0-templates");
    let eval = t0.join("adversarial_qa_dbert_answer_the_following_q.jsonl");
    let toml = |out: &str| {
        format!(
            "input = {:?}\noutput = {out:?}\nseed = 3\n\n[[stage]]\nrun = \"filter\"\nmax_symbols = 0.2\n\n\
             [[stage]]\nrun = \"dedup\"\nmethod = \"exact\"\n\n[[stage]]\nrun = \"dedup\"\nmethod = \"minhash\"\n\
             threshold = 0.7\n\n[[stage]]\nrun = \"decontam\"\neval = [{:?}]\nn = 8\n",
            t0.display().to_string(),
            eval.display().to_string()
        )
    };
    let (here, there) = here_and_on_a_cluster(dir.path(), toml);
    assert_eq!(here.steps.len(), 4);
    for (h, t) in here.steps.iter().zip(&there.steps) {
        let (mh, mt) = (
            whetstone_datasets::Manifest::read(&h.manifest).unwrap(),
            whetstone_datasets::Manifest::read(&t.manifest).unwrap(),
        );
        assert_eq!(serde_json::to_value(&mh.rows).unwrap(), serde_json::to_value(&mt.rows).unwrap(), "{}", h.stage);
        assert_eq!(mh.output.xxh3_128, mt.output.xxh3_128, "{}: the same output bytes", h.stage);
        assert_eq!(mh.parameters, mt.parameters, "{}", h.stage);
        assert_eq!(
            serde_json::to_value(&mh.inputs[0].xxh3_128).unwrap(),
            serde_json::to_value(&mt.inputs[0].xxh3_128).unwrap()
        );
        let rejected =
            |p: &Path| std::fs::read_to_string(format!("{}.rejected.jsonl", p.display())).unwrap_or_default();
        assert_eq!(rejected(&h.output), rejected(&t.output), "{}: the same rejected rows", h.stage);
        assert!(h.rows_rejected > 0, "{}: the test drops rows at every step", h.stage);
        let work = t.cluster.as_ref().expect("the cluster took the step");
        assert_eq!(work.rows_read, t.rows_in);
        assert!(work.rows_examined >= t.rows_rejected && work.rows_examined < work.rows_read, "{}: {work:?}", t.stage);
        assert!(h.cluster.is_none());
    }
}

/// Embedding with a model and k-means on the cluster: the same vectors as the run here, and a k-means whose
/// inertia is within 1% of `whet kmeans`'s from the same seeds.
#[test]
fn embed_and_kmeans_on_a_cluster_match_the_run_here() {
    use whetstone_curation::embed::minilm_dir;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (Some(data), Some(model)) = (shared(), minilm_dir(&workspace)) else {
        eprintln!("skipped: no shared data or no MiniLM model (scripts/fetch-minilm.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = |out: &str| {
        format!(
            "input = {:?}\noutput = {out:?}\nseed = 5\n\n[[stage]]\nrun = \"embed\"\nembedder = {:?}\n\n\
             [[stage]]\nrun = \"cluster\"\nk = 12\n",
            data.join("gsm8k/test.jsonl").display().to_string(),
            model.display().to_string()
        )
    };
    let (here, there) = here_and_on_a_cluster(dir.path(), toml);
    let manifests: Vec<_> = here
        .steps
        .iter()
        .zip(&there.steps)
        .map(|(h, t)| {
            let work = t.cluster.as_ref().expect("the cluster took the step");
            assert_eq!((work.rows_read, t.rows_in, t.rows_out), (1319, 1319, 1319), "{}", t.stage);
            (
                whetstone_datasets::Manifest::read(&h.manifest).unwrap(),
                whetstone_datasets::Manifest::read(&t.manifest).unwrap(),
            )
        })
        .collect();
    let (embed_here, embed_there) = &manifests[0];
    assert_eq!(embed_here.parameters, embed_there.parameters, "the same model, named the same");
    let vectors = |p: &Path| {
        let batches: Vec<RecordBatch> =
            whetstone_datasets::DatasetReader::open(p, ReadOptions::default()).unwrap().map(Result::unwrap).collect();
        let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        whetstone_curation::embed::embeddings_of(&b).unwrap().0.to_vec()
    };
    let (a, b) = (vectors(&here.steps[0].output), vectors(&there.steps[0].output));
    assert_eq!(a.len(), 1319 * 384);
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "the vectors differ by up to {worst}");

    let (km_here, km_there) = &manifests[1];
    assert_eq!(km_here.parameters, km_there.parameters);
    let inertia = |m: &whetstone_datasets::Manifest| m.results["inertia"].as_f64().unwrap();
    let (ih, it) = (inertia(km_here), inertia(km_there));
    assert!((ih - it).abs() <= 0.01 * ih, "inertia {it} on the cluster, {ih} here");
    let sizes = |m: &whetstone_datasets::Manifest| -> u64 {
        m.results["sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).sum()
    };
    assert_eq!(sizes(km_there), 1319, "every row labelled");
    eprintln!("inertia: {ih:.3} here, {it:.3} on the cluster");
}

/// Special-token strings stripped by a filter step on the cluster: the rows holding them (a conversation's
/// other turns included) are examined on the driver and written stripped, as here.
#[test]
fn special_token_strings_are_stripped_on_a_cluster_as_here() {
    let Some(data) = shared() else {
        eprintln!("skipped: no shared data");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(data.join("gsm8k/test.jsonl"), input.join("a.jsonl")).unwrap();
    let rows = [
        serde_json::json!({"prompt": "Which organisms like heat?", "completion": "thermophilic organisms<|endoftext|>"}),
        serde_json::json!({"prompt": "<s>[INST] Hi [/INST]", "completion": "Hello</s>"}),
        serde_json::json!({"prompt": "Continue:", "completion": "Sure.<|im_end|>\n<|im_start|>user\nmore"}),
    ];
    std::fs::write(input.join("b.jsonl"), rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let chat = serde_json::json!({"messages": [
        {"role": "system", "content": "Be brief.<|eot_id|>"},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "It is 4."},
    ]});
    std::fs::write(input.join("c.jsonl"), format!("{chat}\n")).unwrap();
    let table = dir.path().join("rows.parquet");
    convert(&input, &table, &ConvertOptions::default(), |_| {}).unwrap();
    let toml = |out: &str| {
        format!(
            "input = {:?}\noutput = {out:?}\n\n[[stage]]\nrun = \"filter\"\nspecial_tokens = \"strip\"\n",
            table.display().to_string()
        )
    };
    let (here, there) = here_and_on_a_cluster(dir.path(), toml);
    let (h, t) = (&here.steps[0], &there.steps[0]);
    let (mh, mt) = (
        whetstone_datasets::Manifest::read(&h.manifest).unwrap(),
        whetstone_datasets::Manifest::read(&t.manifest).unwrap(),
    );
    assert_eq!((mh.rows.rows_in, mh.rows.rows_rejected), (1323, 1));
    assert_eq!(serde_json::to_value(&mh.rows).unwrap(), serde_json::to_value(&mt.rows).unwrap());
    assert_eq!(mh.results, mt.results);
    assert_eq!(mh.results["special_tokens_stripped"]["rows"], 3);
    assert_eq!(mh.output.xxh3_128, mt.output.xxh3_128, "the same rows, stripped the same");
    let work = t.cluster.as_ref().expect("the cluster took the step");
    assert_eq!(work.rows_examined, 4, "the three rows holding strings and the conversation");
}
