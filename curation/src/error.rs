//! Curation errors: the dataset layer's, plus model and parameter errors that say what to do next.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dataset(#[from] whetstone_datasets::Error),
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// A parameter or input that cannot work (k > rows, wrong dimension, missing column, …).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Linfa(#[from] linfa::error::Error),
    /// A query that cannot run, in words that say why (see `sql::explain`).
    #[error("{0}")]
    Sql(String),
}

impl Error {
    pub fn model(path: &Path, message: impl Into<String>) -> Self {
        Error::Model { path: path.to_path_buf(), message: message.into() }
    }
}
