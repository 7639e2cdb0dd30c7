use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::datasets::{count_rows, run_stage, Done};
use whetstone::notebook::thousands;
use whetstone::selfimprove::engine::generate::{Counter, GenerateStep, OnEngine};
use whetstone::selfimprove::Sampling;

use crate::args::{EngineArgs, ReadArgs};
use crate::progress::Bar;
use crate::table::{drops, num, table};

/// Generate N samples per prompt with a model (mistral.rs): one output row per sample, with the prompt's
/// id, the sample's index, token counts, finish reason, log-likelihood, generator and sampling parameters.
///
/// Samples are drawn by whetstone from a stream per (seed, prompt id, sample): the same seed gives the
/// same samples, however the prompts are batched.
#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model folder (config.json, tokenizer.json, *.safetensors), e.g. from `whet model tiny`.
    model: PathBuf,
    /// Prompts: file, directory or glob (the `prompt` column, or the conversation in `messages`).
    input: PathBuf,
    output: PathBuf,
    /// Samples per prompt.
    #[arg(short = 'n', long, default_value_t = Sampling::default().n)]
    n: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = Sampling::default().temperature)]
    temperature: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = Sampling::default().top_p)]
    top_p: f32,
    /// New tokens per sample at most (fewer when the context fills up).
    #[arg(long, default_value_t = Sampling::default().max_tokens)]
    max_tokens: usize,
    /// A string that ends a sample (repeat for several); the model's end-of-sequence token always does.
    #[arg(long = "stop", value_name = "STRING")]
    stop: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let sampling = Sampling {
        n: a.n,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        max_tokens: a.max_tokens,
        stop: a.stop,
        seed: a.seed,
    };
    sampling.check()?;
    let read = a.read.options()?;
    let engine = a.engine.load(&a.model)?;
    let step = GenerateStep { sampling, mode: a.engine.mode };
    let counter = Arc::new(Counter::default());
    let bar = Bar::samples("generating", count_rows(&a.input, &read)? * step.sampling.n as u64);
    bar.follow_samples(counter.clone());
    let done =
        run_stage(&OnEngine { step: &step, engine: &engine, counter: &counter }, &a.input, &a.output, read, |_, _| {});
    bar.finish();
    let Done { manifest: m, results: r } = done?;
    let mut t = table(&["prompts", "samples", "all distinct", "new tokens", "tokens/s", "finish", "seconds"]);
    let finish: Vec<String> = r.finish_reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    t.add_row(vec![
        num(r.prompts),
        num(r.samples),
        Cell::new(format!("{} of {} prompts", thousands(r.prompts_with_all_samples_distinct), thousands(r.prompts))),
        num(r.response_tokens),
        Cell::new(format!("{:.0}", r.response_tokens_per_second)),
        Cell::new(finish.join(", ")),
        Cell::new(format!("{:.1}", r.seconds)),
    ]);
    outln!("{t}");
    drops(&m)?;
    Ok(())
}
