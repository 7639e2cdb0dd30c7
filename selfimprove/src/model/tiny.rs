//! Tiny Llama models made here: a byte-level BPE tokenizer trained on a corpus with the `tokenizers` crate, and
//! random weights, written as a Hugging Face folder that mistral.rs (and whetstone's trainer) load.
//!
//! The folder holds `config.json` (LlamaForCausalLM), `model.safetensors` (f32, seeded normal(0, 0.02) weights,
//! norms at 1, an untied `lm_head`), `tokenizer.json` (ByteLevel pre-tokenizer and decoder: mistral.rs fails on
//! a WordLevel one), `tokenizer_config.json` (bos/eos/pad and a chat template, all in the vocabulary),
//! `generation_config.json`, and `whetstone-model.json`: how it was made (the spec, the corpus and its hash).
//! The same corpus and seed give the same files, byte for byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::AsArray;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::AddedToken;
use whetstone_datasets::{DatasetReader, ReadOptions};

use crate::error::{Error, Result};
use crate::folder::{write_folder, write_json};

pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
pub const PAD: &str = "<pad>";
/// Role markers of the chat template.
pub const ROLES: [&str; 3] = ["<|system|>", "<|user|>", "<|assistant|>"];

/// The chat template (Jinja, as Hugging Face tokenizers and mistral.rs read it): each turn is a role marker,
/// a newline, the content and `</s>`; a generation prompt opens the assistant's turn.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n\
{{ message['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// Head sizes mistral.rs's paged attention supports on CUDA: a model that is to run on a GPU needs one.
pub const HEAD_DIMS: [usize; 7] = [64, 80, 96, 112, 128, 192, 256];

/// The shape of a tiny Llama model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyLlama {
    /// Target vocabulary size (the trainer may stop short on a small corpus).
    pub vocab: usize,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    /// Context length (`max_position_embeddings`).
    pub context: usize,
    pub seed: u64,
}

impl Default for TinyLlama {
    fn default() -> Self {
        TinyLlama {
            vocab: 2048,
            layers: 2,
            hidden: 128,
            heads: 2,
            kv_heads: 2,
            intermediate: 352,
            context: 512,
            seed: 0,
        }
    }
}

impl TinyLlama {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// Refuses shapes that cannot load or run, saying what would.
    pub fn check(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Invalid(m));
        if self.layers == 0 || self.hidden == 0 || self.heads == 0 || self.kv_heads == 0 || self.intermediate == 0 {
            return fail("layers, hidden, heads, kv_heads and intermediate must all be at least 1".into());
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return fail(format!("hidden {} is not a multiple of heads {}", self.hidden, self.heads));
        }
        if !HEAD_DIMS.contains(&self.head_dim()) {
            return fail(format!(
                "head size hidden/heads = {}/{} = {} is not one mistral.rs's paged attention supports ({HEAD_DIMS:?}); \
                 e.g. hidden 128 with 2 heads",
                self.hidden,
                self.heads,
                self.head_dim()
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return fail(format!("heads {} is not a multiple of kv_heads {}", self.heads, self.kv_heads));
        }
        let minimum = 256 + 3 + ROLES.len();
        if self.vocab < minimum {
            return fail(format!("vocab {} is below {minimum}: the 256 bytes and the special tokens", self.vocab));
        }
        if self.context < 16 {
            return fail(format!("context {} is too short to hold a prompt and an answer", self.context));
        }
        Ok(())
    }
}

/// What `make_tiny_model` made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TinyModel {
    pub folder: PathBuf,
    pub spec: TinyLlama,
    /// The vocabulary the tokenizer ended with.
    pub vocab: usize,
    pub parameters: usize,
    pub corpus: Vec<PathBuf>,
    /// Texts the tokenizer was trained on, and their xxh3 (over the texts in order).
    pub corpus_texts: usize,
    pub corpus_xxh3: String,
    pub seconds: f64,
}

/// The texts of a corpus: each `.txt` file's non-empty lines; every other input (a file, folder or glob of
/// JSONL, Parquet, …) read as a dataset, its `prompt` and `response` texts.
pub fn corpus_texts(inputs: &[PathBuf]) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for input in inputs {
        if input.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(input).map_err(|e| Error::io(input, e))?;
            texts.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned));
            continue;
        }
        for batch in DatasetReader::open(input, ReadOptions::default())? {
            let batch = batch?;
            for column in ["prompt", "response"] {
                if let Some(strings) = batch.column_by_name(column).and_then(|c| c.as_string_opt::<i32>()) {
                    texts.extend(strings.iter().flatten().filter(|s| !s.is_empty()).map(str::to_owned));
                }
            }
        }
    }
    if texts.is_empty() {
        return Err(Error::Invalid(format!("the corpus {inputs:?} has no text to train a tokenizer on")));
    }
    Ok(texts)
}

fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Trains a byte-level BPE tokenizer (digits split one by one): every byte is in the alphabet, so any text encodes; the special tokens
/// come first (ids 0, 1, 2: `<s>`, `</s>`, `<pad>`; then the role markers).
pub fn train_tokenizer(texts: &[String], vocab: usize) -> Result<tokenizers::Tokenizer> {
    let specials: Vec<AddedToken> =
        [BOS, EOS, PAD].iter().chain(ROLES.iter()).map(|t| AddedToken::from(t.to_string(), true)).collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::from(trainer);
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    // Digits one by one (as Llama 3 and Qwen2 split them, in groups of at most 3 or 1): numbers then share
    // their parts, which a tiny model needs to learn arithmetic rather than a table of number tokens.
    let pre_tokenizer = Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]);
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_post_processor(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::new(false, true, true)));
    tokenizer.train(&mut trainer, texts.iter()).map_err(tokenizer_error)?;
    Ok(tokenizer)
}

/// Seeded random weights in the Llama layout.
fn weights(spec: &TinyLlama, vocab: usize) -> Result<(HashMap<String, Tensor>, usize)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let kv = spec.kv_heads * spec.head_dim();
    // GPT-2's initialisation: residual projections scaled down by the depth.
    let residual_std = 0.02 / (2.0 * spec.layers as f64).sqrt();
    let mut tensors = HashMap::new();
    let mut parameters = 0;
    let mut add = |name: String, shape: (usize, usize), std: f64, rng: &mut Xoshiro256PlusPlus| -> Result<()> {
        let normal = Normal::new(0f32, std as f32).expect("a positive deviation");
        let values: Vec<f32> = (0..shape.0 * shape.1).map(|_| normal.sample(rng)).collect();
        parameters += values.len();
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
        Ok(())
    };
    let h = spec.hidden;
    add("model.embed_tokens.weight".into(), (vocab, h), 0.02, &mut rng)?;
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.self_attn.q_proj.weight"), (h, h), 0.02, &mut rng)?;
        add(format!("{p}.self_attn.k_proj.weight"), (kv, h), 0.02, &mut rng)?;
        add(format!("{p}.self_attn.v_proj.weight"), (kv, h), 0.02, &mut rng)?;
        add(format!("{p}.self_attn.o_proj.weight"), (h, h), residual_std, &mut rng)?;
        add(format!("{p}.mlp.gate_proj.weight"), (spec.intermediate, h), 0.02, &mut rng)?;
        add(format!("{p}.mlp.up_proj.weight"), (spec.intermediate, h), 0.02, &mut rng)?;
        add(format!("{p}.mlp.down_proj.weight"), (h, spec.intermediate), residual_std, &mut rng)?;
    }
    add("lm_head.weight".into(), (vocab, h), 0.02, &mut rng)?;
    let mut norms = vec!["model.norm.weight".to_string()];
    for l in 0..spec.layers {
        norms.push(format!("model.layers.{l}.input_layernorm.weight"));
        norms.push(format!("model.layers.{l}.post_attention_layernorm.weight"));
    }
    for name in norms {
        parameters += h;
        tensors.insert(name, Tensor::ones(h, candle_core::DType::F32, &Device::Cpu)?);
    }
    Ok((tensors, parameters))
}

/// Makes a tiny Llama model in `folder` (which must not exist yet): the tokenizer trained on `corpus`, random
/// weights from `spec.seed`. The folder appears whole or not at all (written beside it, then renamed).
pub fn make_tiny_model(folder: &Path, corpus: &[PathBuf], spec: &TinyLlama) -> Result<TinyModel> {
    let started = Instant::now();
    spec.check()?;
    if folder.exists() {
        return Err(Error::Invalid(format!(
            "{}: already exists; remove it or choose another folder",
            folder.display()
        )));
    }
    let texts = corpus_texts(corpus)?;
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    for t in &texts {
        hash.update(t.as_bytes());
        hash.update(b"\n");
    }
    let tokenizer = train_tokenizer(&texts, spec.vocab)?;
    let vocab = tokenizer.get_vocab_size(true);
    let id =
        |t: &str| tokenizer.token_to_id(t).ok_or_else(|| Error::Tokenizer(format!("{t} is not in the vocabulary")));
    let (bos, eos, pad) = (id(BOS)?, id(EOS)?, id(PAD)?);

    let (tensors, parameters) = weights(spec, vocab)?;
    let made = TinyModel {
        folder: folder.to_path_buf(),
        spec: spec.clone(),
        vocab,
        parameters,
        corpus: corpus.to_vec(),
        corpus_texts: texts.len(),
        corpus_xxh3: format!("{:032x}", hash.digest128()),
        seconds: 0.0,
    };
    write_folder(folder, |partial| {
        tokenizer.save(partial.join("tokenizer.json"), true).map_err(tokenizer_error)?;
        candle_core::safetensors::save(&tensors, partial.join("model.safetensors"))?;
        write_json(
            &partial.join("config.json"),
            &json!({
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "vocab_size": vocab,
                "hidden_size": spec.hidden,
                "intermediate_size": spec.intermediate,
                "num_hidden_layers": spec.layers,
                "num_attention_heads": spec.heads,
                "num_key_value_heads": spec.kv_heads,
                "head_dim": spec.head_dim(),
                "max_position_embeddings": spec.context,
                "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0,
                "hidden_act": "silu",
                "tie_word_embeddings": false,
                "bos_token_id": bos,
                "eos_token_id": eos,
                "pad_token_id": pad,
                "torch_dtype": "float32",
            }),
        )?;
        write_json(
            &partial.join("tokenizer_config.json"),
            &json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": BOS,
                "eos_token": EOS,
                "pad_token": PAD,
                "add_bos_token": false,
                "add_eos_token": false,
                "model_max_length": spec.context,
                "chat_template": CHAT_TEMPLATE,
            }),
        )?;
        write_json(
            &partial.join("generation_config.json"),
            &json!({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "max_length": spec.context}),
        )?;
        // The folder's own path and the time taken stay out, so the same inputs give the same bytes.
        let mut record = serde_json::to_value(&made)?;
        if let Some(fields) = record.as_object_mut() {
            fields.remove("folder");
            fields.remove("seconds");
        }
        write_json(&partial.join("whetstone-model.json"), &json!({"made_by": "whet model tiny", "model": record}))
    })?;
    Ok(TinyModel { seconds: started.elapsed().as_secs_f64(), ..made })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(dir: &Path) -> PathBuf {
        let path = dir.join("corpus.txt");
        let lines: Vec<String> = (0..400)
            .map(|i| {
                format!(
                    "Question {i}: Tom has {} apples and buys {} more. How many apples does he have?",
                    i % 17,
                    i % 5
                )
            })
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    }

    #[test]
    fn the_shape_is_checked_before_anything_is_written() {
        let ok = TinyLlama::default();
        assert!(ok.check().is_ok());
        let e = TinyLlama { hidden: 64, ..ok.clone() }.check().unwrap_err().to_string();
        assert!(e.contains("32") && e.contains("hidden 128 with 2 heads"), "{e}");
        let e = TinyLlama { heads: 3, ..ok.clone() }.check().unwrap_err().to_string();
        assert!(e.contains("not a multiple of heads"), "{e}");
        let e = TinyLlama { vocab: 100, ..ok.clone() }.check().unwrap_err().to_string();
        assert!(e.contains("256 bytes"), "{e}");
        let e = TinyLlama { kv_heads: 3, ..ok }.check().unwrap_err().to_string();
        assert!(e.contains("kv_heads"), "{e}");
    }

    #[test]
    fn makes_a_loadable_folder_whose_tokenizer_round_trips_and_whose_seed_fixes_the_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = vec![corpus(tmp.path())];
        let spec = TinyLlama { vocab: 400, ..TinyLlama::default() };
        let made = make_tiny_model(&tmp.path().join("a"), &corpus, &spec).unwrap();
        assert!(made.vocab > 256 && made.vocab <= 400, "{}", made.vocab);
        assert_eq!(made.corpus_texts, 400);
        for f in
            ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]
        {
            assert!(made.folder.join(f).is_file(), "{f}");
        }

        let tokenizer = tokenizers::Tokenizer::from_file(made.folder.join("tokenizer.json")).unwrap();
        let text = "Tom has 3 apples. Ünïcödé and emoji 🍎 too.";
        let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "byte-level: any text round-trips");
        assert_eq!(tokenizer.token_to_id(BOS), Some(0));
        assert_eq!(tokenizer.token_to_id(EOS), Some(1));
        let chat = tokenizer.encode("<|user|>\nhi</s>", false).unwrap();
        assert_eq!(chat.get_ids()[0], tokenizer.token_to_id("<|user|>").unwrap(), "role markers are single tokens");

        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(made.folder.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["vocab_size"], made.vocab);
        assert_eq!(config["head_dim"], 64);
        let tensors = candle_core::safetensors::load(made.folder.join("model.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(tensors["model.embed_tokens.weight"].dims(), [made.vocab, 128]);
        assert_eq!(tensors["lm_head.weight"].dims(), [made.vocab, 128]);
        assert_eq!(tensors["model.layers.1.mlp.down_proj.weight"].dims(), [128, 352]);
        let count: usize = tensors.values().map(|t| t.elem_count()).sum();
        assert_eq!(count, made.parameters);

        // The same corpus and seed: the same bytes; another seed: other weights, the same tokenizer.
        let again = make_tiny_model(&tmp.path().join("b"), &corpus, &spec).unwrap();
        let other = make_tiny_model(&tmp.path().join("c"), &corpus, &TinyLlama { seed: 1, ..spec }).unwrap();
        let read = |m: &TinyModel, f: &str| std::fs::read(m.folder.join(f)).unwrap();
        for f in ["model.safetensors", "tokenizer.json", "config.json", "whetstone-model.json"] {
            assert!(read(&made, f) == read(&again, f), "{f} differs between two runs with one seed");
        }
        assert!(read(&made, "model.safetensors") != read(&other, "model.safetensors"));
        assert!(read(&made, "tokenizer.json") == read(&other, "tokenizer.json"));

        let e = make_tiny_model(&made.folder, &corpus, &TinyLlama::default()).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let empty = tmp.path().join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let e = make_tiny_model(&tmp.path().join("d"), &[empty], &TinyLlama::default()).unwrap_err().to_string();
        assert!(e.contains("no text"), "{e}");
        assert!(!tmp.path().join("d").exists());
    }
}
