use std::path::{Path, PathBuf};

use anyhow::Result;
use comfy_table::{Cell, CellAlignment};
use serde_json::Value;
use whetstone::datasets::{self, inspect::Inspection, SpecialTokens};
use whetstone::notebook::thousands;

use crate::args::ReadArgs;
use crate::progress::Bar;
use crate::table::{num, rows_table, table, CELL_CHARS};

/// Describe a dataset: layout, columns, row count, samples, length statistics, and the special-token strings
/// its texts hold (`<|endoftext|>`, `<|im_end|>`, `[INST]`, … of the ChatML, Llama, Mistral, GPT-2/NeoX, Gemma
/// and Phi families).
#[derive(clap::Args)]
pub struct Args {
    /// File, directory or glob.
    path: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// How many sample rows to show.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Also look for this tokenizer's own special tokens: a model (folder, .gguf file, Hugging Face repo id in
    /// the local cache) or a tokenizer.json.
    #[arg(long, value_name = "MODEL")]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let mut special_tokens = SpecialTokens::known();
    if let Some(model) = &a.tokenizer {
        let own = whetstone::selfimprove::prompt::tokenizer_special_tokens(model)?;
        special_tokens = special_tokens.with(&format!("{} (tokenizer)", model.display()), own);
    }
    let bar = Bar::bytes("reading");
    let found = datasets::inspect(&a.path, a.read.options()?, a.samples, &special_tokens, |p| bar.follow_bytes(p))?;
    bar.finish();
    if a.json {
        outln!("{}", inspection_json(&found));
        Ok(())
    } else {
        print_inspection(&found)
    }
}

fn inspection_json(found: &Inspection) -> Value {
    let mut v = serde_json::to_value(found).expect("serialisable");
    // The short form people script against: {"rows", "format", "columns": [names]}, details after.
    let names: Vec<Value> = found.columns.iter().map(|c| Value::String(c.name.clone())).collect();
    if let Value::Object(o) = &mut v {
        let types = o.insert("columns".into(), Value::Array(names)).unwrap_or(Value::Null);
        o.insert("column_types".into(), types);
    }
    v
}

fn print_inspection(found: &Inspection) -> Result<()> {
    let mut t = table(&["dataset", "format", "files", "rows", "with response", "conversations", "rejected"]);
    t.add_row(vec![
        Cell::new(found.path.display()),
        Cell::new(&found.format),
        num(found.files as u64),
        num(found.rows),
        num(found.with_response),
        num(found.conversations),
        num(found.rejected.total()),
    ]);
    outln!("{t}");
    let mut t = table(&["column", "type", "nullable"]);
    for c in &found.columns {
        t.add_row(vec![Cell::new(&c.name), Cell::new(&c.data_type), Cell::new(if c.nullable { "yes" } else { "no" })]);
    }
    outln!("{t}");
    let mut t = table(&["length", "unit", "min", "p50", "p90", "p99", "max", "mean"]);
    for (column, l) in &found.lengths {
        for (unit, d) in [("chars", l.chars), ("words", l.words)] {
            let mut row = vec![Cell::new(column), Cell::new(unit)];
            row.extend([d.min, d.p50, d.p90, d.p99, d.max].map(num));
            row.push(Cell::new(format!("{:.1}", d.mean)).set_alignment(CellAlignment::Right));
            t.add_row(row);
        }
    }
    outln!("{t}");
    if !found.samples.is_empty() {
        outln!("{}", rows_table(&found.samples, CELL_CHARS));
    }
    let markers = &found.special_tokens;
    if markers.strings.is_empty() {
        outln!("special-token strings: none");
    } else {
        let mut t =
            table(&["special-token string", "family", "rows", "occurrences", "at the ends", "first row", "where"]);
        for c in &markers.strings {
            let first = c.examples.first();
            t.add_row(vec![
                Cell::new(&c.string),
                Cell::new(&c.family),
                num(c.rows),
                num(c.occurrences),
                num(c.at_ends),
                Cell::new(first.map(|e| format!("{} ({})", thousands(e.row), e.field)).unwrap_or_default()),
                Cell::new(first.map(|e| format!("{:?}", e.context)).unwrap_or_default()),
            ]);
        }
        outln!("{t}");
        outln!(
            "{} of {} rows hold special-token strings (whetstone's tokenisation keeps them text); `whet filter \
             --special-tokens strip` removes those at the ends of texts",
            thousands(markers.rows),
            thousands(found.rows)
        );
    }
    let empty: Vec<&Path> = found.inputs.iter().filter(|i| i.rows_in == 0).map(|i| i.path.as_path()).collect();
    if !empty.is_empty() {
        outln!("{} empty file(s), e.g. {}", empty.len(), empty[0].display());
    }
    Ok(())
}
