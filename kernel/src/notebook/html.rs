//! Record batches as an HTML table (what a notebook shows) and as a plain-text table (what a console shows).

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Cell text longer than this is cut in the table; the whole text is one click away (`<details>`).
pub const CELL_CHARS: usize = 160;
/// Plain-text cells are cut at this many characters.
const TEXT_CELL_CHARS: usize = 40;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The first `n` characters of `text`, and whether it was cut.
fn cut(text: &str, n: usize) -> (&str, bool) {
    match text.char_indices().nth(n) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// A column's type, short: `utf8`, `list<struct>`, `f32×384`.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "utf8".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::FixedSizeList(f, n) => format!("{}×{n}", type_name(f.data_type())),
        DataType::Struct(fields) => {
            format!("struct<{}>", fields.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string().to_lowercase(),
    }
}

/// Each cell of the first `limit` rows, as text (nulls as `None`).
fn cells(batches: &[RecordBatch], schema: &Schema, limit: usize) -> Vec<Vec<Option<String>>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("arrow formats every type it reads"))
            .collect();
        for r in 0..batch.num_rows() {
            if rows.len() == limit {
                return rows;
            }
            rows.push(
                (0..schema.fields().len())
                    .map(|c| (!batch.column(c).is_null(r)).then(|| formatters[c].value(r).to_string()))
                    .collect(),
            );
        }
    }
    rows
}

pub(crate) const STYLE: &str = "<style>\
.whet-table{border-collapse:collapse;font-size:12px}\
.whet-table th,.whet-table td{border:1px solid #ddd;padding:3px 6px;text-align:left !important;vertical-align:top;max-width:40em}\
.whet-table td.long{min-width:22em}\
.whet-table th small{color:#888;font-weight:normal}\
.whet-table td.null{color:#aaa}\
.whet-table details summary{cursor:pointer}\
.whet-caption{font-size:12px;color:#555;margin:4px 0}\
</style>";

/// An HTML table of the first `limit` rows, column types in the header and `caption` (row count, source)
/// above it.
pub fn table_html(batches: &[RecordBatch], schema: &Schema, limit: usize, caption: &str) -> String {
    let mut html =
        format!("{STYLE}<div class=\"whet-caption\">{}</div><table class=\"whet-table\"><thead><tr>", escape(caption));
    for f in schema.fields() {
        html.push_str(&format!(
            "<th>{}<br><small>{}</small></th>",
            escape(f.name()),
            escape(&type_name(f.data_type()))
        ));
    }
    html.push_str("</tr></thead><tbody>");
    for row in cells(batches, schema, limit) {
        html.push_str("<tr>");
        for cell in row {
            match cell {
                None => html.push_str("<td class=\"null\">null</td>"),
                Some(text) => {
                    let (head, was_cut) = cut(&text, CELL_CHARS);
                    if was_cut {
                        let chars = text.chars().count();
                        html.push_str(&format!(
                            "<td class=\"long\"><details><summary>{}… <small>({chars} chars)</small></summary>{}</details></td>",
                            escape(head),
                            escape(&text)
                        ));
                    } else {
                        html.push_str(&format!("<td>{}</td>", escape(&text)));
                    }
                }
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

/// `text` cut to `n` characters, with "…" when it was longer.
pub(crate) fn shorten(text: &str, n: usize) -> String {
    match cut(text, n) {
        (head, true) => format!("{head}…"),
        (_, false) => text.to_string(),
    }
}

/// The widest cell of each column, in characters.
pub(crate) fn column_widths(rows: &[&[String]]) -> Vec<usize> {
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    (0..columns).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect()
}

/// One line of a text table: cells padded to their column's width, joined by `separator`.
pub(crate) fn padded_line(cells: &[String], widths: &[usize], separator: &str) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
        .collect();
    padded.join(separator).trim_end().to_string()
}

/// The same as plain text: a caption, then a header and rows with cut cells.
pub fn table_text(batches: &[RecordBatch], schema: &Schema, limit: usize, caption: &str) -> String {
    let header: Vec<String> =
        schema.fields().iter().map(|f| format!("{} ({})", f.name(), type_name(f.data_type()))).collect();
    let rows: Vec<Vec<String>> = cells(batches, schema, limit)
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| {
                    c.map_or("null".to_string(), |t| shorten(&t.replace(['\n', '\r', '\t'], " "), TEXT_CELL_CHARS))
                })
                .collect()
        })
        .collect();
    let all: Vec<&[String]> = std::iter::once(header.as_slice()).chain(rows.iter().map(Vec::as_slice)).collect();
    let widths = column_widths(&all);
    let mut out = format!("{caption}\n{}\n", padded_line(&header, &widths, " | "));
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    out.push('\n');
    for r in &rows {
        out.push_str(&padded_line(r, &widths, " | "));
        out.push('\n');
    }
    out
}

/// Prints Evcxr's rich-output blocks: each (MIME type, content) pair becomes one representation of the value.
pub fn emit(parts: &[(&str, &str)]) {
    for (mime, content) in parts {
        println!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray, UInt32Array};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let long = "x".repeat(CELL_CHARS + 50);
        let text: ArrayRef = Arc::new(StringArray::from(vec![Some("<b>a & b</b>"), None, Some(long.as_str())]));
        let n: ArrayRef = Arc::new(UInt32Array::from(vec![1, 2, 3]));
        RecordBatch::try_from_iter([("prompt", text), ("n", n)]).unwrap()
    }

    #[test]
    fn html_is_escaped_typed_and_cuts_long_text_keeping_it_whole_behind_a_click() {
        let b = batch();
        let html = table_html(std::slice::from_ref(&b), &b.schema(), 10, "3 rows from <test>");
        assert!(html.contains("&lt;b&gt;a &amp; b&lt;/b&gt;") && !html.contains("<b>a"), "{html}");
        assert!(html.contains("3 rows from &lt;test&gt;"));
        assert!(html.contains("prompt<br><small>utf8</small>") && html.contains("n<br><small>uint32</small>"));
        assert!(html.contains("<td class=\"null\">null</td>"));
        let long = "x".repeat(CELL_CHARS + 50);
        assert!(html.contains(&format!("{}… <small>({} chars)</small>", "x".repeat(CELL_CHARS), CELL_CHARS + 50)));
        assert!(html.contains(&format!("</summary>{long}</details>")), "the full text is there");
        let two = table_html(std::slice::from_ref(&b), &b.schema(), 2, "");
        assert_eq!(two.matches("<tr>").count(), 3, "a header and two rows");
    }

    #[test]
    fn text_tables_line_up_and_cut() {
        let b = batch();
        let text = table_text(std::slice::from_ref(&b), &b.schema(), 10, "caption");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "caption");
        assert_eq!(lines[1], "prompt (utf8)                             | n (uint32)");
        assert!(lines[3].starts_with("<b>a & b</b>") && lines[4].starts_with("null"));
        assert!(lines[5].starts_with(&format!("{}…", "x".repeat(40))));
        assert_eq!(lines[3].find('|'), lines[1].find('|'), "columns line up");
    }
}
