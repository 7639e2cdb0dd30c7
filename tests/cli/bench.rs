//! `whet bench selection --quick`: every method's row, finite accuracies, selections of the same size that
//! differ the way the methods say, results read back on a second run.

use crate::common::{s, whet_ok};
use whetstone::selfimprove::bench::selection::{read_report, METHODS};
use whetstone::selfimprove::bench::skills::SKILLS;

#[test]
fn whet_bench_selection_quick_gives_every_row_and_reads_results_back() {
    if whetstone::curation::embed::minilm_dir(std::path::Path::new(".")).is_none() {
        eprintln!("skipped: no MiniLM model (run scripts/fetch-minilm.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let printed = whet_ok(&["bench", "selection", "--quick", "--out", s(&out)]);
    for method in METHODS {
        assert!(printed.contains(&format!("│ {method} ")), "{method} missing from the table:\n{printed}");
    }
    let report = read_report(&out).unwrap();
    assert_eq!(report.results.len(), METHODS.len());
    let budget = (report.size.pool as f64 * report.size.budget).round() as usize;
    for r in &report.results {
        assert_eq!(r.selected, budget, "{}: every method selects the budget", r.method);
        assert_eq!(r.skills.len(), SKILLS.len());
        assert_eq!(r.skills.iter().map(|k| k.selected).sum::<usize>(), budget);
        assert!(r.skills.iter().all(|k| k.test_rows == report.size.test_per_skill));
        assert!(r.skills.iter().all(|k| (0.0..=1.0).contains(&k.accuracy)));
        assert!(r.macro_accuracy.is_finite() && r.final_loss.is_finite() && r.mean_distance > 0.0, "{r:?}");
    }
    let of = |m: &str| report.results.iter().find(|r| r.method == m).unwrap();
    // What each method is for, visible in what it picked.
    let entropy = |m: &str| {
        -of(m)
            .skills
            .iter()
            .map(|k| k.selected as f64 / budget as f64)
            .filter(|p| *p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f64>()
    };
    assert!(entropy("kmq") > entropy("random"), "kmq spreads the budget over skills more evenly than random");
    assert!(
        of("dedup+kmq").near_copies_selected < of("kmq").near_copies_selected,
        "dedup removes near-copies before kmq picks"
    );
    assert!(of("kcenter").max_distance < of("random").max_distance, "k-center leaves no row far from the subset");
    let per_skill = |m: &str| of(m).skills.iter().map(|k| k.selected).collect::<Vec<_>>();
    let by_skill = per_skill("by-skill");
    assert!(
        by_skill.iter().max().unwrap() - by_skill.iter().min().unwrap() <= 1,
        "by-skill splits evenly: {by_skill:?}"
    );
    let raw = std::fs::metadata(out.join("results.parquet")).unwrap();
    assert!(raw.len() > 0 && out.join("selection.svg").is_file() && out.join("selection.md").is_file());

    // Again: every result is read back (no subset written again), and the table is the same.
    let subset = out.join("seed-0/random/model-data.jsonl");
    let written = std::fs::metadata(&subset).unwrap().modified().unwrap();
    let again = whet_ok(&["bench", "selection", "--quick", "--out", s(&out)]);
    assert_eq!(std::fs::metadata(&subset).unwrap().modified().unwrap(), written);
    let table = |text: &str| text.lines().filter(|l| l.starts_with('│')).map(String::from).collect::<Vec<_>>();
    assert_eq!(table(&again), table(&printed));
    let other =
        crate::common::whet_fails(&["bench", "selection", "--quick", "--embedder", "hashing", "--out", s(&out)]);
    assert!(other.contains("other settings"), "{other}");
}

#[test]
fn whet_bench_preference_quick_runs_every_arm_from_one_model_and_reads_results_back() {
    use whetstone::selfimprove::bench::preference::ARMS;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let printed = whet_ok(&["bench", "preference", "--quick", "--out", s(&out)]);
    assert!(printed.contains(&format!("| round | {} |", ARMS.join(" | "))), "{printed}");
    assert!(printed.contains("| 1 |") && printed.contains("AUC") && printed.contains("pass@N"), "{printed}");
    let arms: Vec<serde_json::Value> = std::fs::read_to_string(out.join("arms.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(arms.len(), ARMS.len());
    let accuracy = |a: &serde_json::Value| -> Vec<f64> {
        a["accuracy"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    assert!(arms.iter().all(|a| accuracy(a).len() == 2 && accuracy(a).iter().all(|v| (0.0..=1.0).contains(v))));
    assert!(arms.iter().all(|a| accuracy(a)[0] == accuracy(&arms[0])[0]), "every arm starts from the same model");
    let seed = out.join("seed-0");
    assert!(seed.join("rm/reward_head.safetensors").is_file());
    // The reward-model arm keeps samples by the reward model and checks held-out answers with the verifier.
    let kept = whetstone::datasets::Manifest::read_beside(&seed.join("sft-rm/round-1/reward/scored.parquet")).unwrap();
    assert!(kept.parameters["reward"].as_str().unwrap().starts_with("rm:"), "{}", kept.parameters);
    let eval = whetstone::datasets::Manifest::read_beside(&seed.join("sft-rm/round-1/eval/scored.parquet")).unwrap();
    assert_eq!(eval.parameters["reward"], "gsm8k");
    let rm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seed.join("rm-result.json")).unwrap()).unwrap();
    let pass_at_n = rm["best_of_n"]["verifier (pass@N)"].as_f64().unwrap();
    for (pick, v) in rm["best_of_n"].as_object().unwrap() {
        assert!(v.as_f64().unwrap() <= pass_at_n, "{pick} picks no better than the verifier's pass@N: {rm}");
    }

    // Again: read back, the same table.
    let again = whet_ok(&["bench", "preference", "--quick", "--out", s(&out)]);
    let table = |t: &str| t.lines().filter(|l| l.starts_with('|')).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(table(&printed), table(&again));
}

#[test]
fn whet_bench_order_quick_trains_every_order_on_the_same_rows_and_reads_results_back() {
    use whetstone::selfimprove::bench::order::{read_report, ORDERS};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let printed = whet_ok(&["bench", "order", "--quick", "--out", s(&out)]);
    for order in ORDERS {
        assert!(printed.contains(&format!("| {order} |")), "{order}: {printed}");
    }
    assert!(printed.contains("The noise, two random orders"), "{printed}");
    let report = read_report(&out).unwrap();
    assert_eq!(report.results.len(), ORDERS.len());
    for r in &report.results {
        assert!((0.0..=1.0).contains(&r.macro_accuracy) && r.final_loss.is_finite(), "{r:?}");
        let adaptive = r.order == "easy-to-hard" || r.order == "skill-it";
        assert_eq!(r.re_orderings > 0, adaptive, "{r:?}");
    }
    assert!(out.join("seed-0/skill-it/order.jsonl").is_file(), "the re-orderings are kept");
    let random = |name: &str| report.results.iter().find(|r| r.order == name).unwrap().final_loss;
    assert_ne!(random("random"), random("random-2"), "two shuffles of the same rows");
    let noise = (report.results[1].macro_accuracy - report.results[0].macro_accuracy).abs();
    assert!((report.noise - noise).abs() < 1e-12);
    let again = whet_ok(&["bench", "order", "--quick", "--out", s(&out)]);
    let table = |t: &str| t.lines().filter(|l| l.starts_with('|')).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(table(&printed), table(&again), "results are read back");
}
