//! whetstone-datasets: the record model every whetstone stage reads and writes.
//!
//! - [`schema`]: the canonical Arrow schema (core columns and typed stage columns);
//! - [`format`](mod@format): the layouts fine-tuning data comes in (Alpaca, prompt/completion, messages, ShareGPT,
//!   GSM8K, Self-Instruct), recognised from the fields or named with a [`FieldMap`];
//! - [`read`]: streaming readers for JSONL (plain, gzip), JSON arrays, Parquet, Arrow IPC and CSV;
//! - [`write`](mod@write): atomic writers for Parquet, Arrow IPC and the JSONL layouts trainers read;
//! - [`manifest`]: lineage and row accounting beside every dataset;
//! - [`stage`]: the one shape of a stage ([`Stage`]) and the code that runs every stage ([`run_stage`]:
//!   reading, writing, rejected rows, counting, manifests);
//! - [`convert()`] and [`inspect()`]: the stages behind `whet convert` and `whet inspect`;
//! - [`special_tokens`]: control-token strings written into text (`<|endoftext|>`, `<|im_end|>`, `[INST]`).

// A RowError names file, position, field and reason; rows fail rarely, so its size on the error path is fine.
#![allow(clippy::result_large_err)]

pub mod convert;
pub mod error;
pub mod format;
pub mod inspect;
pub mod manifest;
pub mod read;
pub mod record;
pub mod schema;
pub mod special_tokens;
pub mod stage;
pub mod write;

pub use convert::{convert, ConvertOptions};
pub use error::{Error, Position, Result, RowError};
pub use format::{FieldMap, SourceFormat};
pub use inspect::{inspect, Inspection};
pub use manifest::Manifest;
pub use read::{count_rows, read_all, row_count, DatasetReader, OnError, Progress, ReadOptions};
pub use record::{content_id, messages_at, Message, Record};
pub use special_tokens::{SpecialTokenReport, SpecialTokens};
pub use stage::{run_stage, Done, Dropped, Reordering, RowProgress, Rows, Selection, Stage, StageError};
pub use write::{DatasetWriter, OutputFormat};
