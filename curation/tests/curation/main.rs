//! The crate's integration tests as one test binary.

mod minilm_reference;
mod stages;
