//! whetstone-curation: from a large instruction dataset, pick a subset that is diverse, clean and
//! representative. Every stage reads and writes whetstone datasets and adds typed columns.
//!
//! Each folder is named for what its stages do; every stage implements `whetstone_datasets::Stage`, so
//! reading, writing, row counts and manifests are the runner's, not the stage's:
//! - [`filters`]: heuristic quality filters (length, repetition, symbols, refusals);
//! - [`dedup`]: exact, MinHash and semantic deduplication;
//! - [`decontam`]: n-gram overlap with evaluation sets;
//! - [`embed`]: sentence embeddings (BERT on candle, or TF-IDF feature hashing);
//! - [`cluster`]: k-means (Lloyd, Yinyang bounds, mini-batch) and the cluster stage;
//! - [`select`]: random, RS2, kMQ, k-center, Deita and iterative selection, coverage metrics, the select stage;
//! - [`pipeline`]: the steps with their parameters, and a pipeline file of them (`whet curate`);
//! - [`project`], [`vector`]: PCA for charts, and the distance kernels;
//! - `sql` (feature `sql`): SQL over datasets with DataFusion, whetstone's functions as UDFs.

pub mod cluster;
pub mod decontam;
pub mod dedup;
pub mod embed;
pub mod error;
pub mod filters;
pub(crate) mod gemm_bf16;
pub mod pipeline;
pub mod project;
pub mod select;
#[cfg(feature = "sql")]
pub mod sql;
pub mod vector;

pub use embed::{Embedder, HashingEmbedder, SentenceEncoder};
pub use error::{Error, Result};
