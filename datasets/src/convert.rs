//! The convert stage: any input layout and container to a whetstone dataset in any output layout.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format::FieldMap;
use crate::manifest::Manifest;
use crate::read::{OnError, Progress, ReadOptions};
use crate::special_tokens::{SpecialTokenReport, SpecialTokenScan, SpecialTokens};
use crate::stage::{run_stage, Rows, Stage};
use crate::write::OutputFormat;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConvertOptions {
    /// Output layout; `None` takes it from the output's file name.
    pub format: Option<OutputFormat>,
    pub map: FieldMap,
    pub on_error: OnError,
}

/// Converts `input` (file, directory or glob) to `output`, writes the manifest beside it, and returns it.
/// `on_progress` is called once with the reader's progress handle (for a progress bar).
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    on_progress: impl FnOnce(Progress),
) -> Result<Manifest> {
    let stage = Convert { opts, input, output };
    let read = ReadOptions { map: opts.map.clone(), on_error: opts.on_error, ..Default::default() };
    Ok(run_stage(&stage, input, output, read, |bytes, _| on_progress(bytes))?.manifest)
}

struct Convert<'a> {
    opts: &'a ConvertOptions,
    input: &'a Path,
    output: &'a Path,
}

/// What converting found: the special-token strings in the texts, which `whet convert` keeps and warns of.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConvertResults {
    pub special_tokens: SpecialTokenReport,
}

impl Stage for Convert<'_> {
    type Results = ConvertResults;
    type Error = crate::Error;

    fn name(&self) -> &str {
        "convert"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "input": self.input,
            "output": self.output,
            "format": self.opts.format,
            "map": self.opts.map,
            "on_error": self.opts.on_error,
        })
    }

    fn format(&self) -> Option<OutputFormat> {
        self.opts.format
    }

    fn run(&self, rows: &mut Rows) -> Result<ConvertResults> {
        let known = SpecialTokens::known();
        let mut scan = SpecialTokenScan::new(&known, 1);
        rows.map(|batch| {
            scan.add(&batch);
            Ok(batch)
        })?;
        Ok(ConvertResults { special_tokens: scan.finish() })
    }
}
