//! Tables a person reads, printed on stdout (progress and logs go to stderr).

use std::fmt::Display;
use std::io::Write;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use serde_json::Value;
use whetstone::datasets::Manifest;
use whetstone::notebook::thousands;

/// How much of a text a table cell shows.
pub const CELL_CHARS: usize = 60;

/// One line on stdout. A closed pipe (`whet head --json … | head -1`) comes back as an error, which `main`
/// ends on quietly instead of panicking as `println!` would.
pub fn out(text: impl Display) -> std::io::Result<()> {
    writeln!(std::io::stdout().lock(), "{text}")
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    t
}

/// A count, right-aligned, with thousands separators.
pub fn num(n: u64) -> Cell {
    Cell::new(thousands(n)).set_alignment(CellAlignment::Right)
}

pub fn pct(v: f64) -> Cell {
    Cell::new(format!("{:.1}%", 100.0 * v))
}

pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Shortens text for a table cell: newlines shown as ⏎, long text cut with an ellipsis.
fn cell_text(v: &Value, width: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let flat: String = s.replace('\n', "⏎");
    if flat.chars().count() > width {
        let cut: String = flat.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// JSON rows as a table: a column for every key any row has, in the order first seen.
pub fn rows_table(rows: &[Value], width: usize) -> Table {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        if let Value::Object(o) = row {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let header: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut t = table(&header);
    for row in rows {
        t.add_row(
            columns.iter().map(|c| Cell::new(cell_text(row.get(c).unwrap_or(&Value::Null), width))).collect::<Vec<_>>(),
        );
    }
    t
}

/// Record batches as a table: a column per field, values as Arrow prints them, long text cut to `width`.
pub fn batches_table(
    schema: &arrow::datatypes::Schema,
    batches: &[arrow::array::RecordBatch],
    width: usize,
) -> Result<Table, arrow::error::ArrowError> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut t = table(&header);
    let options = FormatOptions::default();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            t.add_row(
                formatters
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| {
                        let text = Value::String(f.value(row).to_string());
                        let cell = Cell::new(cell_text(&text, width));
                        if c.data_type().is_numeric() {
                            cell.set_alignment(CellAlignment::Right)
                        } else {
                            cell
                        }
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    Ok(t)
}

/// Rows in, kept and dropped by reason: what a filtering stage did.
pub fn drops(m: &Manifest) -> std::io::Result<()> {
    if m.rows.query {
        let mut t = table(&["stage", "rows in", "rows out", "rows not read", "output"]);
        t.add_row(vec![
            Cell::new(&m.stage),
            num(m.rows.rows_in),
            num(m.rows.rows_out),
            num(m.rows.rows_rejected),
            Cell::new(m.output.path.display()),
        ]);
        return out(t);
    }
    let mut t = table(&["stage", "rows in", "kept", "dropped", "output"]);
    t.add_row(vec![
        Cell::new(&m.stage),
        num(m.rows.rows_in),
        num(m.rows.rows_out / m.rows.per_row),
        num(m.rows.rows_rejected),
        Cell::new(match m.rows.per_row {
            1 => m.output.path.display().to_string(),
            n => format!("{} ({} rows, {n} per row kept)", m.output.path.display(), thousands(m.rows.rows_out)),
        }),
    ]);
    out(t)?;
    if !m.rejected.by_reason.is_empty() {
        let mut t = table(&["dropped because", "rows"]);
        for (reason, n) in &m.rejected.by_reason {
            t.add_row(vec![Cell::new(reason), num(*n)]);
        }
        out(t)?;
    }
    if let Some(f) = &m.rejected.file {
        out(format_args!("dropped rows, with reasons: {}", f.display()))?;
    }
    Ok(())
}
