use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::curation::pipeline::{pipeline_report_path, Pipeline, PipelineReport, Step};
use whetstone::datasets::Progress;
use whetstone::notebook::thousands;

use crate::progress::Bar;
use crate::table::{num, table};

/// Run a pipeline of curation stages from a TOML file: each stage's output feeds the next.
///
/// Intermediate datasets go to OUTPUT.stages/, each with its manifest; OUTPUT.pipeline.json lists them.
/// See `whetstone_curation::pipeline` for the file's format, or examples/t0-curate.toml.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file (input, output, seed, [[stage]] tables).
    pipeline: PathBuf,
    /// Run the per-row work on a cluster (`whet cluster`): df://HOST:PORT of its scheduler. The output's
    /// folder must be on storage every executor sees. Filter, exact and MinHash dedup and decontamination
    /// write the datasets and manifests of a run without it; embedding with a model writes the same vectors
    /// to within float rounding; k-means runs Lloyd's iterations there (inertia within 1% of a run here). The
    /// other stages run here.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let pipeline = Pipeline::load(&a.pipeline)?;
    let total = pipeline.stages.len();
    // One bar per stage; the one before is cleared when the next starts.
    let mut bar = None::<Bar>;
    let on_step = |i: usize, step: &Step, progress| {
        drop(bar.take());
        let b = Bar::bytes(format!("{}/{total} {}", i + 1, step.name()));
        b.follow_bytes(progress);
        bar = Some(b);
    };
    let report = match &a.cluster {
        None => pipeline.run(on_step),
        Some(url) => on_cluster(&pipeline, url, on_step),
    };
    drop(bar);
    let report = report?;
    let mut t = table(&["#", "stage", "rows in", "kept", "dropped", "seconds", "cluster", "output"]);
    for (i, s) in report.steps.iter().enumerate() {
        t.add_row(vec![
            num(i as u64 + 1),
            Cell::new(&s.stage),
            num(s.rows_in),
            num(s.rows_out),
            num(s.rows_rejected),
            Cell::new(format!("{:.1}", s.seconds)),
            Cell::new(match &s.cluster {
                Some(c) => format!(
                    "{} rows examined; staged in {:.1} s, cluster {:.1} s",
                    thousands(c.rows_examined),
                    c.staging_seconds,
                    c.seconds
                ),
                None => "-".into(),
            }),
            Cell::new(s.output.display()),
        ]);
    }
    outln!("{t}");
    outln!("pipeline report: {}", pipeline_report_path(&pipeline.output).display());
    Ok(())
}

#[cfg(feature = "cluster")]
fn on_cluster(
    pipeline: &Pipeline,
    url: &str,
    on_step: impl FnMut(usize, &Step, Progress),
) -> whetstone::curation::Result<PipelineReport> {
    let mut session = whetstone::curation::sql::SqlSession::connect(url)?;
    whetstone::curation::sql::curate::run_pipeline(pipeline, &mut session, on_step)
}

#[cfg(not(feature = "cluster"))]
fn on_cluster(
    _: &Pipeline,
    _: &str,
    _: impl FnMut(usize, &Step, Progress),
) -> whetstone::curation::Result<PipelineReport> {
    Err(whetstone::curation::Error::Invalid(
        "this whet was built without clusters: build it with `cargo build --release --features cluster`".into(),
    ))
}
