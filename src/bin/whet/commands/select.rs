use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::curation::pipeline::SelectStep;
use whetstone::curation::select::{select_dataset, Budget, Method, WeightUpdate};
use whetstone::datasets;

use crate::args::{one_of, ReadArgs};
use crate::progress::Bar;
use crate::table::{num, table};

/// Select a diverse subset under a budget; prints coverage metrics and writes the chosen rows.
#[derive(clap::Args)]
pub struct Args {
    /// A dataset with an `embedding` column (see `whet embed`).
    input: PathBuf,
    output: PathBuf,
    /// random (baseline), rs2 (a fresh random slice per --round), kmq (cluster-balanced, Diversify and
    /// Conquer), kcenter (farthest point) or deita (by --score, skipping near copies).
    #[arg(long, value_parser = one_of::<Method>(&Method::NAMES))]
    method: Method,
    /// A count (e.g. 200) or a fraction of the rows (e.g. 0.005).
    #[arg(long, value_parser = Budget::parse)]
    budget: Budget,
    /// kmq: cluster with this k (default: the dataset's `cluster` column, else one cluster per row of budget).
    #[arg(long)]
    k: Option<usize>,
    /// A column whose values the selection should cover, e.g. `source`: reported in the metrics.
    #[arg(long)]
    label: Option<String>,
    /// kmq without a quality column: draw rows at random inside each cluster (the paper's code) instead
    /// of taking the rows nearest the cluster's centre.
    #[arg(long)]
    kmq_random: bool,
    /// kmq: 0 takes each cluster's most central rows; above 0 draws rows favouring the centre,
    /// with probability ∝ exp(cos / T).
    #[arg(long, default_value_t = SelectStep::default().kmq_temperature)]
    kmq_temperature: f32,
    /// rs2: the round whose slice to take.
    #[arg(long, default_value_t = 0)]
    round: usize,
    /// deita: the score column (default `quality`); iterative: last round's per-row score (default
    /// `reward`, e.g. the gold answer's reward minus the model's).
    #[arg(long)]
    score: Option<String>,
    /// iterative: the previous round's select manifest, whose cluster weights this round updates.
    #[arg(long)]
    weights_from: Option<PathBuf>,
    /// iterative: paper (w ← w·s/Σs, Diversify and Conquer Eq. 6) or softmax (the public code's variant).
    #[arg(long, default_value = "paper", value_parser = one_of::<WeightUpdate>(&WeightUpdate::NAMES))]
    update: WeightUpdate,
    /// deita: the largest cosine similarity to an already selected row.
    #[arg(long, default_value_t = SelectStep::default().max_similarity)]
    max_similarity: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let step = SelectStep {
        method: a.method,
        budget: a.budget,
        k: a.k,
        label: a.label,
        kmq_random: a.kmq_random,
        kmq_temperature: a.kmq_temperature,
        round: a.round,
        score: a.score,
        weights_from: a.weights_from,
        update: a.update,
        max_similarity: a.max_similarity,
        seed: Some(a.seed),
    };
    let bar = Bar::bytes("reading");
    let (m, c) =
        select_dataset(&a.input, &a.output, &step.options(a.seed)?, a.read.options()?, |p| bar.follow_bytes(p))?;
    bar.finish();
    let mut t =
        table(&["method", "selected", "of rows", "mean distance", "max distance", "cluster entropy", "labels covered"]);
    t.add_row(vec![
        Cell::new(a.method.name()),
        num(c.selected as u64),
        num(c.rows as u64),
        Cell::new(format!("{:.4}", c.mean_distance)),
        Cell::new(format!("{:.4}", c.max_distance)),
        Cell::new(match (c.cluster_entropy, c.max_entropy) {
            (Some(h), Some(max)) => format!("{h:.3} of {max:.3}"),
            _ => "-".into(),
        }),
        Cell::new(match (c.labels_covered, c.labels_total) {
            (Some(a), Some(b)) => format!("{a} of {b}"),
            _ => "-".into(),
        }),
    ]);
    outln!("{t}");
    outln!("manifest: {}", datasets::write::manifest_path(&m.output.path).display());
    Ok(())
}
