//! Files of model, adapter and checkpoint folders: JSON and safetensors read and written one way, and
//! folders that appear whole or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};

/// Reads a JSON file, naming it when it is not JSON.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", path.display())))
}

/// Reads JSON lines as values of `T`, naming the file and line of one that is not.
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Invalid(format!("{}: line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Values as JSON lines, one a line.
pub(crate) fn json_lines<T: serde::Serialize>(values: &[T]) -> Result<String> {
    let mut text = String::new();
    for v in values {
        text.push_str(&serde_json::to_string(v)?);
        text.push('\n');
    }
    Ok(text)
}

pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// A folder's `*.safetensors` files, in name order.
pub(crate) fn safetensors_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}

/// A sibling path for writing `path` whole before renaming it into place.
fn partial_path(path: &Path) -> Result<PathBuf> {
    let name =
        path.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file or folder name", path.display())))?;
    Ok(path.with_file_name(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id())))
}

/// Writes a folder whole or not at all: `fill` writes into a sibling, which then replaces `folder`.
pub(crate) fn write_folder(folder: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let partial = partial_path(folder)?;
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    if let Err(e) = fill(&partial) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if folder.exists() {
        std::fs::remove_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    }
    std::fs::rename(&partial, folder).map_err(|e| Error::io(folder, e))
}

/// Saves named tensors as safetensors.
pub(crate) fn save_tensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let map: std::collections::HashMap<&String, Tensor> = tensors.iter().map(|(k, v)| (k, v.clone())).collect();
    Ok(candle_core::safetensors::save(&map, path)?)
}

/// Loads a safetensors file's tensors onto `device`, by name.
pub(crate) fn load_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(path, device)?.into_iter().collect())
}
