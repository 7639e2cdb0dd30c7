//! `install --warm`: compile the whetstone tree the way Evcxr 0.22 will, before any notebook starts.
//!
//! Evcxr builds its cell crate `ctx` with cargo in its work folder; cargo reuses a compiled dependency only if
//! the profile, `RUSTFLAGS`, target and compiler match. So this writes the same `Cargo.toml` (Evcxr's template:
//! `cdylib`, `opt-level = 2`, …, with the `:dep` line of `init.evcxr`), sets the same environment
//! (`RUSTFLAGS=-Cprefer-dynamic`, plus lld's flag or mold's wrapper when Evcxr would pick them; the rustc and
//! cargo that `rustup which` names) and runs `cargo build --target HOST`. The notebook test checks the result:
//! after a warm install, the kernel's start compiles none of whetstone's crates.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Evcxr 0.22's `Cargo.toml` for its cell crate (`Module::get_cargo_toml_contents`), at its default `:opt 2`.
pub fn evcxr_cargo_toml(dep_line: &str) -> String {
    format!(
        r#"
[package]
name = "ctx"
version = "1.0.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]
path = "src/lib.rs"

[profile.dev]
opt-level = 2
debug = false
strip = "debuginfo"
rpath = true
lto = false
debug-assertions = true
codegen-units = 16
panic = 'unwind'
incremental = true
overflow-checks = true

[dependencies]
{dep_line}
"#
    )
}

/// The path of a Rust tool as Evcxr finds it: `rustup which TOOL`, else on PATH.
fn tool_path(tool: &str) -> PathBuf {
    let rustup = Command::new("rustup").args(["which", tool]).output();
    if let Ok(out) = rustup {
        if out.status.success() {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    PathBuf::from(tool)
}

/// Where the toolchain's shared standard library is (`rustc --print target-libdir`).
///
/// Evcxr runs each cell from a copy of the shared object cargo built one folder up from where rustc built
/// it, so the object's relative RUNPATH to `libstd-*.so` is one level short. From a work folder under /tmp it
/// still lands (climbing past `/` stays at `/`); from one under the home folder that rustup also lives in, it
/// misses and the cell fails with "dlopen failed". `start` puts this folder on `LD_LIBRARY_PATH` instead.
pub fn target_libdir() -> Result<PathBuf> {
    let rustc = tool_path("rustc");
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir"])
        .output()
        .with_context(|| format!("{}: cannot run it", rustc.display()))?;
    if !out.status.success() {
        bail!("{} --print target-libdir failed: {}", rustc.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `tool` in a folder of PATH, if there is one.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

fn host_target(rustc: &Path) -> Result<String> {
    let out = Command::new(rustc).arg("-vV").output().with_context(|| format!("{}: cannot run it", rustc.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host target")
}

/// Compiles the whetstone dependency (`dep_line`, as in `init.evcxr`) in `dir` as Evcxr would; cargo's
/// progress goes to this process's stderr.
pub fn compile(dir: &Path, dep_line: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    std::fs::write(dir.join("Cargo.toml"), evcxr_cargo_toml(dep_line))?;
    std::fs::write(dir.join("src/lib.rs"), "")?;
    std::fs::write(dir.join(".cargo/config.toml"), "\n[net]\noffline = false\n")?;
    // Versions resolved afresh, as Evcxr resolves them: a lock file given to it does not survive its start
    // (whetstone's own lock, which mistral.rs holds at regex 1.12, came back as regex 1.13 and a rebuild).
    match std::fs::remove_file(dir.join("Cargo.lock")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let (cargo, rustc) = (tool_path("cargo"), tool_path("rustc"));
    let mut rustflags = vec!["-Cprefer-dynamic"];
    let mut command = if on_path("mold").is_some() {
        let mut c = Command::new("mold");
        c.arg("-run").arg(&cargo);
        c
    } else {
        if on_path("lld").is_some() {
            rustflags.push("-Clink-arg=-fuse-ld=lld");
        }
        Command::new(&cargo)
    };
    let status = command
        .args(["build", "--target", &host_target(&rustc)?])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", "target")
        .env("CARGO_BUILD_BUILD_DIR", "target")
        .env("RUSTC", &rustc)
        .env("RUSTFLAGS", rustflags.join(" "))
        .status()
        .with_context(|| format!("{}: cannot run it", cargo.display()))?;
    if !status.success() {
        bail!("compiling the whetstone crate in {} failed ({status}); cargo's errors are above", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cargo_toml_is_evcxrs_with_our_dependency() {
        let text = evcxr_cargo_toml("whetstone = { path = \"/w\" }");
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(doc["package"]["name"].as_str(), Some("ctx"));
        assert_eq!(doc["lib"]["crate-type"][0].as_str(), Some("cdylib"));
        assert_eq!(doc["profile"]["dev"]["opt-level"].as_integer(), Some(2));
        assert_eq!(doc["dependencies"]["whetstone"]["path"].as_str(), Some("/w"));
    }
}
