//! Errors that tell the user where the bad input is (file, line or row, field) and what to do next.

use std::fmt;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in an input a row sits: a line of a text file, or a row of a columnar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// 1-based line of a JSONL / JSON file.
    Line(u64),
    /// 0-based row of a Parquet, Arrow or CSV file (CSV: data rows after the header).
    Row(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// Why one row could not be read. With `--on-error skip` these are counted and recorded; with `fail` the
/// first one stops the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub path: PathBuf,
    pub position: Position,
    /// The source field at fault, when one is.
    pub field: Option<String>,
    /// A short, stable reason key for counting (`invalid_json`, `missing_field`, …).
    pub kind: &'static str,
    pub message: String,
    /// The row as its source had it (invalid UTF-8 replaced), kept for the rejected-rows file.
    pub row: Option<String>,
}

impl RowError {
    /// One line of a rejected-rows file: where, why, and the row itself.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "path": self.path,
            "reason": self.kind,
            "message": self.message,
        });
        let (key, n) = match self.position {
            Position::Line(n) => ("line", n),
            Position::Row(n) => ("row", n),
        };
        v[key] = n.into();
        if let Some(f) = &self.field {
            v["field"] = f.as_str().into();
        }
        if let Some(r) = &self.row {
            v["text"] = r.as_str().into();
        }
        v
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.position)?;
        if let Some(field) = &self.field {
            write!(f, ": field \"{field}\"")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}\n  hint: fix the row, or pass --on-error skip to skip bad rows and record them in the manifest")]
    Row(Box<RowError>),
    /// A whole file is unreadable: corrupt compression or footer, empty, unknown layout.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The request itself is wrong (bad path, bad option); the message says what to do.
    #[error("{0}")]
    Usage(String),
    /// Our own bug: an invariant whetstone keeps did not hold.
    #[error("internal error: {0}; please report this")]
    Internal(String),
    /// A stage's own error (embedding, selection, …), as that stage said it.
    #[error("{0}")]
    Stage(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Error::File { path: path.to_path_buf(), message: message.into() }
    }
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}
