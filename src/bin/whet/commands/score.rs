use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::datasets::{count_rows, run_stage, Done};
use whetstone::selfimprove::engine::generate::{Counter, OnEngine, ScoreStep};

use crate::args::{EngineArgs, ReadArgs};
use crate::progress::Bar;
use crate::table::{drops, num, table};

/// Score each row's response under a model: per-token natural-log probabilities given the prompt,
/// log-likelihood, mean log-prob and perplexity (the response is scored with the end-of-sequence token).
#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model folder.
    model: PathBuf,
    /// Rows with a prompt (or messages) and a response.
    input: PathBuf,
    output: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let read = a.read.options()?;
    let engine = a.engine.load(&a.model)?;
    let counter = Arc::new(Counter::default());
    let bar = Bar::samples("scoring", count_rows(&a.input, &read)?);
    bar.follow_samples(counter.clone());
    let step = ScoreStep { mode: a.engine.mode };
    let done =
        run_stage(&OnEngine { step: &step, engine: &engine, counter: &counter }, &a.input, &a.output, read, |_, _| {});
    bar.finish();
    let Done { manifest: m, results: r } = done?;
    let mut t = table(&["rows scored", "tokens", "median mean log-prob", "median perplexity", "seconds"]);
    t.add_row(vec![
        num(m.rows.rows_out),
        num(r.response_tokens),
        Cell::new(format!("{:.3}", r.median_mean_log_prob.unwrap_or(f64::NAN))),
        Cell::new(format!("{:.1}", r.median_perplexity.unwrap_or(f64::NAN))),
        Cell::new(format!("{:.1}", m.seconds)),
    ]);
    outln!("{t}");
    drops(&m)?;
    Ok(())
}
