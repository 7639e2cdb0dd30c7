use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::selfimprove::keep::{pairs as write_pairs, Keep, KeepResults, KeepStep};

use crate::args::ReadArgs;
use crate::table::{drops, num, table};

/// Keep the samples a reward likes (after `whet reward`): best-of-n, top-k:K per prompt, threshold, or
/// superbatch:SIZE (SuperHF: the best of each SIZE consecutive samples); dropped samples go to
/// OUTPUT.rejected.jsonl with their reason. --pairs writes chosen/rejected pairs for DPO trainers.
#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    output: PathBuf,
    /// all, best-of-n, top-k:K, threshold or superbatch:SIZE.
    #[arg(long, default_value = "best-of-n", value_parser = Keep::parse)]
    by: Keep,
    /// Samples under this reward are dropped (by every filter but `all`).
    #[arg(long, default_value_t = 1.0)]
    min_reward: f64,
    /// Also write, per prompt, the best sample (chosen) and the worst (rejected) as JSONL.
    #[arg(long, value_name = "PAIRS.jsonl")]
    pairs: Option<PathBuf>,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let step = KeepStep { keep: a.by, min_reward: a.min_reward };
    let m = step.run(&a.input, &a.output, a.read.options()?)?;
    let r: KeepResults = m.results()?;
    let mut t = table(&["samples", "kept", "prompts", "prompts kept", "mean reward", "mean reward kept"]);
    t.add_row(vec![
        num(r.samples),
        num(r.kept),
        num(r.prompts),
        num(r.prompts_with_a_kept_sample),
        Cell::new(format!("{:.3}", r.mean_reward_all)),
        Cell::new(format!("{:.3}", r.mean_reward_kept)),
    ]);
    outln!("{t}");
    drops(&m)?;
    if let Some(path) = a.pairs {
        let (written, without) = write_pairs(&a.input, &path, a.read.options()?)?;
        outln!("{written} chosen/rejected pairs in {} ({without} prompts without two rewards)", path.display());
    }
    Ok(())
}
