//! whetstone-selfimprove: the self-improvement loop's parts.
//!
//! - [`model`]: a model folder, checked and hashed before an engine loads it, and the tiny Llama models made
//!   here from a corpus (no weights can be downloaded on these machines).
//! - [`sampling`] and [`logprob`]: how tokens are drawn and what a token's log-probability is, defined once.
//! - [`prompt`]: what a model is given for a row, as tokens (the chat template, rendered as mistral.rs does).
//! - `engine` (feature `llm`): mistral.rs, and generation and scoring as dataset stages.
//! - [`reward`]: scores for responses, each with its reason (verifiers, code tests, likelihood, a judge).
//! - [`keep`]: which samples a reward keeps, and chosen/rejected pairs.
//! - [`train`]: the trainer on candle: LoRA adapters (PEFT layout) or all weights, schedules, merging.
//! - [`bench`]: `whet bench selection`, the evidence that diversity selection pays (or not), measured.
//! - [`rounds`]: self-improvement rounds, resumable step by step, and `whet demo` (the loop needs `llm`).
//! - [`chart`]: the one place the crate draws (SVG line charts written beside runs).
//!
//! The `llm` feature (mistral.rs, a large build) gates whole modules, never lines inside them.

pub mod bench;
pub mod chart;
#[cfg(feature = "llm")]
pub mod engine;
pub mod error;
mod folder;
pub mod keep;
pub mod logprob;
pub mod model;
pub mod prompt;
pub mod reward;
pub mod rounds;
pub mod sampling;
pub mod tasks;
pub mod train;

pub use error::{Error, Result};
pub use model::tiny::{make_tiny_model, TinyLlama, TinyModel};
pub use model::ModelFolder;
pub use sampling::Sampling;
