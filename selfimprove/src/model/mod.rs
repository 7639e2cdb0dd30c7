//! A Hugging Face model folder, checked before any engine loads it: what generation and scoring need from
//! it (context length, vocabulary, end-of-sequence tokens, a tokenizer that can decode), and a content hash
//! that names exactly which weights produced a row.
//!
//! The checks turn the engine's late, obscure failures into errors that name the file and say what to do:
//! mistral.rs 0.8.1 fails deep inside loading on a tokenizer without a decoder, for example.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::folder::read_json;

pub mod gguf;
pub mod tiny;

/// config.json read and put in the layout mistral.rs 0.8.1 and the trainer read (transformers 4's): a folder
/// saved by transformers 5 keeps rope θ (and any rope scaling) under `rope_parameters`, and the number format
/// under `dtype`. Returns the config and whether it changed.
pub(crate) fn read_config(folder: &Path) -> Result<(Value, bool)> {
    let mut config = read_json(&folder.join("config.json"))?;
    let mut changed = false;
    if let Some(rope) = config.get("rope_parameters").filter(|v| v.is_object()).cloned() {
        if config.get("rope_theta").is_none_or(Value::is_null) {
            if let Some(theta) = rope.get("rope_theta").filter(|v| v.is_number()) {
                config["rope_theta"] = theta.clone();
                changed = true;
            }
        }
        let scaled = rope.get("rope_type").and_then(Value::as_str).is_some_and(|t| t != "default");
        if scaled && config.get("rope_scaling").is_none_or(Value::is_null) {
            let mut scaling = rope.clone();
            scaling.as_object_mut().expect("an object").remove("rope_theta");
            config["rope_scaling"] = scaling;
            changed = true;
        }
    }
    if config.get("torch_dtype").is_none() {
        if let Some(dtype) = config.get("dtype").cloned() {
            config["torch_dtype"] = dtype;
            changed = true;
        }
    }
    Ok((config, changed))
}

/// The local Hugging Face cache, where transformers looks: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .unwrap_or_else(|| var("HOME").unwrap_or_else(|| PathBuf::from("/")).join(".cache/huggingface/hub"))
}

/// The snapshot folder of a Hugging Face repo id (`org/name`, or `org/name@revision` with a branch, tag or commit)
/// in the local cache, as transformers resolves it offline: `models--org--name/refs/REVISION` names the commit,
/// `snapshots/COMMIT` holds the files. `None` when `name` is no repo id in the cache.
pub fn hub_snapshot(name: &Path) -> Result<Option<PathBuf>> {
    let Some(text) = name.to_str() else { return Ok(None) };
    let (repo, revision) = text.split_once('@').unwrap_or((text, "main"));
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty() || p.starts_with('.')) {
        return Ok(None);
    }
    let folder = hub_cache().join(format!("models--{}--{}", parts[0], parts[1]));
    if !folder.is_dir() {
        return Ok(None);
    }
    let commit = if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        let reference = folder.join("refs").join(revision);
        std::fs::read_to_string(&reference)
            .map_err(|_| {
                Error::Invalid(format!(
                    "{repo}: the Hugging Face cache has no revision {revision:?} ({} is missing)",
                    reference.display()
                ))
            })?
            .trim()
            .to_string()
    };
    let snapshot = folder.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(Error::Invalid(format!(
            "{repo}@{revision}: the Hugging Face cache has no snapshot {} (download it with transformers or \
             `hf download {repo}` where a network is reachable)",
            snapshot.display()
        )));
    }
    Ok(Some(snapshot))
}

/// A model that passed the checks: a Hugging Face folder, or a GGUF file (run quantised by mistral.rs).
#[derive(Debug, Clone)]
pub struct ModelFolder {
    /// The folder, or the .gguf file, as resolved from what the user named.
    pub path: PathBuf,
    /// Where config.json and the tokenizer files are: `path` for a folder; for a GGUF file, a temporary folder
    /// of the files its metadata makes ([`gguf::GgufFile::write_files`]).
    pub files: PathBuf,
    /// Set when the model is a GGUF file; the temporary folder of its files lives as long as a clone of this.
    pub gguf: Option<std::sync::Arc<tempfile::TempDir>>,
    /// `architectures[0]` of config.json, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    /// `max_position_embeddings`: prompt and response together must fit.
    pub context: usize,
    pub vocab: usize,
    /// Tokens that end a response: generation_config.json's `eos_token_id`, else config.json's.
    pub eos: Vec<u32>,
    /// xxh3-128 over the folder's file names and contents, in name order, but for [`RUN_RECORDS`]: the same
    /// weights, tokenizer and config are the same model however long they took to train.
    pub xxh3: String,
    pub tokenizer: tokenizers::Tokenizer,
}

/// `eos_token_id` as one id or a list.
fn token_ids(v: &Value) -> Vec<u32> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Value::Array(a) => a.iter().filter_map(Value::as_u64).map(|n| n as u32).collect(),
        _ => Vec::new(),
    }
}

/// What a training run writes beside the weights about itself (timings included): not part of the model, so
/// neither hashed as it nor copied into a model made from it.
pub const RUN_RECORDS: [&str; 3] = ["metrics.jsonl", "loss.svg", "whetstone-trained.json"];

impl ModelFolder {
    /// Checks and hashes the model `name`: a folder, a `.gguf` file, or a Hugging Face repo id
    /// (`org/name`, `org/name@revision`) found in the local Hugging Face cache ([`hub_snapshot`]).
    pub fn open(name: impl AsRef<Path>) -> Result<Self> {
        let name = name.as_ref();
        let path = if name.exists() { name.to_path_buf() } else { hub_snapshot(name)?.unwrap_or(name.to_path_buf()) };
        if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            let gguf = gguf::GgufFile::open(&path)?;
            let files =
                tempfile::Builder::new().prefix("whetstone-gguf-").tempdir().map_err(|e| Error::io("/tmp", e))?;
            gguf.write_files(files.path())?;
            let mut model = Self::checked(files.path(), std::slice::from_ref(&path), false)?;
            model.path = path;
            model.gguf = Some(std::sync::Arc::new(files));
            return Ok(model);
        }
        let shown = path.display();
        if !path.is_dir() {
            return Err(Error::Invalid(format!(
                "{shown}: no such model folder, GGUF file or Hugging Face repo in the local cache ({}) (a folder \
                 with config.json, tokenizer.json and *.safetensors); make a tiny one with `whet model tiny {shown} \
                 --corpus FILE`",
                hub_cache().display()
            )));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| Error::io(&path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| RUN_RECORDS.iter().any(|r| n == *r)))
            .collect();
        files.sort();
        Self::checked(&path, &files, true)
    }

    /// Checks config.json, the weights (when `weights` are asked for: `*.safetensors` among `hashed`) and the
    /// tokenizer files in `path`; the hash is over `hashed`.
    fn checked(path: &Path, hashed: &[PathBuf], weights: bool) -> Result<Self> {
        let shown = path.display();
        let config_path = path.join("config.json");
        if !config_path.is_file() {
            return Err(Error::Invalid(format!("{shown}: no config.json; is this a Hugging Face model folder?")));
        }
        let (config, _) = read_config(path)?;
        let field = |name: &str| -> Result<usize> {
            config[name].as_u64().map(|n| n as usize).ok_or_else(|| {
                Error::Invalid(format!("{}: field `{name}` is missing or not a number", config_path.display()))
            })
        };
        let context = field("max_position_embeddings")?;
        let vocab = field("vocab_size")?;
        let architecture = config["architectures"][0].as_str().unwrap_or("unknown").to_string();

        if weights && !hashed.iter().any(|p| p.extension().is_some_and(|e| e == "safetensors")) {
            return Err(Error::Invalid(format!("{shown}: no *.safetensors weights")));
        }
        let tokenizer = Self::checked_tokenizer(&path.join("tokenizer.json"))?;
        let generation_path = path.join("generation_config.json");
        let mut eos =
            if generation_path.is_file() { token_ids(&read_json(&generation_path)?["eos_token_id"]) } else { vec![] };
        if eos.is_empty() {
            eos = token_ids(&config["eos_token_id"]);
        }
        if let Some(bad) = eos.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Invalid(format!(
                "{shown}: eos_token_id {bad} is outside the vocabulary ({vocab} tokens)"
            )));
        }

        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        for file in hashed {
            let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
            hash.update(file.file_name().unwrap_or_default().as_encoded_bytes());
            hash.update(&(bytes.len() as u64).to_le_bytes());
            hash.update(&bytes);
        }
        Ok(ModelFolder {
            path: path.to_path_buf(),
            files: path.to_path_buf(),
            gguf: None,
            architecture,
            context,
            vocab,
            eos,
            xxh3: format!("{:032x}", hash.digest128()),
            tokenizer,
        })
    }

    /// Loads tokenizer.json and refuses one that cannot turn tokens back into text: without a decoder a
    /// byte-level vocabulary comes back as raw pieces (`Ġthe`), and mistral.rs fails on it.
    fn checked_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "{}: missing; generation needs the Hugging Face fast tokenizer (tokenizer.json)",
                path.display()
            )));
        }
        let json = read_json(path)?;
        let kind = |v: &Value| v["type"].as_str().unwrap_or("").to_string();
        let decoder = &json["decoder"];
        if decoder.is_null() {
            return Err(Error::Invalid(format!(
                "{}: the tokenizer has no decoder, so generated tokens cannot become text; add one that matches \
                 its pre-tokenizer (`\"decoder\": {{\"type\": \"ByteLevel\"}}` for byte-level BPE)",
                path.display()
            )));
        }
        let byte_level = |v: &Value| {
            kind(v) == "ByteLevel"
                || v["pretokenizers"].as_array().is_some_and(|a| a.iter().any(|p| kind(p) == "ByteLevel"))
                || v["decoders"].as_array().is_some_and(|a| a.iter().any(|p| kind(p) == "ByteLevel"))
        };
        if byte_level(&json["pre_tokenizer"]) && !byte_level(decoder) {
            return Err(Error::Invalid(format!(
                "{}: the pre-tokenizer is ByteLevel but the decoder is {}; generated text would come back as \
                 byte-level pieces: use `\"decoder\": {{\"type\": \"ByteLevel\"}}`",
                path.display(),
                kind(decoder)
            )));
        }
        tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Invalid(format!("{}: not a tokenizer this version can read: {e}", path.display())))
    }

    /// The folder as mistral.rs should see it: `None` when config.json is already in the layout it reads, else
    /// a temporary folder of links to this one's files with config.json put in that layout ([`read_config`]);
    /// the user's folder is never rewritten. Keep it as long as the engine reads from it.
    #[cfg(feature = "llm")]
    pub(crate) fn engine_view(&self) -> Result<Option<tempfile::TempDir>> {
        let (config, changed) = read_config(&self.files)?;
        if !changed {
            return Ok(None);
        }
        let view = tempfile::Builder::new().prefix("whetstone-model-").tempdir().map_err(|e| Error::io("/tmp", e))?;
        let source = std::fs::canonicalize(&self.path).map_err(|e| Error::io(&self.path, e))?;
        for entry in std::fs::read_dir(&source).map_err(|e| Error::io(&source, e))? {
            let name = entry.map_err(|e| Error::io(&source, e))?.file_name();
            if name != "config.json" {
                let link = view.path().join(&name);
                std::os::unix::fs::symlink(source.join(&name), &link).map_err(|e| Error::io(&link, e))?;
            }
        }
        crate::folder::write_json(&view.path().join("config.json"), &config)?;
        Ok(Some(view))
    }

    /// How the weights are stored, as manifests record it: `gguf` (run quantised) or `safetensors`.
    pub fn format(&self) -> &'static str {
        if self.gguf.is_some() {
            "gguf"
        } else {
            "safetensors"
        }
    }

    /// What the `generator` column records: the folder and its content hash.
    pub fn generator(&self) -> String {
        format!("{} xxh3:{}", self.path.display(), &self.xxh3[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny::{make_tiny_model, TinyLlama};

    fn tiny(dir: &Path) -> PathBuf {
        let corpus = dir.join("corpus.jsonl");
        let rows: String = (0..200)
            .map(|i| format!("{{\"prompt\": \"What is {i} plus {i}?\", \"response\": \"It is {}.\"}}\n", 2 * i))
            .collect();
        std::fs::write(&corpus, rows).unwrap();
        let folder = dir.join("tiny");
        make_tiny_model(&folder, &[corpus], &TinyLlama { vocab: 300, context: 64, ..Default::default() }).unwrap();
        folder
    }

    #[test]
    fn a_tiny_folder_opens_and_its_hash_follows_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        let folder = tiny(dir.path());
        let model = ModelFolder::open(&folder).unwrap();
        assert_eq!((model.context, model.architecture.as_str()), (64, "LlamaForCausalLM"));
        assert_eq!(model.eos, vec![model.tokenizer.token_to_id(crate::model::tiny::EOS).unwrap()]);
        let before = model.xxh3.clone();
        let weights = folder.join("model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&weights, bytes).unwrap();
        assert_ne!(ModelFolder::open(&folder).unwrap().xxh3, before);
    }

    #[test]
    fn bad_folders_get_errors_that_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFolder::open(dir.path().join("nowhere")).unwrap_err().to_string();
        assert!(err.contains("nowhere: no such model folder") && err.contains("whet model tiny"), "{err}");

        let folder = tiny(dir.path());
        let tokenizer = folder.join("tokenizer.json");
        let mut json: Value = serde_json::from_slice(&std::fs::read(&tokenizer).unwrap()).unwrap();
        json["decoder"] = serde_json::json!({"type": "WordPiece", "prefix": "##", "cleanup": true});
        std::fs::write(&tokenizer, serde_json::to_vec(&json).unwrap()).unwrap();
        let err = ModelFolder::open(&folder).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("decoder is WordPiece"), "{err}");
        json["decoder"] = Value::Null;
        std::fs::write(&tokenizer, serde_json::to_vec(&json).unwrap()).unwrap();
        let err = ModelFolder::open(&folder).unwrap_err().to_string();
        assert!(err.contains("has no decoder"), "{err}");

        std::fs::remove_file(folder.join("model.safetensors")).unwrap();
        let err = ModelFolder::open(&folder).unwrap_err().to_string();
        assert!(err.contains("no *.safetensors"), "{err}");
        std::fs::write(folder.join("config.json"), "{\"vocab_size\": 300}").unwrap();
        let err = ModelFolder::open(&folder).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("max_position_embeddings"), "{err}");
    }
}
