use std::path::PathBuf;

use anyhow::Result;
use whetstone::curation::pipeline::{DecontamStep, Step};

use crate::args::ReadArgs;
use crate::progress::Bar;
use crate::table::drops;

/// Drop rows that share a word n-gram with an evaluation set (e.g. GSM8K test against GSM8K train).
#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    output: PathBuf,
    /// Evaluation set(s): file, directory or glob; repeat for several.
    #[arg(long = "eval", required = true)]
    eval: Vec<PathBuf>,
    /// n-gram length in words.
    #[arg(long, default_value_t = DecontamStep::default().n)]
    n: usize,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let bar = Bar::bytes("decontaminating");
    let step = Step::Decontam(DecontamStep { eval: a.eval, n: a.n });
    let m = step.run(&a.input, &a.output, a.read.options()?, 0, |p| bar.follow_bytes(p))?;
    bar.finish();
    drops(&m)?;
    Ok(())
}
