//! whetstone: build LLM fine-tuning datasets and improve models in rounds.
//!
//! This facade re-exports the toolkit's crates (datasets ← curation ← selfimprove); `use whetstone::prelude::*` brings the common names into
//! scope (as the notebook kernel does).

pub use whetstone_curation as curation;
pub use whetstone_datasets as datasets;
pub use whetstone_selfimprove as selfimprove;

pub use whetstone_kernel::notebook;

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The names most code and notebooks use.
pub mod prelude {
    pub use whetstone_curation::embed::{embed_dataset, Embedder, HashingEmbedder, SentenceEncoder, TextField};
    pub use whetstone_curation::filters::special_tokens::SpecialTokenMode;
    pub use whetstone_curation::pipeline::{
        ClusterStep, DecontamStep, DedupMethod, DedupStep, EmbedStep, FilterStep, Pipeline, SelectStep, Step,
    };
    pub use whetstone_curation::project::pca;
    pub use whetstone_curation::select::{Budget, Method};
    pub use whetstone_datasets::{
        convert, inspect, read_all, row_count, schema, ConvertOptions, DatasetReader, DatasetWriter, FieldMap,
        Manifest, OnError, OutputFormat, ReadOptions, SourceFormat, SpecialTokens,
    };
    pub use whetstone_kernel::notebook::{
        run, run_seeded, shared_data, sql, thousands, whet, Chart, Dataset, Show, StageDone, Table,
    };
}
