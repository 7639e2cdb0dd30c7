//! What is in a dataset: layout, columns, row count, sample rows, length statistics and the special-token
//! strings its texts hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::read::{DatasetReader, InputReport, Progress, ReadOptions, Rejections};
use crate::schema;
use crate::special_tokens::{SpecialTokenReport, SpecialTokenScan, SpecialTokens};

/// Percentiles of a length distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Distribution {
    pub fn of(values: &mut [u32]) -> Self {
        if values.is_empty() {
            return Distribution::default();
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize] as u64;
        Distribution {
            min: values[0] as u64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values[values.len() - 1] as u64,
            mean: values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64,
        }
    }
}

/// Lengths of one text column in characters and in whitespace-separated tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TextLengths {
    pub chars: Distribution,
    pub words: Distribution,
}

#[derive(Default)]
struct LengthCollector {
    chars: Vec<u32>,
    words: Vec<u32>,
}

impl LengthCollector {
    fn add(&mut self, text: &str) {
        self.chars.push(text.chars().count() as u32);
        self.words.push(text.split_whitespace().count() as u32);
    }
    fn finish(mut self) -> TextLengths {
        TextLengths { chars: Distribution::of(&mut self.chars), words: Distribution::of(&mut self.words) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inspection {
    pub path: PathBuf,
    /// The recognised layout(s) and container(s), e.g. `question-answer (jsonl)`.
    pub format: String,
    pub files: usize,
    pub rows: u64,
    pub columns: Vec<Column>,
    /// Rows with a response (the rest are prompt-only).
    pub with_response: u64,
    /// Rows with a conversation in `messages`.
    pub conversations: u64,
    pub lengths: BTreeMap<String, TextLengths>,
    pub samples: Vec<Value>,
    /// Special-token strings in the texts (`<|endoftext|>`, `<|im_end|>`, …), with example rows.
    pub special_tokens: SpecialTokenReport,
    pub rejected: Rejections,
    pub inputs: Vec<InputReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// Reads the whole input once (streaming) and describes it, looking for the strings of `special_tokens`.
pub fn inspect(
    path: &Path,
    opts: ReadOptions,
    samples: usize,
    special_tokens: &SpecialTokens,
    on_progress: impl FnOnce(Progress),
) -> Result<Inspection> {
    let mut reader = DatasetReader::open(path, opts)?;
    on_progress(reader.progress());
    let mut rows = 0u64;
    let mut with_response = 0u64;
    let mut conversations = 0u64;
    let mut prompt = LengthCollector::default();
    let mut response = LengthCollector::default();
    let mut sample_rows = Vec::new();
    let mut markers = SpecialTokenScan::new(special_tokens, 3);
    for batch in reader.by_ref() {
        let batch = batch?;
        markers.add(&batch);
        rows += batch.num_rows() as u64;
        if sample_rows.len() < samples {
            sample_rows.extend(crate::write::batch_rows_json(
                &batch.slice(0, batch.num_rows().min(samples - sample_rows.len())),
            )?);
        }
        let p = batch.column_by_name(schema::PROMPT).expect("core column").as_string::<i32>();
        let r = batch.column_by_name(schema::RESPONSE).expect("core column").as_string::<i32>();
        let m = batch.column_by_name(schema::MESSAGES).expect("core column");
        conversations += (m.len() - m.null_count()) as u64;
        for i in 0..batch.num_rows() {
            prompt.add(p.value(i));
            if r.is_valid(i) {
                with_response += 1;
                response.add(r.value(i));
            }
        }
    }
    let schema = reader.schema();
    let mut formats: Vec<String> =
        reader.reports().iter().filter_map(|r| r.format.map(|f| format!("{f} ({})", r.container))).collect();
    formats.sort();
    formats.dedup();
    Ok(Inspection {
        path: path.to_path_buf(),
        format: formats.join(", "),
        files: reader.reports().len(),
        rows,
        columns: schema
            .fields()
            .iter()
            .map(|f| Column { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
            .collect(),
        with_response,
        conversations,
        lengths: BTreeMap::from([("prompt".to_string(), prompt.finish()), ("response".to_string(), response.finish())]),
        samples: sample_rows,
        special_tokens: markers.finish(),
        rejected: reader.rejections().clone(),
        inputs: reader.reports().to_vec(),
    })
}
