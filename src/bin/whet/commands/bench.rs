use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use comfy_table::Cell;
use whetstone::selfimprove::bench::order::{self, OrderBenchEvent, OrderBenchSize};
use whetstone::selfimprove::bench::preference::{self, PreferenceEvent, PreferenceSize};
use whetstone::selfimprove::bench::selection::{self, BenchEvent, BenchSize, MeanSd};

use crate::progress::Bar;
use crate::table::table;

/// Benchmarks that measure what the stages do to a model.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Does diversity selection pay? Selects the same number of rows from a synthetic multi-skill pool
    /// (imbalanced skills, near-copies) with random, rs2, kmq, kmq-random, iterative, kcenter, dedup+kmq and
    /// by-skill (an even split over the skill labels: the headroom); trains the same tiny model on each subset
    /// the same way; prints macro, worst-skill and rare-skill accuracy over seeds, and each method's difference
    /// from random at the same seed. Writes selection.md, selection.svg and results.parquet.
    Selection {
        /// Where everything goes (kept between runs: finished results are read back).
        #[arg(long, default_value = "out/bench-selection")]
        out: PathBuf,
        /// A short version (about a minute): every row of the table, too small to tell methods apart.
        #[arg(long)]
        quick: bool,
        /// Seeds (default: 3, or 1 with --quick).
        #[arg(long)]
        seeds: Option<usize>,
        /// `minilm` (all-MiniLM-L6-v2: run scripts/fetch-minilm.sh), `hashing`, or a BERT model folder.
        #[arg(long, default_value = "minilm")]
        embedder: String,
    },
    /// Does learning from the rejected samples pay? On the tiny-model demo task: SFT on the verifier's best
    /// samples, SFT + DPO on each round's pairs, SFT on a trained reward model's best samples, and the
    /// unfiltered control, at the same generation budget, over seeds; the reward model's held-out AUC and
    /// best-of-N accuracy by reward model, likelihood, chance and the verifier. Writes preference.md.
    Preference {
        /// Where everything goes (kept between runs: finished parts are read back).
        #[arg(long, default_value = "out/bench-preference")]
        out: PathBuf,
        /// A short version (a few minutes): every row of the tables, too small to tell arms apart.
        #[arg(long)]
        quick: bool,
        /// Seeds (default: 3, or 1 with --quick).
        #[arg(long)]
        seeds: Option<usize>,
        /// DPO's peak learning rate each round (default 5e-4); another value runs the DPO arm again in a
        /// folder of its own and reads the other arms back.
        #[arg(long)]
        dpo_lr: Option<f64>,
        /// DPO's steps each round (default 50).
        #[arg(long)]
        dpo_steps: Option<usize>,
    },
    /// Does the order of the same rows matter? On the selection benchmark's pool: the same randomly drawn rows
    /// and steps, in two random orders (their difference is the noise), easy-to-hard (the model's own loss)
    /// and skill-it (skills weighed by held-out loss); macro and rare-skill accuracy over seeds. Writes order.md.
    Order {
        /// Where everything goes (kept between runs: finished results are read back).
        #[arg(long, default_value = "out/bench-order")]
        out: PathBuf,
        /// A short version (about a minute): every row of the table, too small to tell orders apart.
        #[arg(long)]
        quick: bool,
        /// Seeds (default: 3, or 1 with --quick).
        #[arg(long)]
        seeds: Option<usize>,
    },
}

pub fn run(a: Args) -> Result<()> {
    let (out, quick, seeds, embedder) = match a.command {
        Bench::Selection { out, quick, seeds, embedder } => (out, quick, seeds, embedder),
        Bench::Preference { out, quick, seeds, dpo_lr, dpo_steps } => {
            return run_preference(out, quick, seeds, dpo_lr, dpo_steps)
        }
        Bench::Order { out, quick, seeds } => return run_order(out, quick, seeds),
    };
    let mut size = if quick { BenchSize::quick() } else { BenchSize::full() };
    size.seeds = seeds.unwrap_or(size.seeds);
    let bar = Bar::steps("");
    let report = selection::run(&out, &size, &embedder, &mut |e| match e {
        BenchEvent::Part(part) => {
            bar.reset();
            bar.line(format!("bench selection · {part}"))
        }
        BenchEvent::Train { seed, method, metrics, steps } => {
            bar.train_step(Some(format!("seed {seed} · {method} · training")), &metrics, steps)
        }
        BenchEvent::Result(r) => bar.line(format!(
            "seed {} · {}: macro {:.1}% · worst {:.1}% ({}) · rare {:.1}%",
            r.seed,
            r.method,
            100.0 * r.macro_accuracy,
            100.0 * r.worst_accuracy,
            r.worst_skill,
            100.0 * r.rare_accuracy
        )),
    });
    bar.finish();
    let report = report?;
    let spread = |m: MeanSd| Cell::new(format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.sd));
    let points = |m: MeanSd| Cell::new(format!("{:+.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.sd));
    let mut t = table(&[
        "method",
        "macro accuracy (%)",
        "worst skill (%)",
        "rare skills (%)",
        "macro vs random (pts)",
        "rare vs random (pts)",
    ]);
    for m in &report.summary {
        t.add_row(vec![
            Cell::new(&m.method),
            spread(m.macro_accuracy),
            spread(m.worst_accuracy),
            spread(m.rare_accuracy),
            points(m.macro_vs_random),
            points(m.rare_vs_random),
        ]);
    }
    outln!("{t}");
    outln!(
        "mean ± sd over {} seed(s); vs random: the difference at the same seed · {} rows selected of {} · {:.0} s · \
         report: {} · chart: {} · raw: {}",
        report.size.seeds,
        (report.size.pool as f64 * report.size.budget).round(),
        report.size.pool,
        report.seconds,
        out.join("selection.md").display(),
        out.join("selection.svg").display(),
        out.join("results.parquet").display()
    );
    Ok(())
}

fn run_preference(
    out: PathBuf,
    quick: bool,
    seeds: Option<usize>,
    dpo_lr: Option<f64>,
    dpo_steps: Option<usize>,
) -> Result<()> {
    let mut size = if quick { PreferenceSize::quick() } else { PreferenceSize::full() };
    size.seeds = seeds.unwrap_or(size.seeds);
    size.dpo_lr = dpo_lr.unwrap_or(size.dpo_lr);
    size.dpo_steps = dpo_steps.unwrap_or(size.dpo_steps);
    let bar = Bar::steps("");
    let report = preference::run(&out, &size, &mut |e| match e {
        PreferenceEvent::Part(part) => {
            bar.reset();
            bar.line(format!("bench preference · {part}"))
        }
        PreferenceEvent::Train { label, metrics, steps } => bar.train_step(Some(label), metrics, steps),
        PreferenceEvent::RewardModel(m) => bar.line(format!(
            "seed {} · reward model: held-out AUC {:.3} on {} pairs; best-of-N {:.1}% (verifier {:.1}%)",
            m.seed,
            m.auc,
            m.held_out_pairs,
            100.0 * m.best_of_n["reward model"],
            100.0 * m.best_of_n["verifier (pass@N)"]
        )),
        PreferenceEvent::Arm(a) => bar.line(format!(
            "seed {} · {}: held-out accuracy {}",
            a.seed,
            a.arm,
            a.accuracy.iter().map(|v| format!("{:.1}%", 100.0 * v)).collect::<Vec<_>>().join(" → ")
        )),
    });
    bar.finish();
    let report = report?;
    let summary = std::fs::read_to_string(report.out.join("preference.md"))?;
    outln!("{summary}");
    Ok(())
}

fn run_order(out: PathBuf, quick: bool, seeds: Option<usize>) -> Result<()> {
    let mut size = if quick { OrderBenchSize::quick() } else { OrderBenchSize::full() };
    size.seeds = seeds.unwrap_or(size.seeds);
    let bar = Bar::steps("");
    let report = order::run(&out, &size, &mut |e| match e {
        OrderBenchEvent::Part(part) => {
            bar.reset();
            bar.line(format!("bench order · {part}"))
        }
        OrderBenchEvent::Train { seed, order, metrics, steps } => {
            bar.train_step(Some(format!("seed {seed} · {order} · training")), metrics, steps)
        }
        OrderBenchEvent::Result(r) => bar.line(format!(
            "seed {} · {}: macro {:.1}% · rare {:.1}% · {} re-orderings",
            r.seed,
            r.order,
            100.0 * r.macro_accuracy,
            100.0 * r.rare_accuracy,
            r.re_orderings
        )),
    });
    bar.finish();
    let report = report?;
    outln!("{}", std::fs::read_to_string(report.out.join("order.md"))?);
    Ok(())
}
