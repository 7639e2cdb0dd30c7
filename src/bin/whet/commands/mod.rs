//! One file per `whet` command: its arguments (clap `Args`, whose doc comment is the command's help) and a
//! `run` that calls the library and prints what it returns.

pub mod bench;
pub mod cluster;
pub mod convert;
pub mod curate;
pub mod decontam;
pub mod dedup;
pub mod demo;
pub mod embed;
pub mod filter;
pub mod generate;
pub mod head;
pub mod inspect;
pub mod judge;
pub mod keep;
pub mod kmeans;
pub mod model;
pub mod order;
pub mod reward;
pub mod rounds;
pub mod score;
pub mod select;
pub mod sql;
pub mod train;
