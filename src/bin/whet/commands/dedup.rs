use std::path::PathBuf;

use anyhow::Result;
use whetstone::curation::dedup::semantic::SemanticIndex;
use whetstone::curation::pipeline::{DedupMethod, DedupStep, Step};

use crate::args::{one_of, ReadArgs};
use crate::progress::Bar;
use crate::table::drops;

/// Drop duplicates: exact (normalised text), near (MinHash LSH) or semantic (embeddings); each dropped
/// row names the kept row it duplicates (dup_of) in OUT.rejected.jsonl. Near and semantic duplicates form
/// clusters (rows linked through others count too); each cluster keeps one row.
#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    output: PathBuf,
    /// exact; minhash (near duplicates by word-shingle Jaccard similarity); or semantic (embedding
    /// cosine similarity through an HNSW index; needs an `embedding` column).
    #[arg(long, default_value = "exact", value_parser = one_of::<DedupMethod>(&DedupMethod::NAMES))]
    method: DedupMethod,
    /// Similarity at which rows are duplicates: Jaccard for minhash (default 0.8), cosine for semantic
    /// (default 0.95).
    #[arg(long)]
    threshold: Option<f64>,
    /// minhash: words per shingle.
    #[arg(long, default_value_t = DedupStep::default().shingle)]
    shingle: usize,
    /// minhash: LSH bands, and permutations per band (default: the split of 128 permutations whose
    /// threshold is nearest --threshold; datatrove's default is 14 bands of 8).
    #[arg(long, requires = "rows")]
    bands: Option<usize>,
    #[arg(long, requires = "bands")]
    rows: Option<usize>,
    /// semantic: `clusters` compares rows inside k-means clusters (SemDeDup's way; each row also searches
    /// its next-nearest cluster); `hnsw` searches an HNSW graph (hnsw_rs).
    #[arg(long, default_value = "clusters", value_parser = one_of::<SemanticIndex>(&SemanticIndex::NAMES))]
    index: SemanticIndex,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let step = Step::Dedup(DedupStep {
        method: a.method,
        threshold: a.threshold,
        shingle: a.shingle,
        bands: a.bands,
        rows: a.rows,
        index: a.index,
        seed: Some(a.seed),
        ..Default::default()
    });
    let bar = Bar::bytes("deduplicating");
    let m = step.run(&a.input, &a.output, a.read.options()?, a.seed, |p| bar.follow_bytes(p))?;
    bar.finish();
    drops(&m)?;
    Ok(())
}
