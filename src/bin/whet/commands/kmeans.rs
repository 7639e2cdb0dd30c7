use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::curation::pipeline::ClusterStep;

use crate::args::ReadArgs;
use crate::progress::Bar;
use crate::table::{num, table};

/// Cluster the embeddings with k-means (k-means++ seeding); adds a `cluster` column.
#[derive(clap::Args)]
pub struct Args {
    /// A dataset with an `embedding` column (see `whet embed`).
    input: PathBuf,
    output: PathBuf,
    /// Number of clusters.
    #[arg(long)]
    k: usize,
    #[arg(long, default_value_t = ClusterStep::default().max_iter)]
    max_iter: usize,
    /// Stop when the centroids move less than this, relative to the data's variance (0: run max-iter).
    #[arg(long, default_value_t = ClusterStep::default().tol)]
    tol: f64,
    /// Mini-batch k-means with batches of this many rows, reading the dataset in passes (max-iter counts
    /// passes): for datasets larger than memory. Without it, Lloyd's algorithm on every row in memory.
    #[arg(long, value_name = "ROWS")]
    mini_batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let step = ClusterStep {
        k: a.k,
        max_iter: a.max_iter,
        tol: a.tol,
        seed: Some(a.seed),
        mini_batch: a.mini_batch,
        ..Default::default()
    };
    let bar = Bar::bytes(if a.mini_batch.is_some() { "labelling" } else { "reading" });
    let (m, model) = step.run(&a.input, &a.output, a.read.options()?, a.seed, |p| bar.follow_bytes(p))?;
    bar.finish();
    let mut sizes = model.sizes.clone();
    sizes.sort_unstable();
    let mut t =
        table(&["rows", "k", "iterations", "converged", "inertia", "cluster sizes min / median / max", "seconds"]);
    t.add_row(vec![
        num(m.rows.rows_out),
        num(a.k as u64),
        num(model.iterations as u64),
        Cell::new(model.converged),
        Cell::new(format!("{:.2}", model.inertia)),
        Cell::new(format!("{} / {} / {}", sizes[0], sizes[sizes.len() / 2], sizes[sizes.len() - 1])),
        Cell::new(format!("{:.1}", m.seconds)),
    ]);
    outln!("{t}");
    Ok(())
}
