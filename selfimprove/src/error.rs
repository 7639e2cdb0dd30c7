use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter or input that cannot work, with what to do instead.
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Datasets(#[from] whetstone_datasets::Error),
    #[error(transparent)]
    Curation(#[from] whetstone_curation::Error),
    /// The inference engine (mistral.rs) failed.
    #[error("{0}")]
    Engine(String),
    /// The caller stopped a long run (it can be resumed).
    #[error("{0}")]
    Stopped(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
