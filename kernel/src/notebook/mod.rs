//! What a notebook works with: datasets held in memory that display as tables, stages run with progress and
//! a summary, and charts. The kernel brings all of it into scope: the facade's prelude (`whetstone::prelude`)
//! re-exports it.
//!
//! ```no_run
//! use whetstone_curation::pipeline::{FilterStep, Step};
//! use whetstone_kernel::notebook::{run, Chart, Dataset};
//! let gsm8k = Dataset::open("../shared/data/gsm8k/test.jsonl")?;   // shows as a table in a notebook
//! let chart = Chart::histogram("prompt length", "characters", &gsm8k.lengths("prompt")?, 40)?;
//! let done = run(Step::Filter(FilterStep::default()), "../shared/data/gsm8k/test.jsonl", "gsm8k.parquet")?;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```
//!
//! A value displays itself in a notebook when it is a cell's last expression: Evcxr calls its `evcxr_display`
//! method, which prints the HTML (or SVG) between Evcxr's content markers, with a plain-text version beside it.

pub mod chart;
pub mod html;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, SchemaRef, UInt32Type};
use whetstone_curation::pipeline::Step;
use whetstone_datasets::{read_all, Manifest, Progress, ReadOptions};

pub use chart::Chart;

/// Errors in a notebook: any error, with its message; `?` works on every whetstone call.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Rows a dataset shows when displayed.
pub const SHOWN_ROWS: usize = 10;

/// A dataset read into memory: its record batches and where they came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub source: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Rows the reader rejected (malformed input), by reason.
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// How many rows the display shows.
    pub shown: usize,
}

impl Dataset {
    /// Reads a file, a folder of files or a glob (JSONL, JSON, CSV, Parquet, Arrow; gzip too), with the
    /// canonical record model's field detection.
    pub fn open(path: impl AsRef<Path>) -> Result<Dataset> {
        Self::open_with(path, ReadOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: ReadOptions) -> Result<Dataset> {
        let path = path.as_ref();
        let (batches, reader) = read_all(path, options)?;
        let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| reader.schema());
        Ok(Dataset {
            source: path.display().to_string(),
            schema,
            batches,
            rejected: reader.rejections().by_reason.clone(),
            shown: SHOWN_ROWS,
        })
    }

    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The same dataset, displaying `n` rows (a cheap copy: the columns are shared).
    pub fn show(&self, n: usize) -> Dataset {
        Dataset { shown: n, ..self.clone() }
    }

    fn column(&self, name: &str) -> Result<Vec<&dyn Array>> {
        if self.schema.index_of(name).is_err() {
            let names: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(format!("{}: no column {name:?} (columns: {})", self.source, names.join(", ")).into());
        }
        Ok(self.batches.iter().map(|b| b.column_by_name(name).expect("every batch has the schema").as_ref()).collect())
    }

    /// The text of a string column, one entry per row (`None` for a null).
    pub fn texts(&self, column: &str) -> Result<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(self.rows());
        for array in self.column(column)? {
            let strings = array
                .as_string_opt::<i32>()
                .ok_or_else(|| format!("{}: column {column:?} is {}, not text", self.source, array.data_type()))?;
            out.extend(strings.iter().map(|s| s.map(str::to_owned)));
        }
        Ok(out)
    }

    /// The length in characters of each row's text in `column` (0 for a null).
    pub fn lengths(&self, column: &str) -> Result<Vec<f64>> {
        Ok(self.texts(column)?.iter().map(|t| t.as_deref().map_or(0, |t| t.chars().count()) as f64).collect())
    }

    /// A column of labels as text: strings as they are, integers (a `cluster` column) printed.
    pub fn labels(&self, column: &str) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.rows());
        for array in self.column(column)? {
            match array.data_type() {
                DataType::Utf8 => out.extend(array.as_string::<i32>().iter().map(|s| s.unwrap_or("null").to_owned())),
                DataType::UInt32 => out.extend(
                    array.as_primitive::<UInt32Type>().iter().map(|v| v.map_or("null".into(), |v| v.to_string())),
                ),
                other => return Err(format!("{}: column {column:?} is {other}, not labels", self.source).into()),
            }
        }
        Ok(out)
    }

    /// The `embedding` column, row-major, and its dimension.
    pub fn embeddings(&self) -> Result<(Vec<f32>, usize)> {
        let mut out = Vec::new();
        let mut dim = 0;
        for array in self.column("embedding")? {
            let list =
                array.as_fixed_size_list_opt().ok_or_else(|| format!("{}: embedding is not a vector", self.source))?;
            dim = list.value_length() as usize;
            out.extend_from_slice(list.values().as_primitive::<Float32Type>().values());
        }
        Ok((out, dim))
    }

    /// Each column: its type, nulls and, for text, the length in characters (min, median, 90th percentile,
    /// max).
    pub fn describe(&self) -> Table {
        let mut table = Table::new(
            &format!("{} rows from {}", thousands(self.rows() as u64), self.source),
            &["column", "type", "nulls", "min chars", "median", "p90", "max"],
        );
        for field in self.schema.fields() {
            let name = field.name();
            let nulls: usize = self.column(name).map(|c| c.iter().map(|a| a.null_count()).sum()).unwrap_or(0);
            let mut row = vec![name.clone(), html::type_name(field.data_type()), thousands(nulls as u64)];
            if matches!(field.data_type(), DataType::Utf8) {
                let mut lengths = self.lengths(name).unwrap_or_default();
                lengths.sort_by(f64::total_cmp);
                let at = |q: f64| {
                    lengths.get(((lengths.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0)
                };
                row.extend([at(0.0), at(0.5), at(0.9), at(1.0)].map(|v| thousands(v as u64)));
            } else {
                row.extend(std::iter::repeat_n(String::new(), 4));
            }
            table.rows.push(row);
        }
        table
    }

    /// The special-token strings in the texts (`<|endoftext|>`, `<|im_end|>`, `[INST]`, … of the common model
    /// families), with the first row holding each.
    pub fn special_tokens(&self) -> Table {
        let known = whetstone_datasets::SpecialTokens::known();
        let mut scan = whetstone_datasets::special_tokens::SpecialTokenScan::new(&known, 1);
        self.batches.iter().for_each(|b| scan.add(b));
        let found = scan.finish();
        let mut table = Table::new(
            &format!("{} of {} rows hold special-token strings", thousands(found.rows), thousands(self.rows() as u64)),
            &["string", "family", "rows", "occurrences", "at the ends", "first row", "where"],
        );
        for c in &found.strings {
            let first = c.examples.first();
            table.rows.push(vec![
                c.string.clone(),
                c.family.clone(),
                thousands(c.rows),
                thousands(c.occurrences),
                thousands(c.at_ends),
                first.map(|e| format!("{} ({})", thousands(e.row), e.field)).unwrap_or_default(),
                first.map(|e| format!("{:?}", e.context)).unwrap_or_default(),
            ]);
        }
        table
    }

    fn caption(&self) -> String {
        let rows = self.rows();
        let mut caption =
            format!("{} rows × {} columns from {}", thousands(rows as u64), self.schema.fields().len(), self.source);
        let rejected: u64 = self.rejected.values().sum();
        if rejected > 0 {
            let reasons: Vec<String> = self.rejected.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            caption.push_str(&format!("; {rejected} rows rejected ({})", reasons.join(", ")));
        }
        if rows > self.shown {
            caption.push_str(&format!("; the first {}", self.shown));
        }
        caption
    }

    pub fn evcxr_display(&self) {
        show_batches(&self.batches, &self.schema, self.shown, &self.caption());
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&html::table_text(&self.batches, &self.schema, self.shown, &self.caption()))
    }
}

/// Record batches display as tables too (bring this trait into scope: the prelude does).
pub trait Show {
    fn evcxr_display(&self);
}

impl Show for RecordBatch {
    fn evcxr_display(&self) {
        let caption =
            format!("{} rows × {} columns (a record batch)", thousands(self.num_rows() as u64), self.num_columns());
        show_batches(std::slice::from_ref(self), &self.schema(), SHOWN_ROWS, &caption);
    }
}

/// Shows rows as an HTML table, with a plain-text table (at most five rows) beside it for consoles.
fn show_batches(batches: &[RecordBatch], schema: &SchemaRef, shown: usize, caption: &str) {
    html::emit(&[
        ("text/plain", &html::table_text(batches, schema, shown.min(5), caption)),
        ("text/html", &html::table_html(batches, schema, shown, caption)),
    ]);
}

/// A small table of text: what a notebook shows for summaries and comparisons.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(caption: &str, header: &[&str]) -> Table {
        Table { caption: caption.to_string(), header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row (anything that prints).
    pub fn row(mut self, cells: &[&dyn std::fmt::Display]) -> Table {
        self.rows.push(cells.iter().map(|c| c.to_string()).collect());
        self
    }

    pub fn html(&self) -> String {
        let mut out = format!(
            "{}<div class=\"whet-caption\">{}</div><table class=\"whet-table\"><thead><tr>",
            html::STYLE,
            html::escape(&self.caption)
        );
        for h in &self.header {
            out.push_str(&format!("<th>{}</th>", html::escape(h)));
        }
        out.push_str("</tr></thead><tbody>");
        for r in &self.rows {
            out.push_str("<tr>");
            for c in r {
                out.push_str(&format!("<td>{}</td>", html::escape(c)));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        out
    }

    pub fn evcxr_display(&self) {
        html::emit(&[("text/plain", &self.to_string()), ("text/html", &self.html())]);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<&[String]> =
            std::iter::once(self.header.as_slice()).chain(self.rows.iter().map(Vec::as_slice)).collect();
        let widths = html::column_widths(&all);
        writeln!(f, "{}", self.caption)?;
        for r in all {
            writeln!(f, "{}", html::padded_line(r, &widths, "  "))?;
        }
        Ok(())
    }
}

/// 41813 → "41,813".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The shared real data folder (`../shared/data` in this project): `WHETSTONE_SHARED_DATA` if set, else the
/// first `shared/data` (with its README.md) beside the current folder or one of its parents.
pub fn shared_data() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WHETSTONE_SHARED_DATA") {
        return Ok(PathBuf::from(dir));
    }
    let here = std::env::current_dir()?;
    here.ancestors().map(|a| a.join("shared/data")).find(|d| d.join("README.md").is_file()).ok_or_else(|| {
        format!("no shared/data beside {} or its parents: set WHETSTONE_SHARED_DATA", here.display()).into()
    })
}

/// The `whet` command: `WHET` if set, else `whet` on PATH, else the newest `target/{release,debug}/whet` of
/// the current folder or one of its parents (a checkout, with the notebook in `notebooks/`).
pub fn whet_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WHET") {
        return Ok(PathBuf::from(path));
    }
    if let Some(dirs) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&dirs).map(|d| d.join("whet")).find(|p| p.is_file()) {
            return Ok(found);
        }
    }
    let here = std::env::current_dir()?;
    let built = here
        .ancestors()
        .flat_map(|a| ["release", "debug"].map(|p| a.join("target").join(p).join("whet")))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max();
    built.map(|(_, p)| p).ok_or_else(|| {
        "no whet command: build it (cargo build --release), put it on PATH, or set WHET to its path".into()
    })
}

/// Runs `whet` with `args` for what notebooks do not link (generation, training rounds: mistral.rs and the
/// trainer's long runs): its progress lines (stderr) are printed to the cell's output as they come, and what
/// it printed on stdout is returned. A failure is an error with the command's last words.
pub fn whet(args: &[&str]) -> Result<String> {
    use std::io::{BufRead, Read};
    let path = whet_path()?;
    let mut child = std::process::Command::new(&path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let mut last = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        last.push(line);
    }
    let status = child.wait()?;
    let printed = reader.join().map_err(|_| "reading whet's output failed")??;
    if !status.success() {
        let tail = last.iter().rev().take(5).rev().cloned().collect::<Vec<_>>().join("\n");
        return Err(format!("whet {} failed ({status}): {tail}", args.join(" ")).into());
    }
    Ok(printed)
}

/// Answers a SQL query over the tables named (`[("t0", path), …]`: files, folders or globs, read as every
/// stage reads them), with whetstone's functions (`minhash`, `embed`, `ngram_overlap`, …): `whet sql` runs it
/// (DataFusion lives in the `whet` binary, not in every notebook's build) and the result comes back as a
/// [`Dataset`], shown as a table.
pub fn sql<'a, P: AsRef<Path>>(query: &str, tables: impl IntoIterator<Item = (&'a str, P)>) -> Result<Dataset> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let out = std::env::temp_dir().join(format!(
        "whetstone-sql-{}-{}.arrow",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut args = vec!["sql".to_string(), query.to_string(), "--out".into(), out.display().to_string()];
    for (name, path) in tables {
        args.extend(["--table".to_string(), format!("{name}={}", path.as_ref().display())]);
    }
    let result = whet(&args.iter().map(String::as_str).collect::<Vec<_>>()).and_then(|_| {
        let file = std::fs::File::open(&out)?;
        let reader = arrow::ipc::reader::FileReader::try_new(file, None)?;
        let schema = reader.schema();
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        let manifest = Manifest::read_beside(&out)?;
        Ok(Dataset {
            source: query.to_string(),
            schema,
            batches,
            rejected: manifest.rejected.by_reason,
            shown: SHOWN_ROWS,
        })
    });
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(whetstone_datasets::write::manifest_path(&out));
    result
}

/// Text progress for a notebook: a line at each tenth of the input read, so long stages show they are moving
/// without flooding the output.
/// How long a stage runs before its progress is printed.
const QUIET: Duration = Duration::from_secs(2);

pub struct Ticker {
    label: String,
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn new(label: &str) -> Ticker {
        Ticker {
            label: label.to_string(),
            started: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// Follows a stage's progress (the `on_progress` argument of every stage).
    pub fn follow(&mut self, progress: Progress) {
        let (label, stop, started) = (self.label.clone(), self.stop.clone(), self.started);
        self.thread = Some(std::thread::spawn(move || {
            let mut reported = 0;
            while !stop.load(Ordering::Relaxed) {
                let total = progress.total();
                // Quick stages print nothing: a line is news only once a person has been waiting.
                if total > 0 && started.elapsed() >= QUIET {
                    let tenth = (progress.done() * 10 / total).min(9);
                    if tenth > reported {
                        reported = tenth;
                        println!("{label}: {}% read, {:.1} s", tenth * 10, started.elapsed().as_secs_f64());
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a stage did: its manifest (rows in, out and rejected, by reason; what it measured) and where it wrote.
#[derive(Debug, Clone)]
pub struct StageDone {
    pub output: PathBuf,
    pub manifest: Manifest,
}

impl StageDone {
    /// The stage's output, read into memory.
    pub fn dataset(&self) -> Result<Dataset> {
        Dataset::open(&self.output)
    }

    /// A number the stage measured (`labels_covered`, `mean_distance`, `inertia`, …), from its manifest.
    pub fn result(&self, key: &str) -> Result<f64> {
        self.manifest.results.get(key).and_then(|v| v.as_f64()).ok_or_else(|| {
            let keys: Vec<&String> = self.manifest.results.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            format!("the {} stage measured no {key:?} (it has: {keys:?})", self.manifest.stage).into()
        })
    }

    /// The summary as a table: rows in, out and rejected (by reason), what the stage measured, the time.
    pub fn summary(&self) -> Table {
        let m = &self.manifest;
        let mut table = Table::new(&format!("{} → {}", m.stage, self.output.display()), &["measure", "value"])
            .row(&[&"rows in", &thousands(m.rows.rows_in)])
            .row(&[&"rows out", &thousands(m.rows.rows_out)])
            .row(&[&"rows rejected", &thousands(m.rows.rows_rejected)]);
        for (reason, n) in &m.rejected.by_reason {
            table = table.row(&[&format!("  rejected: {reason}"), &thousands(*n)]);
        }
        for (key, text) in results_rows(&m.results, "", 2) {
            table = table.row(&[&key, &text]);
        }
        table.row(&[&"seconds", &format!("{:.1}", m.seconds)])
    }

    pub fn evcxr_display(&self) {
        self.summary().evcxr_display()
    }
}

/// A stage's results as (measure, value) rows: numbers, text and flags, and small objects (at most 8 entries,
/// `depth` levels down) as their entries; per-cluster tables and the like stay in the manifest.
fn results_rows(results: &serde_json::Value, prefix: &str, depth: usize) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (key, value) in results.as_object().into_iter().flatten() {
        // Field names read as words; a string counted by name (`<|im_end|>`) stays as it is.
        let words = key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let key = format!("{prefix}{}", if words { key.replace('_', " ") } else { key.clone() });
        let text = match value {
            serde_json::Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::Number(n) => n.as_u64().map(thousands).unwrap_or_else(|| n.to_string()),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Object(o) if depth > 0 && o.len() <= 8 && !o.values().any(|v| v.is_array()) => {
                rows.extend(results_rows(value, &format!("{key}: "), depth - 1));
                continue;
            }
            _ => continue,
        };
        rows.push((key, text));
    }
    rows
}

/// Runs a curation step from `input` to `output` (seed 0 unless the step sets one), with text progress;
/// the result shows what it did to every row.
pub fn run(step: Step, input: impl AsRef<Path>, output: impl AsRef<Path>) -> Result<StageDone> {
    run_seeded(step, input, output, 0)
}

pub fn run_seeded(step: Step, input: impl AsRef<Path>, output: impl AsRef<Path>, seed: u64) -> Result<StageDone> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let mut ticker = Ticker::new(step.name());
    let manifest = step.run(input, output, ReadOptions::default(), seed, |p| ticker.follow(p));
    ticker.finish();
    Ok(StageDone { output: output.to_path_buf(), manifest: manifest? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(41813), "41,813");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn a_summary_shows_small_result_objects_entry_by_entry() {
        let results = serde_json::json!({
            "inertia": 1.5,
            "special_tokens_stripped": {"rows": 41813, "strings": {"<|end_of_text|>": 2}},
            "per_cluster": {"sizes": [3, 4]},
        });
        let rows: Vec<(String, String)> = results_rows(&results, "", 2);
        let expected = [
            ("inertia", "1.5000"),
            ("special tokens stripped: rows", "41,813"),
            ("special tokens stripped: strings: <|end_of_text|>", "2"),
        ];
        assert_eq!(rows, expected.map(|(k, v)| (k.to_string(), v.to_string())));
    }
}
