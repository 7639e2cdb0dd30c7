use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use comfy_table::Cell;
use whetstone::selfimprove::model::gguf::{import_gguf, WeightFormat};
use whetstone::selfimprove::train::lora;
use whetstone::selfimprove::{make_tiny_model, TinyLlama};

use crate::args::one_of;
use crate::table::{num, table};

/// Model folders: imported from GGUF files, merged with adapters, or made here.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Model,
}

#[derive(Subcommand)]
enum Model {
    /// Merge a LoRA adapter (PEFT layout) into its base: a complete model folder for the next round's engine.
    Merge {
        /// The base model folder.
        base: PathBuf,
        /// The adapter folder (adapter_config.json, adapter_model.safetensors).
        adapter: PathBuf,
        /// The folder to create.
        out: PathBuf,
    },
    /// Import a GGUF file (llama.cpp, Ollama; Llama or Qwen2) as a Hugging Face folder: weights dequantised,
    /// config, tokenizer and chat template from its metadata. transformers and PEFT load the folder too.
    Import {
        /// The .gguf file.
        gguf: PathBuf,
        /// The folder to write (replaced whole if it exists).
        out: PathBuf,
        /// Number format of the written weights.
        #[arg(long, default_value = "f32", value_parser = one_of::<WeightFormat>(&WeightFormat::NAMES))]
        dtype: WeightFormat,
    },
    /// A tiny Llama model: a byte-level BPE tokenizer trained on the corpus, random weights from the seed,
    /// written as a Hugging Face folder (config.json, model.safetensors, tokenizer.json, …) that mistral.rs loads.
    Tiny {
        /// The folder to create (it must not exist).
        out: PathBuf,
        /// Texts for the tokenizer: datasets (prompt and response columns) or .txt files (lines).
        #[arg(long, required = true, num_args = 1..)]
        corpus: Vec<PathBuf>,
        #[arg(long, default_value_t = TinyLlama::default().vocab)]
        vocab: usize,
        #[arg(long, default_value_t = TinyLlama::default().layers)]
        layers: usize,
        #[arg(long, default_value_t = TinyLlama::default().hidden)]
        hidden: usize,
        #[arg(long, default_value_t = TinyLlama::default().heads)]
        heads: usize,
        /// Key/value heads (fewer than heads: grouped-query attention).
        #[arg(long, default_value_t = TinyLlama::default().kv_heads)]
        kv_heads: usize,
        /// Width of the MLP.
        #[arg(long, default_value_t = TinyLlama::default().intermediate)]
        intermediate: usize,
        /// Context length in tokens.
        #[arg(long, default_value_t = TinyLlama::default().context)]
        context: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Model::Merge { base, adapter, out } => {
            lora::merge(&base, &adapter, &out)?;
            outln!("merged {} into {}: {}", adapter.display(), base.display(), out.display());
        }
        Model::Import { gguf, out, dtype } => {
            let made = import_gguf(&gguf, &out, dtype)?;
            let types: Vec<String> = made.tensor_types.iter().map(|(t, n)| format!("{n} {t}")).collect();
            let mut t = table(&["model", "value"]);
            t.add_row(vec![Cell::new("folder"), Cell::new(made.folder.display())]);
            t.add_row(vec![Cell::new("architecture"), Cell::new(&made.architecture)]);
            t.add_row(vec![Cell::new("parameters"), num(made.parameters as u64)]);
            t.add_row(vec![Cell::new("vocabulary"), num(made.vocab as u64)]);
            t.add_row(vec![Cell::new("tensors dequantised"), Cell::new(types.join(", "))]);
            t.add_row(vec![Cell::new("source sha256"), Cell::new(&made.sha256)]);
            t.add_row(vec![Cell::new("seconds"), Cell::new(format!("{:.1}", made.seconds))]);
            outln!("{t}");
        }
        Model::Tiny { out, corpus, vocab, layers, hidden, heads, kv_heads, intermediate, context, seed } => {
            let spec = TinyLlama { vocab, layers, hidden, heads, kv_heads, intermediate, context, seed };
            let made = make_tiny_model(&out, &corpus, &spec)?;
            let mut t = table(&["model", "value"]);
            t.add_row(vec![Cell::new("folder"), Cell::new(made.folder.display())]);
            t.add_row(vec![Cell::new("vocabulary"), num(made.vocab as u64)]);
            t.add_row(vec![Cell::new("parameters"), num(made.parameters as u64)]);
            t.add_row(vec![
                Cell::new("layers × hidden × heads"),
                Cell::new(format!("{layers} × {hidden} × {heads} (head size {})", spec.head_dim())),
            ]);
            t.add_row(vec![Cell::new("corpus texts"), num(made.corpus_texts as u64)]);
            t.add_row(vec![Cell::new("seconds"), Cell::new(format!("{:.1}", made.seconds))]);
            outln!("{t}");
        }
    }
    Ok(())
}
