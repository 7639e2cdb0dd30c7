use std::path::PathBuf;

use anyhow::{Context, Result};
use comfy_table::Cell;
use whetstone::selfimprove::reward::judge::{JudgeResults, JudgeStep};

use crate::args::{EngineArgs, ReadArgs};
use crate::table::{drops, num, table};

/// LLM-as-judge: a model scores each row's response (given its prompt and reference) through a prompt
/// template; adds `reward` (the score mapped onto 0–1) and `reward_reason` (the judge's reply).
#[derive(clap::Args)]
pub struct Args {
    /// The judge: a Hugging Face model folder.
    model: PathBuf,
    input: PathBuf,
    output: PathBuf,
    /// A template file with {prompt}, {response} and {reference}; the default asks for 1–10.
    #[arg(long)]
    template: Option<PathBuf>,
    /// The lowest and highest score the template asks for.
    #[arg(long, value_delimiter = ',', value_name = "LOW,HIGH", default_values_t = [1.0, 10.0])]
    scale: Vec<f64>,
    /// New tokens of the judge's reply.
    #[arg(long, default_value_t = 8)]
    max_tokens: usize,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let [low, high] = a.scale[..] else { anyhow::bail!("--scale takes two numbers, LOW,HIGH (e.g. 1,10)") };
    let mut step =
        JudgeStep { scale: (low, high), max_tokens: a.max_tokens, mode: a.engine.mode, ..Default::default() };
    if let Some(path) = &a.template {
        step.template = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read it", path.display()))?;
    }
    let read = a.read.options()?;
    let engine = a.engine.load(&a.model)?;
    let m = step.run(&engine, &a.input, &a.output, read)?;
    let r: JudgeResults = m.results()?;
    let mut t = table(&["rows scored", "rows without a score", "mean reward (scored)", "seconds"]);
    t.add_row(vec![
        num(r.rows_scored),
        num(r.rows_without_a_score),
        Cell::new(format!("{:.3}", r.mean_reward_scored)),
        Cell::new(format!("{:.1}", m.seconds)),
    ]);
    outln!("{t}");
    drops(&m)?;
    Ok(())
}
