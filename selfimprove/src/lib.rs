//! whetstone-selfimprove: the self-improvement loop's parts. So far, [`tiny`]: tiny Llama models made here,
//! from a corpus (no weights can be downloaded on these machines), for tests, demos and benchmarks.

pub mod error;
pub mod tiny;

pub use error::{Error, Result};
pub use tiny::{make_tiny_model, TinyLlama, TinyModel};
