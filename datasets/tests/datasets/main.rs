//! The datasets crate's integration tests as one test binary: the reader, and the stage runner's promises
//! (every row accounted for, whole-column stages writing the rows they keep in input order). They need
//! neither the `llm` feature nor the `whet` binary.

mod reader;
mod runner;

use std::path::{Path, PathBuf};

/// The shared real data: `WHETSTONE_SHARED_DATA`, else `../shared/data` beside the workspace.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("WHETSTONE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if dir.join("README.md").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: no shared data at {} (set WHETSTONE_SHARED_DATA)", dir.display());
        None
    }
}

/// Alpaca rows `instruction i` → `output i` for `range`, one JSON object a line.
pub fn alpaca_lines(range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{{\"instruction\": \"instruction {i}\", \"output\": \"output {i}\"}}\n")).collect()
}
