use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::curation::pipeline::{pipeline_report_path, Pipeline};

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
}

pub fn run(a: Args) -> Result<()> {
    let pipeline = Pipeline::load(&a.pipeline)?;
    let total = pipeline.stages.len();
    // One bar per stage; the one before is cleared when the next starts.
    let mut bar = None::<Bar>;
    let report = pipeline.run(|i, step, progress| {
        drop(bar.take());
        let b = Bar::bytes(format!("{}/{total} {}", i + 1, step.name()));
        b.follow_bytes(progress);
        bar = Some(b);
    });
    drop(bar);
    let report = report?;
    let mut t = table(&["#", "stage", "rows in", "kept", "dropped", "seconds", "output"]);
    for (i, s) in report.steps.iter().enumerate() {
        t.add_row(vec![
            num(i as u64 + 1),
            Cell::new(&s.stage),
            num(s.rows_in),
            num(s.rows_out),
            num(s.rows_rejected),
            Cell::new(format!("{:.1}", s.seconds)),
            Cell::new(s.output.display()),
        ]);
    }
    outln!("{t}");
    outln!("pipeline report: {}", pipeline_report_path(&pipeline.output).display());
    Ok(())
}
