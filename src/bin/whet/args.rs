//! Arguments several commands share, and the parser that turns a name into one of the library's enums.

use std::path::Path;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde::de::DeserializeOwned;
use whetstone::datasets::{FieldMap, OnError, ReadOptions};
use whetstone::selfimprove::engine::{Backend, Engine, EngineOptions, PromptMode};
use whetstone::selfimprove::ModelFolder;

use crate::progress::Bar;

/// A library enum from its name (as its serde form spells it): an unknown name is a clap error that lists
/// `names`, so no command matches strings by hand.
pub fn one_of<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|name| serde_json::from_value::<T>(serde_json::Value::String(name)))
}

// How to read the input (no doc comment: a flattened group's would replace the command's own).
#[derive(clap::Args)]
pub struct ReadArgs {
    /// Name the source field of a role, e.g. --map prompt=question --map response=answer.
    /// Roles: id, source, prompt, input, response, messages, system.
    #[arg(long = "map", value_name = "ROLE=FIELD")]
    pub map: Vec<String>,
    /// What to do with a row that cannot be read: fail (stop at the first, naming file, line and field) or
    /// skip (count it and record its reason in the manifest).
    #[arg(long, default_value = "fail", value_parser = one_of::<OnError>(&OnError::NAMES))]
    pub on_error: OnError,
}

impl ReadArgs {
    pub fn options(&self) -> anyhow::Result<ReadOptions> {
        Ok(ReadOptions { map: FieldMap::parse(&self.map)?, on_error: self.on_error, ..Default::default() })
    }
}

// How the engine (mistral.rs) runs a model.
#[derive(clap::Args)]
pub struct EngineArgs {
    /// chat (through the model's chat template) or raw (the prompt text as it is).
    #[arg(long, default_value = "chat", value_parser = one_of::<PromptMode>(&PromptMode::NAMES))]
    pub mode: PromptMode,
    /// Sequences decoded together [default: 64 on the CPU, 256 on a GPU; mistral.rs on the CPU: 1, around a
    /// mistral.rs 0.8.1 bug].
    #[arg(long)]
    pub batch: Option<usize>,
    /// What runs the model: whetstone (its own batched CPU decoder: Llama-family folders, f32), mistral.rs
    /// (GPUs, GGUF files, bf16), or auto (whetstone's where it can).
    #[arg(long, default_value = "auto", value_parser = one_of::<Backend>(&Backend::NAMES))]
    pub engine: Backend,
    /// Run on the CPU even in a build with the `cuda` feature.
    #[arg(long)]
    pub cpu: bool,
    /// auto (f32 on the CPU, bf16 on GPUs that have it), f32, bf16 or f16.
    #[arg(long, default_value = "auto", value_parser = EngineOptions::DTYPES)]
    pub dtype: String,
    /// Show mistral.rs's own log (loading, device, memory) on stderr.
    #[arg(long)]
    pub engine_log: bool,
    /// Paged attention on the GPU (off: mistral.rs 0.8.1's paged scheduler recomputes sequences whose
    /// length differs from the shortest one's at every step).
    #[arg(long)]
    pub paged_attention: bool,
}

impl EngineArgs {
    /// Loads `model` into the engine, with a spinner while it loads.
    pub fn load(&self, model: &Path) -> anyhow::Result<Engine> {
        let folder = ModelFolder::open(model)?;
        let cpu = self.cpu || EngineOptions::default().cpu;
        let options = EngineOptions {
            cpu,
            max_batch: self.batch.unwrap_or(EngineOptions::on(cpu).max_batch),
            dtype: self.dtype.clone(),
            log: self.engine_log,
            backend: self.engine,
            paged_attention: self.paged_attention,
        };
        let _spinner = Bar::spinner(format!("loading {}", model.display()));
        Ok(Engine::load(folder, options)?)
    }
}
