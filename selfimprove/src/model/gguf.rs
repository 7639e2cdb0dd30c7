//! GGUF files (llama.cpp, Ollama) imported as Hugging Face folders that every stage, transformers and PEFT
//! load: `whet model import FILE.gguf OUT`.
//!
//! - config.json from the file's metadata, in transformers 4's layout (what mistral.rs 0.8.1 reads);
//! - model.safetensors: every tensor dequantised by candle (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the
//!   K-quants), the query and key rows of a Llama put back in Hugging Face order;
//! - tokenizer.json built from the file's vocabulary, merges and token types as transformers builds it from a
//!   GGUF, so both give the same ids; tokenizer_config.json with the chat template; generation_config.json;
//! - whetstone-import.json: the source file, its SHA-256 and what was converted.
//!
//! llama.cpp's converter permutes the rows of `q_proj` and `k_proj` of a Llama so its rotary embedding can
//! rotate adjacent pairs; Hugging Face's rotates the two halves of each head. Qwen2 files are not permuted.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value as Meta};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::folder::{save_tensors, write_folder, write_json};

/// The number format of imported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    #[default]
    F32,
    Bf16,
}

impl WeightFormat {
    pub const NAMES: [&'static str; 2] = ["f32", "bf16"];

    fn dtype(self) -> DType {
        match self {
            WeightFormat::F32 => DType::F32,
            WeightFormat::Bf16 => DType::BF16,
        }
    }
}

/// What an import wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub folder: PathBuf,
    /// `general.architecture`: llama or qwen2.
    pub architecture: String,
    pub parameters: usize,
    /// How many tensors of each GGUF type were dequantised.
    pub tensor_types: BTreeMap<String, usize>,
    pub vocab: usize,
    pub sha256: String,
    pub seconds: f64,
}

/// The architectures an import knows: their Hugging Face class and whether llama.cpp permuted q and k.
const ARCHITECTURES: [(&str, &str, bool); 2] =
    [("llama", "LlamaForCausalLM", true), ("qwen2", "Qwen2ForCausalLM", false)];

/// ggml's type ids and names, for naming a type candle cannot read.
const GGML_TYPES: [(u32, &str); 32] = [
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (4, "Q4_2"),
    (5, "Q4_3"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (39, "MXFP4"),
];

/// The ggml types candle dequantises (it reads Q8_1, 9, too, but cannot dequantise it).
const DEQUANTISED: [u32; 14] = [0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15, 30];

fn ggml_type_name(id: u32) -> String {
    GGML_TYPES.iter().find(|(i, _)| *i == id).map_or_else(|| format!("type {id}"), |(_, n)| n.to_string())
}

/// A GGUF file whose header was read and checked: every tensor inside the file, a known architecture, and the
/// Hugging Face files its metadata makes.
pub(crate) struct GgufFile {
    file: std::fs::File,
    length: u64,
    content: Content,
    pub architecture: String,
    /// Whether llama.cpp permuted the query and key rows (Llama, not Qwen2).
    permuted: bool,
    pub config: Value,
    tokenizer: TokenizerFiles,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display();
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let length = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(Error::Invalid(format!(
                "{shown}: not a GGUF file (it starts with {:?}, a GGUF file with \"GGUF\")",
                String::from_utf8_lossy(&magic[..(length as usize).min(4)])
            )));
        }
        file.rewind().map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut file).map_err(|e| header_error(path, &e))?;
        check_lengths(path, &content, length)?;

        let meta = Metadata { path, content: &content };
        let architecture = meta.string("general.architecture")?;
        let Some(&(_, class, permuted)) = ARCHITECTURES.iter().find(|(a, _, _)| *a == architecture) else {
            return Err(Error::Invalid(format!(
                "{shown}: the architecture is {architecture:?}; whetstone reads {} GGUF files",
                ARCHITECTURES.map(|a| a.0).join(" and ")
            )));
        };
        let tokenizer = meta.tokenizer()?;
        let mut config = meta.config(&architecture, class, tokenizer.vocab)?;
        config["tie_word_embeddings"] = json!(!content.tensor_infos.contains_key("output.weight"));
        Ok(GgufFile { file, length, content, architecture, permuted, config, tokenizer })
    }

    /// The file's SHA-256, as model hubs list it.
    fn sha256(&mut self, path: &Path) -> Result<String> {
        let mut hasher = sha2::Sha256::new();
        self.file.rewind().map_err(|e| Error::io(path, e))?;
        std::io::copy(&mut self.file, &mut hasher).map_err(|e| Error::io(path, e))?;
        Ok(format!("{:x}", hasher.finalize()))
    }

    /// Writes config.json, the tokenizer files and generation_config.json into `dir`: what a stage needs beside
    /// the weights.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join("config.json"), &self.config)?;
        write_json(&dir.join("tokenizer.json"), &self.tokenizer.json)?;
        write_json(&dir.join("tokenizer_config.json"), &self.tokenizer.config)?;
        write_json(&dir.join("generation_config.json"), &self.tokenizer.generation)
    }
}

/// Imports the GGUF file at `path` as a Hugging Face folder `out` (written whole or not at all).
pub fn import_gguf(path: &Path, out: &Path, format: WeightFormat) -> Result<Imported> {
    let started = std::time::Instant::now();
    let dtype = format.dtype();
    let shown = path.display();
    let mut gguf = GgufFile::open(path)?;
    let heads = gguf.config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv_heads = gguf.config["num_key_value_heads"].as_u64().unwrap_or(1) as usize;

    let mut tensor_types = BTreeMap::<String, usize>::new();
    let mut tensors = BTreeMap::new();
    let mut names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
    names.sort();
    for name in names {
        let info = &gguf.content.tensor_infos[&name];
        let hf = hf_name(&name).ok_or_else(|| {
            Error::Invalid(format!("{shown}: tensor {name} has no Hugging Face counterpart that an import knows"))
        })?;
        let quantized = info.read(&mut gguf.file, gguf.content.tensor_data_offset, &Device::Cpu)?;
        *tensor_types.entry(ggml_name(quantized.dtype())).or_default() += 1;
        let mut weight = quantized.dequantize(&Device::Cpu)?;
        if gguf.permuted && name.ends_with("attn_q.weight") {
            weight = unpermute(&weight, heads)?;
        } else if gguf.permuted && name.ends_with("attn_k.weight") {
            weight = unpermute(&weight, kv_heads)?;
        }
        tensors.insert(hf, weight.to_dtype(dtype)?);
    }
    gguf.config["torch_dtype"] = json!(if dtype == DType::BF16 { "bfloat16" } else { "float32" });
    let imported = Imported {
        folder: out.to_path_buf(),
        architecture: gguf.architecture.clone(),
        parameters: tensors.values().map(Tensor::elem_count).sum(),
        tensor_types,
        vocab: gguf.tokenizer.vocab,
        sha256: gguf.sha256(path)?,
        seconds: 0.0,
    };
    write_folder(out, |dir| {
        save_tensors(&tensors, &dir.join("model.safetensors"))?;
        gguf.write_files(dir)?;
        let source = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let record = json!({"source": source, "bytes": gguf.length, "sha256": imported.sha256,
            "tensor_types": imported.tensor_types, "dtype": gguf.config["torch_dtype"]});
        write_json(&dir.join("whetstone-import.json"), &record)?;
        // Checked as every stage checks a folder before it is put in place.
        crate::ModelFolder::open(dir).map(|_| ())
    })?;
    Ok(Imported { seconds: started.elapsed().as_secs_f64(), ..imported })
}

/// ggml's name of a type candle read (`Q4_K`, where candle's own is `Q4K`).
fn ggml_name(dtype: candle_core::quantized::GgmlDType) -> String {
    let name = format!("{dtype:?}");
    match name.strip_suffix('K') {
        Some(stem) if !stem.ends_with('_') => format!("{stem}_K"),
        _ => name,
    }
}

/// A header candle could not read, explained: a type it has no kernel for (named, with its tensor), or a file
/// that ends early.
fn header_error(path: &Path, e: &candle_core::Error) -> Error {
    let shown = path.display();
    let text = e.to_string();
    if text.contains("unknown dtype") {
        if let Ok(Some((tensor, id))) = first_unreadable_type(path) {
            let supported: Vec<String> = DEQUANTISED.iter().map(|&t| ggml_type_name(t)).collect();
            return Error::Invalid(format!(
                "{shown}: tensor {tensor} is of type {} ({id}), which cannot be dequantised here; supported: {}",
                ggml_type_name(id),
                supported.join(", ")
            ));
        }
    }
    if text.contains("failed to fill whole buffer") || text.contains("UnexpectedEof") {
        return Error::Invalid(format!("{shown}: the file ends inside its header: truncated (a partial download?)"));
    }
    Error::Invalid(format!("{shown}: not a GGUF file this version reads: {text}"))
}

/// Every tensor's data must lie inside the file, in a type that can be dequantised.
fn check_lengths(path: &Path, content: &Content, length: u64) -> Result<()> {
    for (name, info) in &content.tensor_infos {
        // candle reads Q8_1 (an intermediate type of llama.cpp's kernels) but cannot dequantise it.
        if info.ggml_dtype == candle_core::quantized::GgmlDType::Q8_1 {
            return Err(Error::Invalid(format!(
                "{}: tensor {name} is of type Q8_1 (9), which cannot be dequantised here",
                path.display()
            )));
        }
        let bytes = (info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        let end = content.tensor_data_offset + info.offset + bytes;
        if end > length {
            return Err(Error::Invalid(format!(
                "{}: truncated: tensor {name} ends at byte {end}, but the file has {length} bytes (a partial \
                 download?)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Walks the header for the first tensor of a type candle cannot dequantise: (name, type id).
fn first_unreadable_type(path: &Path) -> std::io::Result<Option<(String, u32)>> {
    use std::io::BufReader;
    let mut r = BufReader::new(std::fs::File::open(path)?);
    fn u32_(r: &mut impl Read) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64_(r: &mut impl Read) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn string(r: &mut impl Read) -> std::io::Result<String> {
        let n = u64_(r)? as usize;
        let mut b = vec![0u8; n];
        r.read_exact(&mut b)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    // Skips one metadata value of type `t`.
    fn skip(r: &mut BufReader<std::fs::File>, t: u32) -> std::io::Result<()> {
        let fixed = match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return string(r).map(drop),
            9 => {
                let inner = u32_(r)?;
                for _ in 0..u64_(r)? {
                    skip(r, inner)?;
                }
                return Ok(());
            }
            _ => return Err(std::io::Error::other(format!("metadata type {t}"))),
        };
        r.seek_relative(fixed)
    }
    let _magic = u32_(&mut r)?;
    if u32_(&mut r)? < 2 {
        return Ok(None);
    }
    let (tensors, entries) = (u64_(&mut r)?, u64_(&mut r)?);
    for _ in 0..entries {
        string(&mut r)?;
        let t = u32_(&mut r)?;
        skip(&mut r, t)?;
    }
    for _ in 0..tensors {
        let name = string(&mut r)?;
        let dims = u32_(&mut r)?;
        for _ in 0..dims {
            u64_(&mut r)?;
        }
        let id = u32_(&mut r)?;
        u64_(&mut r)?;
        if !DEQUANTISED.contains(&id) {
            return Ok(Some((name, id)));
        }
    }
    Ok(None)
}

/// llama.cpp's tensor names as Hugging Face's.
fn hf_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            layer.parse::<usize>().ok()?;
            let (module, kind) = part.rsplit_once('.')?;
            let hf = match module {
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf}.{kind}")
        }
    })
}

/// Undoes llama.cpp's permutation of a query or key projection (`[heads · head_dim, hidden]`): within each head,
/// rows were interleaved as (pair, half); Hugging Face keeps them as (half, pair).
fn unpermute(weight: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, columns) = weight.dims2()?;
    let half = rows / heads / 2;
    Ok(weight.reshape((heads, half, 2, columns))?.transpose(1, 2)?.contiguous()?.reshape((rows, columns))?)
}

/// The file's tokenizer as Hugging Face files.
struct TokenizerFiles {
    json: Value,
    config: Value,
    generation: Value,
    vocab: usize,
}

/// Typed reads of a GGUF file's metadata that name the file and key when one is missing.
struct Metadata<'a> {
    path: &'a Path,
    content: &'a Content,
}

impl Metadata<'_> {
    fn get(&self, key: &str) -> Result<&Meta> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::Invalid(format!("{}: the GGUF metadata has no `{key}`", self.path.display())))
    }

    fn wrong(&self, key: &str, e: candle_core::Error) -> Error {
        Error::Invalid(format!("{}: GGUF metadata `{key}`: {e}", self.path.display()))
    }

    fn string(&self, key: &str) -> Result<String> {
        self.get(key)?.to_string().cloned().map_err(|e| self.wrong(key, e))
    }

    fn number(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|n| n as u64))
            .map_err(|e| self.wrong(key, e))
    }

    /// A float as the file's f32 prints shortest (1e-5, not 9.999999747378752e-6).
    fn float(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        let f = v.to_f32().map(|f| format!("{f}").parse().unwrap_or(f as f64)).or_else(|_| v.to_f64());
        f.map_err(|e| self.wrong(key, e))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        let values = self.get(key)?.to_vec().map_err(|e| self.wrong(key, e))?;
        values.iter().map(|v| v.to_string().cloned().map_err(|e| self.wrong(key, e))).collect()
    }

    /// config.json, in transformers 4's layout.
    fn config(&self, architecture: &str, class: &str, vocab: usize) -> Result<Value> {
        let key = |k: &str| format!("{architecture}.{k}");
        let hidden = self.number(&key("embedding_length"))?;
        let heads = self.number(&key("attention.head_count"))?;
        let kv_heads = self.number(&key("attention.head_count_kv")).unwrap_or(heads);
        let head_dim = self.number(&key("rope.dimension_count")).unwrap_or(hidden / heads.max(1));
        if self.content.metadata.contains_key(&key("rope.scaling.type")) {
            return Err(Error::Invalid(format!(
                "{}: the file scales its rotary embedding ({}); whet model import supports plain rotary \
                 embeddings only",
                self.path.display(),
                key("rope.scaling.type")
            )));
        }
        let token = |k: &str| self.number(&format!("tokenizer.ggml.{k}")).ok();
        let mut config = json!({
            "architectures": [class],
            "model_type": architecture,
            "hidden_size": hidden,
            "intermediate_size": self.number(&key("feed_forward_length"))?,
            "num_hidden_layers": self.number(&key("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.number(&key("context_length"))?,
            "rms_norm_eps": self.float(&key("attention.layer_norm_rms_epsilon"))?,
            "rope_theta": self.float(&key("rope.freq_base")).unwrap_or(10_000.0),
            "rope_scaling": null,
            "vocab_size": vocab,
            "bos_token_id": token("bos_token_id"),
            "eos_token_id": token("eos_token_id"),
            "pad_token_id": token("padding_token_id"),
            "initializer_range": 0.02,
            "use_cache": true,
        });
        if architecture == "llama" {
            config["attention_bias"] = json!(false);
            config["mlp_bias"] = json!(false);
        } else {
            config["use_sliding_window"] = json!(false);
        }
        Ok(config)
    }

    /// tokenizer.json and its companions, as transformers builds them from a GGUF file: byte-level BPE from
    /// the vocabulary and merges, control tokens special, user-defined tokens added, and the pre-tokenizer's
    /// split pattern by `tokenizer.ggml.pre` (GPT-2's where transformers has none of its own).
    fn tokenizer(&self) -> Result<TokenizerFiles> {
        let shown = self.path.display();
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Invalid(format!(
                "{shown}: the tokenizer is {model:?} (tokenizer.ggml.model); whet model import builds byte-level \
                 BPE (\"gpt2\") tokenizers, as Llama 3, SmolLM2 and Qwen2 files carry"
            )));
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match self.content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .and_then(|a| a.iter().map(Meta::to_i32).collect())
                .map_err(|e| self.wrong("tokenizer.ggml.token_type", e))?,
            None => vec![1; tokens.len()],
        };
        let alphabet = byte_alphabet();
        let spelled: std::collections::HashSet<char> = alphabet.iter().copied().collect();
        let in_alphabet = |t: &str| t.chars().all(|c| spelled.contains(&c));
        let mut vocab = serde_json::Map::new();
        for (id, token) in tokens.iter().enumerate() {
            let token =
                if in_alphabet(token) { token.clone() } else { token.bytes().map(|b| alphabet[b as usize]).collect() };
            vocab.insert(token, json!(id));
        }
        // 3 = control (special), 4 = user-defined (added, not special). One spelled outside the byte alphabet is
        // not a key of the vocabulary (llama.cpp mislabelled it, or stored its text decoded): added, it would get
        // an id past the embeddings, so it is skipped, as transformers skips it.
        let added: Vec<Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, &k))| (k == 3 || k == 4) && in_alphabet(t))
            .map(|(id, (t, &k))| {
                json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": k == 3})
            })
            .collect();
        let pre = self.string("tokenizer.ggml.pre").unwrap_or_default();
        let pre_tokenizer = match split_pattern(&pre) {
            Some(pattern) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
            None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
        };
        let flag = |k: &str| self.content.metadata.get(k).and_then(|v| v.to_bool().ok()).unwrap_or(false);
        let (add_bos, add_eos) = (flag("tokenizer.ggml.add_bos_token"), flag("tokenizer.ggml.add_eos_token"));
        let id = |k: &str| self.number(&format!("tokenizer.ggml.{k}")).ok().map(|n| n as usize);
        let text = |i: Option<usize>| i.and_then(|i| tokens.get(i)).cloned();
        let (bos, eos, pad, unk) =
            (id("bos_token_id"), id("eos_token_id"), id("padding_token_id"), id("unknown_token_id"));
        let bos_added = add_bos.then(|| text(bos).zip(bos)).flatten();
        let eos_added = add_eos.then(|| text(eos).zip(eos)).flatten();
        let post_processor = if bos_added.is_none() && eos_added.is_none() {
            Value::Null
        } else {
            let mut single = Vec::new();
            let mut specials = serde_json::Map::new();
            let mut push = |(token, index): (String, usize), single: &mut Vec<Value>| {
                single.push(json!({"SpecialToken": {"id": token, "type_id": 0}}));
                specials.insert(token.clone(), json!({"id": token, "ids": [index], "tokens": [token]}));
            };
            if let Some(b) = bos_added {
                push(b, &mut single);
            }
            single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
            if let Some(e) = eos_added {
                push(e, &mut single);
            }
            let mut pair = single.clone();
            pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
            json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
        };
        let json = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges},
        });
        let mut config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": add_bos,
            "add_eos_token": add_eos,
            "bos_token": text(bos),
            "eos_token": text(eos),
            "pad_token": text(pad),
            "unk_token": text(unk),
            "clean_up_tokenization_spaces": false,
            "model_max_length": self.number(&format!("{}.context_length", self.string("general.architecture")?)).ok(),
        });
        if let Some(template) = self.content.metadata.get("tokenizer.chat_template") {
            config["chat_template"] =
                json!(template.to_string().map_err(|e| self.wrong("tokenizer.chat_template", e))?);
        }
        // Instruct files often end a turn with a token of their own (Llama 3's <|eot_id|>): generation stops at it too.
        let mut stops: Vec<usize> = eos.into_iter().collect();
        for key in ["eot_token_id", "eom_token_id"] {
            if let Some(t) = id(key).filter(|t| !stops.contains(t)) {
                stops.push(t);
            }
        }
        let generation = json!({"bos_token_id": bos, "eos_token_id": stops, "pad_token_id": pad});
        Ok(TokenizerFiles { json, config, generation, vocab: tokens.len() })
    }
}

/// GPT-2's byte alphabet: byte `b` is spelled `alphabet[b]` (printable bytes as themselves, the rest shifted
/// past 255), as byte-level BPE vocabularies are written.
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("a byte")
            } else {
                next += 1;
                char::from_u32(next - 1).expect("below 512")
            }
        })
        .collect()
}

/// The split pattern transformers uses for a `tokenizer.ggml.pre` (its `GGUF_PRE_TOKENIZER_SPLITS`, transformers
/// 5.25); for any other (`smollm` and `gpt-2` among them) it keeps GPT-2's byte-level split, and so does the
/// import, so both give the same ids. llama.cpp splits digits off first for `smollm` (as SmolLM2's own
/// tokenizer does); the two differ on a space run before a digit ("  12").
fn split_pattern(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
        r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const GPT4O: &str = concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3),
        "tekken" => Some(TEKKEN),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2),
        "qwen35" => Some(QWEN35),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => Some(GPT4O),
        _ => None,
    }
}
