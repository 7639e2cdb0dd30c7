//! `whet sql`: the README's questions on the shared data and on the recorded SmolLM2 demo, results written as
//! datasets with manifests, and errors that say what to do.

use crate::common::{shared_data, whet_fails, whet_ok};

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn rows_per_source_on_t0() {
    let Some(data) = shared_data() else { return };
    let t0 = format!("t0={}", data.join("t0-templates").display());
    let out = whet_ok(&[
        "sql",
        "SELECT source, count(*) AS rows FROM t0 GROUP BY source ORDER BY rows DESC, source LIMIT 3",
        "--table",
        &t0,
    ]);
    assert!(out.contains("│ source") && out.contains("rows"), "{out}");
    assert!(out.lines().last().unwrap().contains("3 rows"), "{out}");
    let all = whet_ok(&["sql", "SELECT count(DISTINCT source) AS sources, count(*) AS rows FROM t0", "--table", &t0]);
    assert!(all.contains("212"), "220 template files, 8 of them empty:\n{all}");
    // More rows than shown are counted, not dropped.
    let many = whet_ok(&["sql", "SELECT source FROM t0 GROUP BY source", "--table", &t0, "-n", "5"]);
    assert!(many.contains("212 rows; the first 5 shown"), "{many}");
}

#[test]
fn the_recorded_demo_answers_join_across_rounds() {
    let demo =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/2026-12-05-demo-smollm2/filtered");
    let dir = tempfile::tempdir().unwrap();
    // The recorded answers are ungraded: grade them as the rounds did, with whetstone's GSM8K verifier.
    for n in [0, 3] {
        let answers = demo.join(format!("round-{n}/eval/answers.parquet"));
        whet_ok(&["reward", "--with", "gsm8k", s(&answers), s(&dir.path().join(format!("r{n}.parquet")))]);
    }
    let r = |n: u32| format!("r{n}={}", dir.path().join(format!("r{n}.parquet")).display());
    let out = dir.path().join("fixed.parquet");
    let q = "SELECT r3.prompt_id, r0.response AS before, r3.response AS after FROM r0 JOIN r3 \
             ON r0.prompt_id = r3.prompt_id WHERE r0.reward < 1 AND r3.reward = 1";
    let printed = whet_ok(&["sql", q, "--table", &r(0), "--table", &r(3), "--out", s(&out)]);
    assert!(printed.contains("sql"), "{printed}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("fixed.parquet.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["stage"], "sql");
    assert_eq!(m["parameters"]["query"], q);
    assert_eq!(m["rows"]["query"], true);
    assert_eq!(m["rows"]["in"], 400, "200 held-out answers in each round's table");
    // README: 5.5% right before, 69.5% after round 3; at least 69.5 − 5.5 = 64 points are newly right.
    let fixed = m["rows"]["out"].as_u64().unwrap();
    assert!(fixed >= 128, "{fixed} answers wrong before and right after");
    assert_eq!(fixed, 129, "the recorded answers, graded the same way, give the same count");
    let rate = whet_ok(&["sql", "SELECT avg(reward) AS right FROM r3", "--table", &r(3)]);
    assert!(rate.contains("0.695"), "{rate}");
}

#[test]
fn sql_errors_say_what_to_do() {
    let Some(data) = shared_data() else { return };
    let g = format!("g={}", data.join("gsm8k/test.jsonl").display());
    let e = whet_fails(&["sql", "SELECT * FROM t0", "--table", &g]);
    assert!(e.contains("no table named t0") && e.contains("the tables are g"), "{e}");
    let e = whet_fails(&["sql", "SELECT prompt FROM g WHERE", "--table", &g]);
    assert!(e.contains("syntax error in the query"), "{e}");
    let e = whet_fails(&["sql", "SELECT minhash(length(prompt)) FROM g", "--table", &g]);
    assert!(e.contains("argument 1 is Int32; it takes text"), "{e}");
    let e = whet_fails(&["sql", "SELECT 1", "--table", "g"]);
    assert!(e.contains("give NAME=PATH"), "{e}");
}
