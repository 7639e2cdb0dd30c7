//! Orders: skill-it and easy-to-hard runs resume byte for byte, re-order when they should and log it; the
//! `order` stage writes every row once, hardest last; settings that cannot work are refused.

use std::path::{Path, PathBuf};

use arrow::array::Array;

use whetstone_datasets::{read_all, run_stage, ReadOptions};

/// A dataset's rows in one batch.
fn table(path: &Path) -> arrow::array::RecordBatch {
    let (batches, reader) = read_all(path, ReadOptions::default()).unwrap();
    arrow::compute::concat_batches(&reader.schema(), &batches).unwrap()
}
use whetstone_selfimprove::prompt::PromptMode;
use whetstone_selfimprove::train::order::{Order, OrderStage, OrderUpdate, ORDER_LOSS};
use whetstone_selfimprove::train::schedule::{Schedule, Shape};
use whetstone_selfimprove::train::{train, LoraConfig, Objective, TrainConfig, ORDER_LOG};
use whetstone_selfimprove::{make_tiny_model, Error, TinyLlama};

/// Rows of two skills: sums (easy, short) and reversed words (harder), labelled in `source`.
fn rows(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            let (prompt, response, skill) = if i % 3 == 0 {
                let w: String = ["stone", "river", "candle", "arrow"][i % 4].into();
                (format!("Reverse {w} {i}."), format!("{} {i}", w.chars().rev().collect::<String>()), "reverse")
            } else {
                (format!("What is {i} plus {i}?"), format!("It is {}.", 2 * i), "sum")
            };
            format!("{{\"id\": \"r{i}\", \"prompt\": \"{prompt}\", \"response\": \"{response}\", \"source\": \"{skill}\"}}\n")
        })
        .collect()
}

fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (train_set, eval) = (dir.join("train.jsonl"), dir.join("eval.jsonl"));
    std::fs::write(&train_set, rows(0..120)).unwrap();
    std::fs::write(&eval, rows(200..230)).unwrap();
    let base = dir.join("tiny");
    make_tiny_model(
        &base,
        std::slice::from_ref(&train_set),
        &TinyLlama { vocab: 320, context: 64, ..Default::default() },
    )
    .unwrap();
    (base, train_set, eval)
}

fn config(dir: &Path, base: &Path, data: &Path, eval: &Path, out: &str, order: Order) -> TrainConfig {
    TrainConfig {
        base: base.into(),
        data: data.into(),
        eval: Some(eval.into()),
        out: dir.join(out),
        lora: LoraConfig { r: 4, alpha: 8.0, dropout: 0.1, ..Default::default() },
        schedule: Schedule { lr: 1e-2, warmup: 2, floor: 0.1, shape: Shape::Cosine, ..Default::default() },
        batch: 2,
        steps: Some(12),
        cpu: true,
        order,
        skill_column: (order == Order::SkillIt).then(|| "source".into()),
        order_every: 3,
        ..Default::default()
    }
}

fn updates(out: &Path) -> Vec<OrderUpdate> {
    std::fs::read_to_string(out.join(ORDER_LOG)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn adaptive_orders_resume_byte_for_byte_and_log_each_re_ordering() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, eval) = setup(dir.path());
    for order in [Order::SkillIt, Order::EasyToHard] {
        let name = order.name();
        let whole = config(dir.path(), &base, &train_set, &eval, &format!("{name}-whole"), order);
        let report = train(&whole, &mut |_, _| true).unwrap();
        assert_eq!(report.order, order);
        let log = updates(&whole.out);
        assert_eq!(report.order_updates, log.len());
        match order {
            Order::SkillIt => {
                assert_eq!(log.iter().map(|u| u.step).collect::<Vec<_>>(), [0, 3, 6, 9], "every 3 steps");
                for u in &log {
                    let names: Vec<&str> = u.skills.iter().map(|s| s.skill.as_str()).collect();
                    assert_eq!(names, ["reverse", "sum"]);
                    assert!((u.skills.iter().map(|s| s.weight).sum::<f64>() - 1.0).abs() < 1e-9, "{u:?}");
                    assert!(u.skills.iter().all(|s| s.held_out_loss.is_finite() && s.held_out_loss > 0.0));
                }
                // The first update has one measurement: weight ∝ examples left × exp(η × held-out loss).
                let first = &log[0].skills;
                let raw: Vec<f64> = first.iter().map(|s| s.left as f64 * (0.5 * s.held_out_loss).exp()).collect();
                let expected = raw[0] / (raw[0] + raw[1]);
                assert!((first[0].weight - expected).abs() < 1e-9, "{first:?}");
            }
            _ => {
                assert!(log.iter().all(|u| u.losses.is_some_and(|[lo, mid, hi]| lo <= mid && mid <= hi)));
                assert_eq!(log[0].ordered, 120, "the first re-ordering sees the whole epoch");
            }
        }

        let mut broken = config(dir.path(), &base, &train_set, &eval, &format!("{name}-broken"), order);
        broken.checkpoint_every = 4;
        let e = train(&broken, &mut |m, _| m.step < 6).unwrap_err();
        assert!(matches!(e, Error::Stopped(_)), "{e}");
        let report = train(&broken, &mut |_, _| true).unwrap();
        assert_eq!(report.resumed_at, 4);
        let read = |p: &Path| std::fs::read(p.join("adapter_model.safetensors")).unwrap();
        assert!(read(&whole.out) == read(&broken.out), "{name}: the weights differ after resuming");
        // The logs too, but for the clock's readings.
        for file in ["metrics.jsonl", ORDER_LOG] {
            let untimed = |p: &Path| -> Vec<serde_json::Value> {
                let text = std::fs::read_to_string(p.join(file)).unwrap();
                text.lines()
                    .map(|l| {
                        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                        for key in ["seconds", "tokens_per_s"] {
                            v.as_object_mut().unwrap().remove(key);
                        }
                        v
                    })
                    .collect()
            };
            assert_eq!(untimed(&whole.out), untimed(&broken.out), "{name}: {file} differs after resuming");
        }
        let random = config(dir.path(), &base, &train_set, &eval, &format!("{name}-random"), Order::Random);
        train(&random, &mut |_, _| true).unwrap();
        let read = |p: &Path| std::fs::read(p.join("adapter_model.safetensors")).unwrap();
        assert!(read(&whole.out) != read(&random.out), "{name}: the order changes what is learned");
        assert!(!random.out.join(ORDER_LOG).exists());
    }

    let refused = |change: &dyn Fn(&mut TrainConfig)| {
        let mut c = config(dir.path(), &base, &train_set, &eval, "refused", Order::SkillIt);
        change(&mut c);
        train(&c, &mut |_, _| true).unwrap_err().to_string()
    };
    assert!(refused(&|c| c.skill_column = None).contains("skill_column"));
    assert!(refused(&|c| c.eval = None).contains("held-out"));
    assert!(refused(&|c| c.objective = Objective::Dpo).contains("only SFT"));
    let e = refused(&|c| c.skill_column = Some("skill".into()));
    assert!(e.contains("no column \"skill\"") && e.contains("train.jsonl") && e.contains("source"), "{e}");
    let lopsided = dir.path().join("lopsided.jsonl");
    std::fs::write(&lopsided, rows(202..204)).unwrap();
    let e = refused(&|c| c.eval = Some(lopsided.clone()));
    assert!(e.contains("\"reverse\" has training rows but no held-out rows"), "{e}");
}

#[test]
fn the_order_stage_writes_each_row_once_lowest_loss_first_and_a_seeded_shuffle() {
    let dir = tempfile::tempdir().unwrap();
    let (base, train_set, _) = setup(dir.path());
    // A row without a response cannot be measured: it goes last.
    let input = dir.path().join("in.jsonl");
    let text = std::fs::read_to_string(&train_set).unwrap()
        + "{\"id\": \"empty\", \"prompt\": \"Say nothing.\", \"response\": \"\"}\n";
    std::fs::write(&input, text).unwrap();
    let stage =
        |by: Order, seed: u64| OrderStage { by, model: Some(base.clone()), seed, mode: PromptMode::Chat, batch: 8 };
    let out = dir.path().join("hard-last.parquet");
    let done = run_stage(&stage(Order::EasyToHard, 0), &input, &out, ReadOptions::default(), |_, _| {}).unwrap();
    assert_eq!((done.results.rows, done.results.measured, done.results.unmeasured), (121, 120, 1));
    assert_eq!(done.manifest.rows.rows_out, 121);
    let batch = table(&out);
    let losses =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(batch.column_by_name(ORDER_LOSS).unwrap())
            .clone();
    let values: Vec<f64> = (0..120).map(|i| losses.value(i)).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "lowest loss first");
    assert!(losses.is_null(120), "the unmeasured row goes last");
    let ids = |b: &arrow::array::RecordBatch| -> Vec<String> {
        let c = arrow::array::AsArray::as_string::<i32>(b.column_by_name("id").unwrap());
        c.iter().map(|v| v.unwrap().to_string()).collect()
    };
    let mut sorted = ids(&batch);
    assert_eq!(sorted[120], "empty");
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 121, "every row once");

    let shuffle = |seed: u64, name: &str| {
        let out = dir.path().join(name);
        run_stage(&stage(Order::Random, seed), &input, &out, ReadOptions::default(), |_, _| {}).unwrap();
        ids(&table(&out))
    };
    let (a, b, c) = (shuffle(1, "a.jsonl"), shuffle(1, "b.jsonl"), shuffle(2, "c.jsonl"));
    assert_eq!(a, b, "the seed fixes the shuffle");
    assert_ne!(a, c);
    let e =
        run_stage(&stage(Order::SkillIt, 0), &input, &dir.path().join("x.jsonl"), ReadOptions::default(), |_, _| {})
            .unwrap_err()
            .to_string();
    assert!(e.contains("whet train --order skill-it"), "{e}");
}
