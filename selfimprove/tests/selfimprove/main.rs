//! The crate's integration tests as one test binary (one link instead of three): the engine and parity tests
//! need the `llm` feature.

mod engine;
mod order;
mod parity;
mod preference;
mod train;
