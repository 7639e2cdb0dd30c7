//! The crate's integration tests as one test binary.

#[cfg(feature = "cluster")]
mod cluster;
mod minilm_reference;
#[cfg(feature = "sql")]
mod sql;
mod stages;
