use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::selfimprove::rounds::demo::{self, DemoEvent, DemoSize};

use super::rounds::show;
use crate::progress::Bar;
use crate::table::{num, pct, table};

/// The whole loop on a synthetic task in a few minutes: word problems, a tiny model pre-trained from
/// scratch, rounds of reward-filtered self-training and the same rounds without the filter (a control).
#[derive(clap::Args)]
pub struct Args {
    /// Where everything goes (kept between runs: finished parts are skipped).
    #[arg(long, default_value = "out/demo-rounds")]
    out: PathBuf,
    /// A short version (about a minute): fewer problems, steps and rounds.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    let size = if a.quick { DemoSize::quick() } else { DemoSize::full() };
    let bar = Bar::steps("");
    let report = demo::run(&a.out, &size, a.seed, &mut |e| match e {
        DemoEvent::Part(part) => bar.line(format!("demo · {part}")),
        DemoEvent::Pretrain { metrics, steps } => bar.train_step(Some("pre-training".into()), &metrics, steps),
        DemoEvent::Rounds { control, event } => show(&bar, if control { "control · " } else { "filtered · " }, &event),
    });
    bar.finish();
    let report = report?;
    let mut t = table(&["round", "held-out accuracy, reward-filtered", "control (no filter)"]);
    for (round, f, c) in report.table() {
        t.add_row(vec![num(round as u64), pct(f), c.map_or(Cell::new(""), pct)]);
    }
    outln!("{t}");
    let (first, last) = (report.filtered.rounds.first(), report.filtered.rounds.last());
    if let (Some(a), Some(b)) = (first, last) {
        let control = report.control.rounds.last().map_or(0.0, |m| m.held_out_accuracy);
        outln!(
            "reward-filtered rounds: {:.1}% → {:.1}% ({:+.1} points); control ends at {:.1}% · {:.0} s",
            100.0 * a.held_out_accuracy,
            100.0 * b.held_out_accuracy,
            100.0 * (b.held_out_accuracy - a.held_out_accuracy),
            100.0 * control,
            report.seconds
        );
    }
    let out = &a.out;
    outln!(
        "report: {} · chart: {} · rounds: {}, {}",
        out.join("demo.md").display(),
        out.join("demo.svg").display(),
        out.join("filtered/report.md").display(),
        out.join("control/report.md").display()
    );
    Ok(())
}
