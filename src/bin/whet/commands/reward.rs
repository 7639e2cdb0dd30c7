use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::selfimprove::reward::stage::{RewardResults, RewardSpec, RewardStep};

use crate::args::ReadArgs;
use crate::table::{drops, num, table};

/// Score each row's response with verifiers: adds `reward` (the weighted sum) and `reward_reason`.
///
/// The response is checked against the row's `reference` column (what `whet generate` writes: the prompt
/// row's own answer).
#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    output: PathBuf,
    /// A reward: gsm8k (the final number), exact, exact-case, json, regex:PATTERN, or code (Python run
    /// against the row's tests in a sandbox); NAME=WEIGHT weighs it (repeat to combine).
    #[arg(long = "with", value_name = "REWARD", required = true, value_parser = RewardSpec::parse)]
    with: Vec<RewardSpec>,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let step = RewardStep { rewards: a.with };
    let m = step.run(&a.input, &a.output, a.read.options()?)?;
    let r: RewardResults = m.results()?;
    let mut t = table(&["rows", "mean reward", "full reward", "reward"]);
    t.add_row(vec![
        num(r.rows),
        Cell::new(format!("{:.3}", r.mean_reward)),
        num(r.full_reward),
        Cell::new(step.reward_name()?),
    ]);
    outln!("{t}");
    let mut reasons: Vec<(&String, &u64)> = r.reasons.iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(*r.1));
    let mut t = table(&["reason", "rows"]);
    for (reason, n) in reasons.into_iter().take(10) {
        t.add_row(vec![Cell::new(reason), num(*n)]);
    }
    outln!("{t}");
    drops(&m)?;
    Ok(())
}
