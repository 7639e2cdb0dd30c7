use std::path::PathBuf;

use anyhow::Result;
use whetstone::curation::filters::special_tokens::SpecialTokenMode;
use whetstone::curation::filters::FilterResults;
use whetstone::curation::pipeline::{FilterStep, Step};
use whetstone::notebook::thousands;

use crate::args::{one_of, ReadArgs};
use crate::progress::Bar;
use crate::table::drops;

/// Drop rows that fail heuristic quality filters; every dropped row is written with its reason.
#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    output: PathBuf,
    #[arg(long, default_value_t = FilterStep::default().min_prompt)]
    min_prompt: usize,
    #[arg(long, default_value_t = FilterStep::default().max_prompt)]
    max_prompt: usize,
    #[arg(long, default_value_t = FilterStep::default().min_response)]
    min_response: usize,
    #[arg(long, default_value_t = FilterStep::default().max_response)]
    max_response: usize,
    /// Largest share of repeated word 3-grams in a prompt or response.
    #[arg(long, default_value_t = FilterStep::default().max_repeated)]
    max_repeated: f64,
    /// Largest share of characters that are neither letters, digits nor whitespace.
    #[arg(long, default_value_t = FilterStep::default().max_symbols)]
    max_symbols: f64,
    /// Keep empty and refused responses.
    #[arg(long)]
    keep_refusals: bool,
    /// Special-token strings in the texts (`<|endoftext|>`, `<|im_end|>`, `[INST]`, …): keep them, strip them
    /// from the start and end of every text (a row holding one inside a text is rejected), or reject every
    /// row that holds one.
    #[arg(long, default_value = "keep", value_parser = one_of::<SpecialTokenMode>(&SpecialTokenMode::NAMES))]
    special_tokens: SpecialTokenMode,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let step = Step::Filter(FilterStep {
        min_prompt: a.min_prompt,
        max_prompt: a.max_prompt,
        min_response: a.min_response,
        max_response: a.max_response,
        max_repeated: a.max_repeated,
        max_symbols: a.max_symbols,
        keep_refusals: a.keep_refusals,
        special_tokens: a.special_tokens,
    });
    let bar = Bar::bytes("filtering");
    let m = step.run(&a.input, &a.output, a.read.options()?, 0, |p| bar.follow_bytes(p))?;
    bar.finish();
    drops(&m)?;
    let stripped = m.results::<FilterResults>()?.special_tokens_stripped;
    if stripped.rows > 0 {
        let strings: Vec<String> = stripped.strings.iter().map(|(s, n)| format!("{s} ×{}", thousands(*n))).collect();
        outln!("stripped from {} rows: {}", thousands(stripped.rows), strings.join(", "));
    }
    Ok(())
}
