//! `install --warm`: compile the whetstone tree the way Evcxr 0.22 will, before any notebook starts.
//!
//! Evcxr builds its cell crate `ctx` with cargo in its work folder; cargo reuses a compiled dependency only if
//! the profile, `RUSTFLAGS`, target and compiler match. So this writes the same `Cargo.toml` (Evcxr's template:
//! `cdylib`, `opt-level = 2`, …, with the `:dep` line of `init.evcxr`), sets the same environment
//! (`RUSTFLAGS=-Cprefer-dynamic`, plus lld's flag or mold's wrapper when Evcxr would pick them; the rustc and
//! cargo that `rustup which` names) and runs `cargo build --target HOST`, under the workspace's optimisation
//! levels ([`profile_config`], in the folder above). The notebook test checks the result:
//! after a warm install, the kernel's start compiles none of whetstone's crates.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Evcxr's default optimisation level for the crates it compiles (`:opt 2`).
const EVCXR_OPT_LEVEL: u32 = 2;

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
opt-level = {EVCXR_OPT_LEVEL}
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

/// Cargo configuration for Evcxr's builds: the optimisation levels the whetstone workspace's dev profile gives its
/// dependencies, so the kernel compiles them as the workspace's own tests do. `None` when the crate's manifest
/// names none.
///
/// Evcxr's cell crate is the only member of its build, so by its `[profile.dev]` every crate of the tree would
/// compile at opt-level 2, the cold ones too (the template took 510 s so, 2026-12-07). Cargo reads configuration
/// from the folders above the one it runs in, and a profile there wins over a manifest's: written to the
/// kernel's `work/` folder, this holds for the template and every slot. Only dependencies get levels (the cell
/// crate keeps Evcxr's, and its `:opt`): `"*"` and the named ones as the workspace sets them, and whetstone's
/// own crates at Evcxr's. Names the kernel's tree lacks (mistral.rs) do no harm: cargo
/// matches a configuration's profile names against the tree without a warning for those that match nothing.
pub fn profile_config(whetstone: &Path) -> Result<Option<String>> {
    let read = |path: &Path| -> Result<toml::Table> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read it", path.display()))?;
        text.parse::<toml::Table>().with_context(|| format!("{}: not a Cargo manifest", path.display()))
    };
    let manifest = whetstone.join("Cargo.toml");
    let root = read(&manifest)?;
    let dev = root.get("profile").and_then(|p| p.get("dev"));
    let Some(packages) = dev.and_then(|d| d.get("package")).and_then(|p| p.as_table()) else {
        return Ok(None);
    };
    // A level is a number, or "s"/"z": written back as TOML (a JSON string is a TOML basic string).
    let level_text =
        |v: &toml::Value| v.as_integer().map(|n| n.to_string()).or_else(|| v.as_str().map(|s| json_string(s)));
    let mut levels: Vec<(String, String)> = packages
        .iter()
        .filter_map(|(name, settings)| Some((name.clone(), level_text(settings.get("opt-level")?)?)))
        .collect();
    // whetstone's own crates at Evcxr's level, as the cell crate: notebooks run their loops in the kernel (at the
    // workspace's level 1, notebook 02's embedding and clustering took 42 s more).
    let members = root.get("workspace").and_then(|w| w.get("members")).and_then(|m| m.as_array());
    let mut names: Vec<String> = root
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .into_iter()
        .collect();
    for member in members.into_iter().flatten().filter_map(|m| m.as_str()) {
        let path = whetstone.join(member).join("Cargo.toml");
        let name = read(&path)?.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()).map(str::to_owned);
        names.push(name.with_context(|| format!("{}: no package name", path.display()))?);
    }
    for name in names {
        // One table per name: a second would make the file invalid TOML.
        if !levels.iter().any(|(n, _)| *n == name) {
            levels.push((name, EVCXR_OPT_LEVEL.to_string()));
        }
    }
    let mut text = format!(
        "# Written by `whetstone-kernel install`: the optimisation levels of {}'s dev profile, for the whetstone\n\
         # tree that every cell depends on (the cell crate keeps Evcxr's level).\n",
        manifest.display()
    );
    for (name, level) in levels {
        text.push_str(&format!("[profile.dev.package.{}]\nopt-level = {level}\n", json_string(&name)));
    }
    Ok(Some(text))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
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

    #[test]
    fn the_kernels_levels_are_the_workspaces_dev_profile() {
        let text = profile_config(&crate::workspace_root()).unwrap().expect("the workspace sets levels");
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let level = |name: &str| doc["profile"]["dev"]["package"].get(name).map(|p| p["opt-level"].as_integer());
        assert_eq!(level("*"), Some(Some(0)), "{text}");
        assert_eq!(level("candle-core"), Some(Some(2)));
        assert_eq!(level("whetstone-curation"), Some(Some(2)), "whetstone's crates at Evcxr's level");
        assert_eq!(level("whetstone"), Some(Some(2)));
        assert_eq!(level("ctx"), None, "the cell crate keeps Evcxr's level");

        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("Cargo.toml"), "[package]\nname = \"x\"\n[profile.dev]\nopt-level = 1\n")
            .unwrap();
        assert_eq!(profile_config(tmp.path()).unwrap(), None, "no package levels: Evcxr's own");
        std::fs::write(tmp.path().join("Cargo.toml"), "[package\n").unwrap();
        let err = format!("{:#}", profile_config(tmp.path()).unwrap_err());
        assert!(err.contains("Cargo.toml: not a Cargo manifest"), "{err}");
    }
}
