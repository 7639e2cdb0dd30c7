//! Which files an input names (a file, a folder or a glob), what container each is, and its content hash.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Container;
use crate::error::{Error, Result};

const INPUT_EXTENSIONS: [&str; 10] =
    ["jsonl", "json", "ndjson", "gz", "parquet", "arrow", "ipc", "feather", "csv", "tsv"];

/// Expands an input: a file, a directory (every data file in it, sorted) or a glob pattern.
pub fn resolve_inputs(spec: &Path) -> Result<Vec<PathBuf>> {
    let is_data = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        !name.starts_with('.')
            && !name.ends_with(".manifest.json")
            && p.extension().and_then(|e| e.to_str()).is_some_and(|e| INPUT_EXTENSIONS.contains(&e))
    };
    if spec.is_file() {
        return Ok(vec![spec.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = if spec.is_dir() {
        std::fs::read_dir(spec)
            .map_err(|e| Error::io(spec, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_data(p))
            .collect()
    } else {
        let pattern = spec.to_string_lossy();
        if !pattern.contains(['*', '?', '[']) {
            return Err(Error::Usage(format!("{}: no such file or directory", spec.display())));
        }
        glob::glob(&pattern)
            .map_err(|e| Error::Usage(format!("{pattern}: not a valid glob pattern: {e}")))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file() && is_data(p))
            .collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no data files found (looked for .{})",
            spec.display(),
            INPUT_EXTENSIONS.join(", .")
        )));
    }
    Ok(files)
}

/// The source name a file gives its rows: its name without data extensions (`train.jsonl.gz` → `train`).
pub fn file_stem(path: &Path) -> String {
    let mut name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    while let Some((head, ext)) = name.rsplit_once('.') {
        if !INPUT_EXTENSIONS.contains(&ext) || head.is_empty() {
            break;
        }
        name = head.to_string();
    }
    name
}

pub(super) fn container_of(path: &Path) -> Result<(Container, bool)> {
    let mut magic = [0u8; 4];
    let n = File::open(path).and_then(|mut f| f.read(&mut magic)).map_err(|e| Error::io(path, e))?;
    let magic = &magic[..n];
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    Ok(if magic.starts_with(&[0x1f, 0x8b]) || ext == "gz" {
        (Container::Json, true)
    } else if magic == b"PAR1" || ext == "parquet" {
        (Container::Parquet, false)
    } else if magic == b"ARRO" || matches!(ext, "arrow" | "ipc" | "feather") {
        (Container::Arrow, false)
    } else if matches!(ext, "csv" | "tsv") {
        (Container::Csv, false)
    } else {
        (Container::Json, false)
    })
}

/// Counts and hashes the bytes read through it.
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hasher: xxhash_rust::xxh3::Xxh3,
    pub(super) bytes: u64,
    pub(super) progress: Arc<AtomicU64>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The size and xxh3-128 of a file's bytes, as manifests record inputs; `progress` counts the bytes read.
pub fn hash_file(path: &Path, progress: Arc<AtomicU64>) -> Result<(u64, String)> {
    let mut r = HashingReader {
        inner: File::open(path).map_err(|e| Error::io(path, e))?,
        hasher: Default::default(),
        bytes: 0,
        progress,
    };
    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| Error::io(path, e))?;
    Ok((r.bytes, format!("{:032x}", r.hasher.digest128())))
}
