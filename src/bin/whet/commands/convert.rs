use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::datasets::{self, convert::ConvertResults, ConvertOptions, OutputFormat};
use whetstone::notebook::thousands;

use crate::args::{one_of, ReadArgs};
use crate::progress::Bar;
use crate::table::{human_bytes, num, table};

/// Convert to a whetstone dataset (Parquet) or to the JSONL layouts trainers read.
///
/// Writes OUT atomically and OUT.manifest.json beside it (inputs with hashes, rows in/out/rejected).
#[derive(clap::Args)]
pub struct Args {
    /// File, directory or glob.
    input: PathBuf,
    /// Output file; its extension picks the format unless --format is given (.gz compresses JSONL).
    output: PathBuf,
    /// parquet (every column), arrow, jsonl (every column), alpaca (instruction/input/output) or
    /// messages ({"messages": [...]}, for TRL and Axolotl).
    #[arg(long, value_parser = one_of::<OutputFormat>(&OutputFormat::NAMES))]
    format: Option<OutputFormat>,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let read = a.read.options()?;
    let opts = ConvertOptions { format: a.format, map: read.map, on_error: read.on_error };
    let bar = Bar::bytes("converting");
    let m = datasets::convert(&a.input, &a.output, &opts, |p| bar.follow_bytes(p))?;
    bar.finish();
    let mut t = table(&["inputs", "rows in", "rows out", "rejected", "output", "size", "seconds"]);
    t.add_row(vec![
        Cell::new(match m.inputs.iter().filter(|i| i.rows_in == 0).count() {
            0 => m.inputs.len().to_string(),
            empty => format!("{} ({empty} empty)", m.inputs.len()),
        }),
        num(m.rows.rows_in),
        num(m.rows.rows_out),
        num(m.rows.rows_rejected),
        Cell::new(format!("{} ({})", m.output.path.display(), m.output.format.name())),
        Cell::new(human_bytes(m.output.bytes)),
        Cell::new(format!("{:.2}", m.seconds)),
    ]);
    outln!("{t}");
    if m.rows.rows_rejected > 0 {
        let mut t = table(&["rejected because", "rows"]);
        for (reason, n) in &m.rejected.by_reason {
            t.add_row(vec![Cell::new(reason), num(*n)]);
        }
        outln!("{t}");
        for e in m.rejected.examples.iter().take(5) {
            outln!("  {e}");
        }
        if let Some(f) = &m.rejected.file {
            outln!("rejected rows: {}", f.display());
        }
    }
    outln!("manifest: {}", datasets::write::manifest_path(&a.output).display());
    let found = m.results::<ConvertResults>()?.special_tokens;
    if found.rows > 0 {
        // Kept as they are (a conversion changes no text); stderr, so a pipe of the tables stays clean.
        eprintln!(
            "warning: {} rows hold special-token strings ({}), kept as text; `whet inspect` shows them, `whet filter \
             --special-tokens strip` removes those at the ends of texts",
            thousands(found.rows),
            found
                .strings
                .iter()
                .map(|c| format!("{} ×{}", c.string, thousands(c.occurrences)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
