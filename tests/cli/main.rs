//! The end-to-end tests of `whet` and of the library through its facade, as one test binary: one build and
//! link of the whole tree instead of one per file.

mod common;

mod bench;
#[cfg(feature = "cluster")]
mod cluster;
mod curation_cli;
mod formats;
mod malformed;
mod manners;
mod models;
mod notebook_api;
mod real_data;
mod rewards;
mod rounds;
mod smollm2;
mod sql;
mod training;
