//! Special-token strings in the rows' texts ([`whetstone_datasets::special_tokens`]): kept as text, stripped
//! from the ends of each text, or the row rejected. Chat rows are read turn by turn; their prompt and response
//! columns repeat two turns and are stripped the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, ListArray, RecordBatch, StringArray, StructArray};
use serde::{Deserialize, Serialize};
use whetstone_datasets::special_tokens::{RowTexts, SpecialTokens};
use whetstone_datasets::{schema, Dropped};

use crate::error::Result;

/// What the filter stage does with special-token strings (`<|endoftext|>`, `<|im_end|>`, `[INST]`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecialTokenMode {
    /// Leave them in the text (whetstone's tokenisation keeps them text, but a model trained on them learns
    /// to write them).
    #[default]
    Keep,
    /// Take them off the start and end of every text, counting each in the manifest; a row that still holds
    /// one inside a text is rejected, as nothing tells what it separated.
    Strip,
    /// Reject every row that holds one, naming the string.
    Reject,
}

impl SpecialTokenMode {
    pub const NAMES: [&'static str; 3] = ["keep", "strip", "reject"];
}

/// What stripping took off: how many of each string, and from how many rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stripped {
    pub rows: u64,
    pub strings: BTreeMap<String, u64>,
}

/// The reason rows are rejected with, in the manifest.
pub const REASON: &str = "special_tokens";

/// Applies `mode` to `batch`: the rows kept (with their texts stripped) and the rows rejected (as they came).
/// `stripped` counts what was taken off the rows kept here (the quality filters may still drop some).
pub fn special_tokens_batch(
    batch: RecordBatch,
    mode: SpecialTokenMode,
    tokens: &SpecialTokens,
    stripped: &mut Stripped,
) -> Result<(RecordBatch, Vec<Dropped>)> {
    if mode == SpecialTokenMode::Keep {
        return Ok((batch, Vec::new()));
    }
    super::text_columns(&batch)?; // the error naming a missing column
    let texts = RowTexts::of(&batch).expect("the text columns are there");
    let mut verdicts: Vec<Option<(&'static str, String)>> = Vec::with_capacity(batch.num_rows());
    let mut changed = false;
    let mut removed = Vec::new();
    for i in 0..batch.num_rows() {
        let mut verdict = None;
        removed.clear();
        for (field, text) in texts.row(i) {
            let left = match mode {
                SpecialTokenMode::Strip => tokens.strip_ends(text, &mut removed),
                _ => text,
            };
            if let Some(t) = tokens.first(left) {
                let inside = if mode == SpecialTokenMode::Strip { " inside the text" } else { "" };
                verdict = Some((REASON, format!("{field} holds {:?}{inside}", tokens.string(t))));
                break;
            }
        }
        if verdict.is_none() && !removed.is_empty() {
            stripped.rows += 1;
            for &t in &removed {
                *stripped.strings.entry(tokens.string(t).to_string()).or_default() += 1;
            }
            changed = true;
        }
        verdicts.push(verdict);
    }
    let (kept, dropped) = super::split(batch, verdicts)?;
    Ok((if changed { strip_columns(&kept, tokens)? } else { kept }, dropped))
}

/// `batch` with every prompt, response and turn stripped of the strings at its ends.
fn strip_columns(batch: &RecordBatch, tokens: &SpecialTokens) -> Result<RecordBatch> {
    let strip = |texts: &StringArray| -> StringArray {
        let mut removed = Vec::new();
        texts.iter().map(|t| t.map(|t| tokens.strip_ends(t, &mut removed))).collect()
    };
    let mut columns = batch.columns().to_vec();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        let column = &columns[i];
        let new: Option<ArrayRef> = match field.name().as_str() {
            schema::PROMPT | schema::RESPONSE => column.as_string_opt::<i32>().map(|t| Arc::new(strip(t)) as ArrayRef),
            schema::MESSAGES => match column.as_list_opt::<i32>() {
                Some(list) => {
                    let turns = list.values().as_struct();
                    let (fields, mut parts, nulls) = turns.clone().into_parts();
                    parts[1] = Arc::new(strip(parts[1].as_string::<i32>()));
                    let turns = StructArray::try_new(fields, parts, nulls)?;
                    let (field, offsets, _, nulls) = list.clone().into_parts();
                    Some(Arc::new(ListArray::try_new(field, offsets, Arc::new(turns), nulls)?))
                }
                None => None,
            },
            _ => None,
        };
        if let Some(new) = new {
            columns[i] = new;
        }
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}
