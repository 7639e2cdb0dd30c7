//! whetstone-curation: from a large instruction dataset, pick a subset that is diverse, clean and
//! representative. Every stage reads and writes whetstone datasets and adds typed columns.
//!
//! - [`embed`]: sentence embeddings (BERT on candle, or TF-IDF feature hashing).

pub mod cluster;
pub mod embed;
pub mod error;
pub mod filter;
pub mod minhash;
pub mod pipeline;
pub mod project;
pub mod select;
pub mod semantic;
pub mod stages;
pub mod vector;

pub use embed::{Embedder, HashingEmbedder, SentenceEncoder};
pub use error::{Error, Result};
