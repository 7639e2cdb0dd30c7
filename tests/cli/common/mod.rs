#![allow(dead_code)]
//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shared real data: `WHETSTONE_SHARED_DATA`, else `../shared/data` beside the workspace.
/// `None` (with the reason printed) only where neither exists.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("WHETSTONE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.join("README.md").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: no shared data at {} (set WHETSTONE_SHARED_DATA)", dir.display());
        None
    }
}

/// Runs `whet` with `args`.
pub fn whet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whet")).args(args).output().expect("run whet")
}

/// Runs `whet`, expecting it to fail; returns its stderr.
pub fn whet_fails(args: &[&str]) -> String {
    let out = whet(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "whet {args:?} should fail; stderr:\n{stderr}");
    stderr
}

/// Runs `whet`, expecting success; returns its stdout.
pub fn whet_ok(args: &[&str]) -> String {
    let out = whet(args);
    assert!(out.status.success(), "whet {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Files in `dir` whose names start with `.` (temporary files left behind).
pub fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect()
}
