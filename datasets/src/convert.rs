//! The convert stage: any input layout and container to a whetstone dataset in any output layout.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format::FieldMap;
use crate::manifest::Manifest;
use crate::read::{OnError, Progress, ReadOptions};
use crate::stage::StageRun;
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
    let run = StageRun {
        stage: "convert",
        parameters: serde_json::json!({
            "input": input,
            "output": output,
            "format": opts.format,
            "map": opts.map,
            "on_error": opts.on_error,
        }),
        input,
        output,
        format: opts.format,
        read: ReadOptions { map: opts.map.clone(), on_error: opts.on_error },
    };
    run.map(|bytes, _| on_progress(bytes), Ok)
}
