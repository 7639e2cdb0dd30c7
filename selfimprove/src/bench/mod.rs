//! Benchmarks that measure what whetstone's stages do to a model, not only how fast they run.
//!
//! - [`skills`]: a synthetic, verifiable, multi-skill instruction pool shaped like real instruction data.
//! - [`selection`]: `whet bench selection`: does diversity selection pay? Each selection method picks a
//!   subset of the pool under one budget; the same tiny model is trained on each subset the same way and
//!   evaluated per skill.
//! - [`preference`]: `whet bench preference`: does learning from rejected samples pay? SFT on kept samples,
//!   SFT + DPO, a reward model instead of the verifier, and the unfiltered control, over seeds.
//! - [`order`]: `whet bench order`: does the order of the same rows matter? Random, easy-to-hard and
//!   skill-it orders of one random draw from the pool, over seeds, with two random orders as the noise.

pub mod order;
pub mod preference;
pub mod selection;
pub mod skills;
