use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::curation::embed::{embed_dataset, Precision, TextField};
use whetstone::curation::pipeline::EmbedStep;

use crate::args::{one_of, ReadArgs};
use crate::progress::Bar;
use crate::table::{num, table};

/// Add an `embedding` column: a real sentence-embedding model, or fast TF-IDF feature hashing.
#[derive(clap::Args)]
pub struct Args {
    /// File, directory or glob.
    input: PathBuf,
    /// Output file (.parquet keeps the embeddings as FixedSizeList<Float32, d>).
    output: PathBuf,
    /// `hashing` (model-free: word and character n-grams, TF-IDF, hashed), `minilm` (all-MiniLM-L6-v2,
    /// from $WHETSTONE_MINILM or .cache/models/all-MiniLM-L6-v2: run scripts/fetch-minilm.sh), or the
    /// path of a BERT model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, default_value = "hashing")]
    embedder: String,
    /// Which text to embed: prompt, response or both.
    #[arg(long, default_value = "prompt", value_parser = one_of::<TextField>(&TextField::NAMES))]
    text: TextField,
    /// Dimension of the hashing embedder.
    #[arg(long, default_value_t = EmbedStep::default().dim)]
    dim: usize,
    /// Precision of a BERT embedder's products: f32, or bf16 (values rounded to bfloat16: faster, on processors
    /// with AVX512-BF16 only; cosine to f32's embeddings a little below 1).
    #[arg(long, default_value = "f32", value_parser = one_of::<Precision>(&Precision::NAMES))]
    precision: Precision,
    /// Seed of the hashing embedder's hash functions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let step = EmbedStep { embedder: a.embedder, text: a.text, dim: a.dim, seed: Some(a.seed), precision: a.precision };
    let read = a.read.options()?;
    let embedder = step.embedder(&a.input, &read, a.seed)?;
    let bar = Bar::rows("embedding");
    let m = embed_dataset(&a.input, &a.output, embedder.as_ref(), step.text, read, |_, rows| bar.follow_rows(rows))?;
    bar.finish();
    let mut t = table(&["rows", "embedder", "dim", "output", "seconds", "rows/s"]);
    t.add_row(vec![
        num(m.rows.rows_out),
        Cell::new(embedder.name()),
        num(embedder.dim() as u64),
        Cell::new(m.output.path.display()),
        Cell::new(format!("{:.1}", m.seconds)),
        Cell::new(format!("{:.0}", m.rows.rows_out as f64 / m.seconds.max(1e-9))),
    ]);
    outln!("{t}");
    Ok(())
}
