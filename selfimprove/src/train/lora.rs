//! LoRA adapters in the PEFT layout, and merging an adapter into a complete model folder.
//!
//! `adapter_config.json` holds what PEFT's `LoraConfig` reads (peft_type LORA, r, lora_alpha, target_modules,
//! the base model) and nothing else, so PEFT loads it as it is; whetstone's own record of the run (the base
//! folder's hash, the training parameters) sits beside it in `whetstone-adapter.json`.
//! `adapter_model.safetensors` holds `base_model.model.<module>.lora_A.weight` (`[r, in]`) and
//! `.lora_B.weight` (`[out, r]`) for every adapted module.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::llama::{Llama, Trainable};
use crate::error::{Error, Result};
use crate::folder::{save_tensors, write_folder, write_json};
use crate::model::RUN_RECORDS;

/// The key prefix PEFT gives a causal language model's modules.
pub const PEFT_PREFIX: &str = "base_model.model.";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// What an adapter is: its shape and the base it adapts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    pub base_model_name_or_path: String,
}

impl LoraSpec {
    pub fn trainable(&self, seed: u64) -> Trainable {
        Trainable::Lora {
            targets: self.target_modules.clone(),
            rank: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            seed,
        }
    }

    /// Reads `adapter_config.json` from an adapter folder.
    pub fn read(folder: &Path) -> Result<Self> {
        let path = folder.join(ADAPTER_CONFIG);
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let config: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", path.display())))?;
        if config["peft_type"] != "LORA" {
            return Err(Error::Invalid(format!("{}: peft_type is {}, not LORA", path.display(), config["peft_type"])));
        }
        for unsupported in ["use_dora", "use_rslora", "fan_in_fan_out"] {
            if config[unsupported].as_bool() == Some(true) {
                return Err(Error::Invalid(format!("{}: {unsupported} adapters are not supported", path.display())));
            }
        }
        let targets = match &config["target_modules"] {
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => vec![],
        };
        Ok(LoraSpec {
            r: config["r"].as_u64().unwrap_or(0) as usize,
            lora_alpha: config["lora_alpha"].as_f64().unwrap_or(0.0),
            lora_dropout: config["lora_dropout"].as_f64().unwrap_or(0.0),
            target_modules: targets,
            base_model_name_or_path: config["base_model_name_or_path"].as_str().unwrap_or("").to_string(),
        })
    }
}

/// Writes the model's adapters into `dir` in the PEFT layout (f32 tensors).
pub fn save_adapter(model: &Llama, spec: &LoraSpec, dir: &Path, record: &serde_json::Value) -> Result<()> {
    let mut tensors = BTreeMap::new();
    for (name, var) in &model.trainable {
        if !name.contains(".lora_") {
            return Err(Error::Invalid(format!("{name} is not a LoRA tensor: this model is not trained with LoRA")));
        }
        tensors.insert(format!("{PEFT_PREFIX}{name}"), var.as_tensor().to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
    }
    save_tensors(&tensors, &dir.join(ADAPTER_WEIGHTS))?;
    write_json(
        &dir.join(ADAPTER_CONFIG),
        &json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": spec.base_model_name_or_path,
            "r": spec.r,
            "lora_alpha": spec.lora_alpha,
            "lora_dropout": spec.lora_dropout,
            "target_modules": spec.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
        }),
    )?;
    write_json(&dir.join("whetstone-adapter.json"), record)
}

/// Loads `base` with the adapter in `adapter` applied (not merged: the adapters stay trainable).
pub fn load_with_adapter(base: &Path, adapter: &Path, device: &Device, dtype: DType) -> Result<(Llama, LoraSpec)> {
    let spec = LoraSpec::read(adapter)?;
    let model = Llama::load(base, device, dtype, &spec.trainable(0))?;
    let path = adapter.join(ADAPTER_WEIGHTS);
    if !path.is_file() {
        return Err(Error::Invalid(format!("{}: missing; an adapter folder holds {ADAPTER_WEIGHTS}", path.display())));
    }
    let saved = candle_core::safetensors::load(&path, device)?;
    let mut tensors = BTreeMap::new();
    for (key, t) in saved {
        let name = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key);
        // PEFT may name the adapter: `lora_A.default.weight`.
        tensors.insert(name.replace(".default.weight", ".weight"), t);
    }
    if tensors.len() != model.trainable.len() {
        return Err(Error::Invalid(format!(
            "{}: {} tensors, but adapter_config.json's targets on this base need {}",
            path.display(),
            tensors.len(),
            model.trainable.len()
        )));
    }
    model.set_trainable(&tensors)?;
    Ok((model, spec))
}

/// The number format a folder's weights are stored in (that of its first tensor).
fn stored_dtype(folder: &Path) -> Result<DType> {
    let files = crate::folder::safetensors_files(folder)?;
    let first = files.first().ok_or_else(|| Error::Invalid(format!("{}: no *.safetensors", folder.display())))?;
    let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(first)? };
    let name = tensors.tensors().first().map(|(name, _)| name.clone());
    match name {
        Some(name) => Ok(tensors.load(&name, &Device::Cpu)?.dtype()),
        None => Ok(DType::F32),
    }
}

/// Writes a complete model into `dir`: `model`'s weights (adapters merged) as model.safetensors in `base`'s
/// number format, and `base`'s other files (config, tokenizer, templates).
pub fn write_model_files(model: &Llama, base: &Path, dir: &Path) -> Result<()> {
    let dtype = stored_dtype(base)?;
    for entry in std::fs::read_dir(base).map_err(|e| Error::io(base, e))? {
        let path = entry.map_err(|e| Error::io(base, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        // The weights are written anew; a training run's own records stay with that run.
        let weights = [".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".gguf"];
        if !path.is_file() || weights.iter().any(|w| name.ends_with(w)) || RUN_RECORDS.contains(&name.as_str()) {
            continue;
        }
        std::fs::copy(&path, dir.join(&name)).map_err(|e| Error::io(&path, e))?;
    }
    let weights: BTreeMap<String, Tensor> = model
        .merged_weights()?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(dtype)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    save_tensors(&weights, &dir.join("model.safetensors"))?;
    Ok(())
}

/// `whet model merge`: `base` + the adapter in `adapter`, written as a complete folder at `out`.
pub fn merge(base: &Path, adapter: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::Invalid(format!("{}: already exists; remove it or choose another folder", out.display())));
    }
    let (model, spec) = load_with_adapter(base, adapter, &Device::Cpu, DType::F32)?;
    let base_folder = crate::ModelFolder::open(base)?;
    let record = json!({
        "made_by": "whet model merge",
        "base": base.display().to_string(),
        "base_xxh3": base_folder.xxh3,
        "adapter": adapter.display().to_string(),
        "lora": spec,
    });
    write_folder(out, |dir| {
        write_model_files(&model, base, dir)?;
        write_json(&dir.join("whetstone-trained.json"), &record)
    })
}
