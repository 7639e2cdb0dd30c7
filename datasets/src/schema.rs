//! The canonical record schema every whetstone dataset has (see DESIGN.md, "Data model").
//!
//! Core columns come first and are always present; stages add typed columns after them rather than
//! rewriting rows, so a dataset carries its own history (which cluster a row fell in, its reward, …).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

/// Stable row id: the source's own id when it has one, else a content hash (see [`crate::content_id`]).
pub const ID: &str = "id";
/// Where the row came from: the source file's stem unless the row brings its own `source`.
pub const SOURCE: &str = "source";
/// What the model is asked. For chat rows: the last user turn before the final assistant turn.
pub const PROMPT: &str = "prompt";
/// What the model should answer; null for prompt-only data. For chat rows: the final assistant turn.
pub const RESPONSE: &str = "response";
/// The whole conversation for chat data (`role`, `content` per turn); null for single-turn rows.
pub const MESSAGES: &str = "messages";
/// The source row's other fields as a JSON object, so a conversion loses nothing; null when there are none.
pub const META: &str = "meta";

/// The core columns in their order.
pub const CORE_COLUMNS: [&str; 6] = [ID, SOURCE, PROMPT, RESPONSE, MESSAGES, META];

/// Stage columns: added by later stages, typed, named once here so every stage agrees.
pub mod columns {
    use super::*;

    /// Sentence embedding, `FixedSizeList<Float32, dim>` (curation: embed).
    pub const EMBEDDING: &str = "embedding";
    /// k-means cluster of the row (curation: cluster), `UInt32`.
    pub const CLUSTER: &str = "cluster";
    /// Reward or verifier score (selfimprove: reward), `Float32`.
    pub const REWARD: &str = "reward";
    /// Why the reward is what it is (selfimprove: reward), `Utf8`.
    pub const REWARD_REASON: &str = "reward_reason";
    /// Quality score from a filter (curation), `Float32`.
    pub const QUALITY: &str = "quality";
    /// Id of the row this one duplicates (curation: dedup), `Utf8`.
    pub const DUP_OF: &str = "dup_of";
    /// Self-improvement round that produced the row, `UInt32`.
    pub const ROUND: &str = "round";
    /// Model (path + content hash) that generated the response, `Utf8`.
    pub const GENERATOR: &str = "generator";
    /// Split name (`train`, `eval`, `test`, …), `Utf8`.
    pub const SPLIT: &str = "split";
    /// Why a selection stage chose the row (method, cluster, draw), `Utf8`.
    pub const SELECTED_BY: &str = "selected_by";
    /// Id of the prompt row a generated sample answers, `Utf8` (selfimprove: generate).
    pub const PROMPT_ID: &str = "prompt_id";
    /// Index of a sample among its prompt's samples, from 0, `UInt32`.
    pub const SAMPLE: &str = "sample";
    /// The prompt row's own response (the gold answer) beside a generated one, `Utf8`.
    pub const REFERENCE: &str = "reference";
    /// Sampling parameters of a generated row (JSON), `Utf8`.
    pub const SAMPLING: &str = "sampling";
    /// Why generation stopped: `stop` (end-of-sequence or a stop string) or `length`, `Utf8`.
    pub const FINISH_REASON: &str = "finish_reason";
    /// Tokens the model was given (chat template included), `UInt32`.
    pub const PROMPT_TOKENS: &str = "prompt_tokens";
    /// Tokens of the response: generated, or scored (end-of-sequence included), `UInt32`.
    pub const RESPONSE_TOKENS: &str = "response_tokens";
    /// The generated tokens' ids, exactly as drawn (re-tokenizing the text may not give them back),
    /// `List<UInt32>`.
    pub const RESPONSE_TOKEN_IDS: &str = "response_token_ids";
    /// Natural-log probability of the response given the prompt, summed over its tokens, `Float64`.
    pub const LOG_LIKELIHOOD: &str = "log_likelihood";
    /// `log_likelihood / response_tokens`, `Float64`.
    pub const MEAN_LOG_PROB: &str = "mean_log_prob";
    /// `exp(-mean_log_prob)`, `Float64`.
    pub const PERPLEXITY: &str = "perplexity";
    /// Natural-log probability of each response token, `List<Float32>`.
    pub const TOKEN_LOG_PROBS: &str = "token_log_probs";

    /// The field of a stage column; `dim` is used only by [`EMBEDDING`].
    pub fn field(name: &str, dim: i32) -> Option<Field> {
        let data_type = match name {
            EMBEDDING => DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim),
            CLUSTER | ROUND | SAMPLE | PROMPT_TOKENS | RESPONSE_TOKENS => DataType::UInt32,
            REWARD | QUALITY => DataType::Float32,
            LOG_LIKELIHOOD | MEAN_LOG_PROB | PERPLEXITY => DataType::Float64,
            TOKEN_LOG_PROBS => DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            RESPONSE_TOKEN_IDS => DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
            DUP_OF | GENERATOR | SPLIT | SELECTED_BY | PROMPT_ID | REFERENCE | SAMPLING | FINISH_REASON
            | REWARD_REASON => DataType::Utf8,
            _ => return None,
        };
        Some(Field::new(name, data_type, true))
    }
}

/// The struct of one chat turn: `role` (`system`, `user`, `assistant`, `tool`) and `content`.
pub fn message_fields() -> Fields {
    Fields::from(vec![Field::new("role", DataType::Utf8, false), Field::new("content", DataType::Utf8, false)])
}

/// `List<Struct<role, content>>`.
pub fn messages_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(message_fields()), true)))
}

/// The core schema: what a reader produces from any source format.
pub fn core_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(ID, DataType::Utf8, false),
                Field::new(SOURCE, DataType::Utf8, false),
                Field::new(PROMPT, DataType::Utf8, false),
                Field::new(RESPONSE, DataType::Utf8, true),
                Field::new(MESSAGES, messages_type(), true),
                Field::new(META, DataType::Utf8, true),
            ]))
        })
        .clone()
}

/// True when `schema` starts with the core columns (by name and type): a whetstone dataset.
pub fn is_canonical(schema: &Schema) -> bool {
    let core = core_schema();
    core.fields().iter().all(|want| {
        schema.field_with_name(want.name()).map(|have| have.data_type() == want.data_type()).unwrap_or(false)
    })
}
