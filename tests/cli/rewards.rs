//! `whet reward` end to end: verifiers score rows against their references, with reasons, on real GSM8K answers.

use crate::common::{shared_data, whet_fails, whet_ok};

#[test]
fn whet_reward_scores_gsm8k_answers_against_references_with_reasons() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The real GSM8K test answers as references; as responses, the right answer for even rows and the
    // previous row's answer (wrong, unless the numbers agree) for odd ones.
    let text = std::fs::read_to_string(data.join("gsm8k/test.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text.lines().take(40).map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut lines = String::new();
    let mut expected_right = 0;
    for (i, row) in rows.iter().enumerate() {
        let answer = row["answer"].as_str().unwrap();
        let response = if i % 2 == 0 { answer } else { rows[i - 1]["answer"].as_str().unwrap() };
        let last = |t: &str| t.rsplit("####").next().unwrap().trim().replace(',', "");
        expected_right += usize::from(last(response) == last(answer));
        let line = serde_json::json!({"id": format!("r{i}"), "prompt": row["question"], "response": response, "reference": answer});
        lines.push_str(&format!("{line}\n"));
    }
    let input = tmp.path().join("samples.jsonl");
    std::fs::write(&input, lines).unwrap();
    let out = tmp.path().join("scored.parquet");
    let printed = whet_ok(&["reward", input.to_str().unwrap(), out.to_str().unwrap(), "--with", "gsm8k"]);
    assert!(printed.contains("answer N matches the reference N"), "{printed}");

    let manifest = whetstone::datasets::Manifest::read_beside(&out).unwrap();
    assert_eq!((manifest.rows.rows_in, manifest.rows.rows_out), (40, 40));
    assert_eq!(manifest.results["full_reward"], expected_right as u64);
    assert!((20..40).contains(&expected_right), "{expected_right}");
    let (batches, _) = whetstone::datasets::read_all(&out, Default::default()).unwrap();
    use arrow::array::{Array, AsArray};
    let rewards: Vec<f32> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("reward").unwrap().as_primitive::<arrow::datatypes::Float32Type>().values().to_vec()
        })
        .collect();
    let reasons = batches[0].column_by_name("reward_reason").unwrap().as_string::<i32>().clone();
    assert_eq!(rewards[0], 1.0);
    assert!(reasons.value(0).starts_with("answer 18 matches"), "{}", reasons.value(0));
    assert!((0..reasons.len()).all(|i| !reasons.value(i).is_empty()));

    // Weighted: half a GSM8K verdict, half "has a #### line".
    let out2 = tmp.path().join("weighted.parquet");
    whet_ok(&[
        "reward",
        input.to_str().unwrap(),
        out2.to_str().unwrap(),
        "--with",
        "gsm8k=0.5",
        "--with",
        "regex:####=0.5",
    ]);
    let m = whetstone::datasets::Manifest::read_beside(&out2).unwrap();
    let mean = m.results["mean_reward"].as_f64().unwrap();
    assert!((mean - (0.5 * expected_right as f64 / 40.0 + 0.5)).abs() < 1e-9, "{mean}");

    let err = whet_fails(&[
        "reward",
        input.to_str().unwrap(),
        tmp.path().join("x.parquet").to_str().unwrap(),
        "--with",
        "judge",
    ]);
    assert!(err.contains("unknown reward \"judge\""), "{err}");
}

#[test]
fn whet_keep_keeps_the_best_sample_per_prompt_and_pairs_it_with_the_worst() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Three samples per real GSM8K question: the reference, another question's answer (wrong), and the
    // reference's final line alone (right, shorter).
    let text = std::fs::read_to_string(data.join("gsm8k/test.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text.lines().take(9).map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut lines = String::new();
    for (i, row) in rows.iter().take(8).enumerate() {
        let answer = row["answer"].as_str().unwrap();
        let short = format!("#### {}", answer.rsplit("####").next().unwrap().trim());
        for (k, response) in [answer, rows[i + 1]["answer"].as_str().unwrap(), short.as_str()].iter().enumerate() {
            let line = serde_json::json!({"id": format!("q{i}#{k}"), "prompt_id": format!("q{i}"), "prompt": row["question"],
                "response": response, "reference": answer});
            lines.push_str(&format!("{line}\n"));
        }
    }
    let input = tmp.path().join("samples.jsonl");
    std::fs::write(&input, lines).unwrap();
    let scored = tmp.path().join("scored.parquet");
    whet_ok(&["reward", input.to_str().unwrap(), scored.to_str().unwrap(), "--with", "gsm8k"]);
    let kept = tmp.path().join("kept.parquet");
    let pairs = tmp.path().join("pairs.jsonl");
    let printed = whet_ok(&[
        "keep",
        scored.to_str().unwrap(),
        kept.to_str().unwrap(),
        "--by",
        "best-of-n",
        "--pairs",
        pairs.to_str().unwrap(),
    ]);
    assert!(printed.contains("8 chosen/rejected pairs"), "{printed}");
    let m = whetstone::datasets::Manifest::read_beside(&kept).unwrap();
    assert_eq!((m.rows.rows_in, m.rows.rows_out, m.rows.rows_rejected), (24, 8, 16));
    assert_eq!(m.results["prompts_with_a_kept_sample"], 8);
    assert_eq!(m.results["mean_reward_kept"], 1.0);
    let rejected = std::fs::read_to_string(tmp.path().join("kept.parquet.rejected.jsonl")).unwrap();
    assert_eq!(rejected.matches("\"not_best\"").count() + rejected.matches("\"below_min_reward\"").count(), 16);
    for line in std::fs::read_to_string(&pairs).unwrap().lines() {
        let pair: serde_json::Value = serde_json::from_str(line).unwrap();
        let i: usize = pair["prompt_id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(pair["prompt"], rows[i]["question"]);
        assert_eq!((pair["chosen_reward"].as_f64(), pair["rejected_reward"].as_f64()), (Some(1.0), Some(0.0)));
        assert_eq!(pair["rejected"], rows[i + 1]["answer"], "the wrong answer is the rejected one");
    }

    // Code: a right and a wrong function against MBPP-style tests, in the sandbox.
    let code = tmp.path().join("code.jsonl");
    let tests = "assert square(3) == 9\nassert square(-2) == 4";
    let rows = [("c0", "```python\ndef square(x):\n    return x * x\n```"), ("c1", "def square(x):\n    return 2 * x")];
    let text: String = rows
        .iter()
        .map(|(id, r)| {
            format!("{}\n", serde_json::json!({"id": id, "prompt": "Write square.", "response": r, "reference": tests}))
        })
        .collect();
    std::fs::write(&code, text).unwrap();
    let out = tmp.path().join("code.parquet");
    let printed = whet_ok(&["reward", code.to_str().unwrap(), out.to_str().unwrap(), "--with", "code"]);
    assert!(printed.contains("tests failed: AssertionError"), "{printed}");
    let m = whetstone::datasets::Manifest::read_beside(&out).unwrap();
    assert_eq!(m.results["full_reward"], 1);
}
