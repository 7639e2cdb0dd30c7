use std::path::PathBuf;

use anyhow::bail;
use anyhow::Result;
use comfy_table::Cell;
use whetstone::selfimprove::rounds::demo::{self, DemoEvent, DemoModel};

use super::rounds::show;
use crate::progress::Bar;
use crate::table::{num, pct, table};

/// The whole loop on a synthetic task: 2-digit sums, rounds of reward-filtered self-training and the same
/// rounds without the filter (a control), on a tiny model pre-trained from scratch (minutes) or on a real
/// pretrained chat model such as SmolLM2-135M-Instruct (rejection sampling with LoRA, about 45 minutes).
#[derive(clap::Args)]
pub struct Args {
    /// Where everything goes (kept between runs: finished parts are skipped); by default out/demo-rounds
    /// (tiny) or out/demo-NAME.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A short version (a few minutes): fewer problems, steps and rounds; too short to learn much.
    #[arg(long)]
    quick: bool,
    /// `tiny` (made here), `smollm2` (the GGUF that scripts/fetch-smollm2.sh puts in .cache/models), or a
    /// chat model's .gguf file or folder.
    #[arg(long, default_value = "tiny")]
    model: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Where scripts/fetch-smollm2.sh puts SmolLM2-135M-Instruct.
const SMOLLM2: &str = ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The demo's model, and the name of its default folder (out/demo-NAME).
fn model_of(name: &str) -> Result<(DemoModel, String)> {
    let path = match name {
        "tiny" => return Ok((DemoModel::Tiny, "rounds".into())),
        "smollm2" => PathBuf::from(SMOLLM2),
        path => PathBuf::from(path),
    };
    if !path.exists() {
        let hint = if name == "smollm2" {
            " (run scripts/fetch-smollm2.sh, and the demo, from the repository's root)"
        } else {
            " (give tiny, smollm2, a chat model's .gguf file or its Hugging Face folder)"
        };
        bail!("demo model {}: no such file or folder{hint}", path.display());
    }
    let short =
        if name == "smollm2" { name.into() } else { path.file_stem().unwrap_or_default().to_string_lossy().into() };
    Ok((DemoModel::Pretrained(path), short))
}

pub fn run(a: Args) -> Result<()> {
    let (model, short) = model_of(&a.model)?;
    let out = a.out.unwrap_or_else(|| PathBuf::from(format!("out/demo-{short}")));
    let size = model.size(a.quick);
    let bar = Bar::steps("");
    let report = demo::run(&out, &model, &size, a.seed, &mut |e| match e {
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
    outln!(
        "report: {} · chart: {} · rounds: {}, {}",
        out.join("demo.md").display(),
        out.join("demo.svg").display(),
        out.join("filtered/report.md").display(),
        out.join("control/report.md").display()
    );
    Ok(())
}
