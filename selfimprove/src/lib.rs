//! whetstone-selfimprove: the self-improvement loop's parts.
//!
//! - [`tiny`]: tiny Llama models made here, from a corpus (no weights can be downloaded on these machines).
//! - [`model`]: a model folder, checked and hashed before an engine loads it.
//! - [`sampling`] and [`logprob`]: how tokens are drawn and what a token's log-probability is, defined once.
//! - [`prompt`]: what a model is given for a row, as tokens (the chat template, rendered as mistral.rs does).
//! - [`reward`]: scores for responses, each with its reason (verifiers of final answers, combinations).
//! - [`train`]: the trainer on candle: LoRA adapters (PEFT layout) or all weights, schedules, merging.
//! - `engine`, `generate`, `score` (feature `llm`): generation and scoring with mistral.rs, as dataset stages.
//! - [`bench`]: `whet bench selection`, the evidence that diversity selection pays (or not), measured.
//! - [`rounds`]: self-improvement rounds, resumable step by step, and `whet demo` (the loop needs `llm`).

pub mod bench;
pub mod error;
mod folder;
pub mod logprob;
pub mod model;
pub mod prompt;
pub mod reward;
pub mod sampling;
pub mod tasks;
pub mod tiny;
pub mod train;

#[cfg(feature = "llm")]
pub mod engine;
#[cfg(feature = "llm")]
pub mod generate;
pub mod rounds;

pub use error::{Error, Result};
pub use model::ModelFolder;
pub use sampling::Sampling;
pub use tiny::{make_tiny_model, TinyLlama, TinyModel};
