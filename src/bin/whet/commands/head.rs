use std::path::PathBuf;

use anyhow::Result;
use whetstone::datasets;

use crate::args::ReadArgs;
use crate::table::{rows_table, CELL_CHARS};

/// Show the first rows.
#[derive(clap::Args)]
pub struct Args {
    /// File, directory or glob.
    path: PathBuf,
    #[arg(short = 'n', long, default_value_t = 10)]
    rows: usize,
    /// Print JSON lines (every column) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let mut reader = datasets::DatasetReader::open(&a.path, a.read.options()?)?;
    let mut shown = Vec::new();
    for batch in reader.by_ref() {
        let batch = batch?;
        let take = batch.num_rows().min(a.rows - shown.len());
        shown.extend(datasets::write::batch_rows_json(&batch.slice(0, take))?);
        if shown.len() >= a.rows {
            break;
        }
    }
    if a.json {
        for row in shown {
            outln!("{row}");
        }
    } else {
        outln!("{}", rows_table(&shown, CELL_CHARS));
    }
    Ok(())
}
