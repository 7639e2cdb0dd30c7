//! Deduplication stages: a dropped row names the kept row it duplicates (`dup_of`) in the rejected rows.
//!
//! - [`exact`]: equal text once normalised;
//! - [`minhash`]: near duplicates by word-shingle Jaccard similarity (MinHash LSH);
//! - [`semantic`]: embedding cosine similarity (SemDeDup's clusters, or an HNSW graph).

pub mod exact;
pub mod minhash;
pub mod semantic;
