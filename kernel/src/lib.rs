//! whetstone's Jupyter kernel: the stock `evcxr_jupyter` kernel (0.22), started with a configuration directory
//! of ours, so that a notebook has the whetstone toolkit in scope with no `:dep` line to write.
//!
//! Why the stock binary and not our own build of the `evcxr` crates: evcxr 0.22 compiles only with the exact
//! transitive versions of its own lock file (`cargo install --locked`; newer `salsa` breaks `ra_ap_span`), and
//! pinning those inside this workspace would hold back every other dependency. Evcxr already reads
//! everything we need from `EVCXR_CONFIG_DIR`: `init.evcxr` (commands run at start: the `:dep` on the whetstone
//! facade crate, the compile cache) and `prelude.rs` (code run after it: `use whetstone::prelude::*`).
//!
//! `install` writes a kernelspec named `whetstone` ("Rust (whetstone)") whose `argv` runs `evcxr_jupyter` and
//! whose `env` points `EVCXR_CONFIG_DIR` at the `evcxr/` folder beside `kernel.json`. Nothing is downloaded:
//! it works offline.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

/// The kernelspec's name (the folder under `kernels/`) and what Jupyter shows.
pub const KERNEL_NAME: &str = "whetstone";
pub const DISPLAY_NAME: &str = "Rust (whetstone)";
/// Evcxr's compile cache, in MiB: the whetstone dependency tree compiles once, then cells reuse it.
pub const CACHE_MIB: u64 = 4096;

/// Where the kernelspec goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The user's Jupyter data folder (`$JUPYTER_DATA_DIR`, else `~/.local/share/jupyter`).
    User,
    /// `PREFIX/share/jupyter` (a virtual environment, for instance).
    Prefix(PathBuf),
    /// A Jupyter path folder itself (one entry of `JUPYTER_PATH`).
    JupyterPath(PathBuf),
}

impl Location {
    /// The `kernels/whetstone` folder.
    pub fn kernel_dir(&self) -> Result<PathBuf> {
        let data = match self {
            Location::User => match std::env::var_os("JUPYTER_DATA_DIR") {
                Some(dir) => PathBuf::from(dir),
                None => {
                    let home = std::env::var_os("HOME").context("HOME is not set: use --prefix or --jupyter-path")?;
                    PathBuf::from(home).join(".local/share/jupyter")
                }
            },
            Location::Prefix(prefix) => prefix.join("share/jupyter"),
            Location::JupyterPath(dir) => dir.clone(),
        };
        Ok(data.join("kernels").join(KERNEL_NAME))
    }
}

/// What `install` sets up.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub location: Location,
    /// The `evcxr_jupyter` binary the kernel runs.
    pub evcxr: PathBuf,
    /// The whetstone facade crate (the workspace root) the notebook depends on.
    pub whetstone: PathBuf,
    /// Cargo features of the facade crate to turn on.
    pub features: Vec<String>,
}

/// The workspace this kernel was built from: the facade crate notebooks depend on by default.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kernel/ sits in the workspace").to_path_buf()
}

/// `evcxr_jupyter` on PATH, if there is one.
pub fn find_evcxr() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("evcxr_jupyter")).find(|p| p.is_file())
}

/// The text of `init.evcxr`: the dependency on whetstone (the library, without the CLI's own dependencies)
/// and the compile cache.
pub fn init_evcxr(whetstone: &Path, features: &[String]) -> String {
    let path = serde_json::to_string(&whetstone.to_string_lossy()).expect("a string");
    let features = serde_json::to_string(features).expect("strings");
    format!(
        "// Written by `whetstone-kernel install`: the whetstone toolkit, compiled once and cached.\n\
         :cache {CACHE_MIB}\n\
         :dep whetstone = {{ path = {path}, default-features = false, features = {features} }}\n"
    )
}

/// The text of `prelude.rs`.
pub const PRELUDE: &str = "use whetstone::prelude::*;\n";

/// Writes the kernelspec and its Evcxr configuration; returns the kernel folder.
pub fn install(opts: &InstallOptions) -> Result<PathBuf> {
    if !opts.evcxr.is_file() {
        bail!(
            "{}: no evcxr_jupyter there; install it with `cargo install --locked evcxr_jupyter` (without --locked \
             it does not compile) or name it with --evcxr",
            opts.evcxr.display()
        );
    }
    if !opts.whetstone.join("Cargo.toml").is_file() {
        bail!("{}: not the whetstone crate (no Cargo.toml); name it with --whetstone", opts.whetstone.display());
    }
    let dir = opts.location.kernel_dir()?;
    let config = dir.join("evcxr");
    std::fs::create_dir_all(&config).with_context(|| format!("{}: cannot create it", config.display()))?;
    let evcxr = std::fs::canonicalize(&opts.evcxr)?;
    let whetstone = std::fs::canonicalize(&opts.whetstone)?;
    let spec = json!({
        "argv": [evcxr, "--control_file", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "rust",
        "interrupt_mode": "message",
        "env": {"EVCXR_CONFIG_DIR": config},
        "metadata": {"whetstone": {"crate": whetstone, "features": opts.features}},
    });
    write(&config.join("init.evcxr"), &init_evcxr(&whetstone, &opts.features))?;
    write(&config.join("prelude.rs"), PRELUDE)?;
    write(&dir.join("kernel.json"), &(serde_json::to_string_pretty(&spec)? + "\n"))?;
    Ok(dir)
}

/// Removes the kernelspec; returns the folder removed, or `None` when there was none.
pub fn uninstall(location: &Location) -> Result<Option<PathBuf>> {
    let dir = location.kernel_dir()?;
    if !dir.join("kernel.json").is_file() {
        return Ok(None);
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot remove it", dir.display()))?;
    Ok(Some(dir))
}

/// Writes a file through a temporary beside it, so a half-written kernelspec never shows.
fn write(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("{}: cannot write it", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write it", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_evcxr(dir: &Path) -> PathBuf {
        let bin = dir.join("evcxr_jupyter");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        bin
    }

    #[test]
    fn installs_a_kernelspec_that_points_evcxr_at_the_whetstone_config() {
        let tmp = tempfile::tempdir().unwrap();
        let location = Location::JupyterPath(tmp.path().join("jupyter"));
        let opts = InstallOptions {
            location: location.clone(),
            evcxr: fake_evcxr(tmp.path()),
            whetstone: workspace_root(),
            features: vec!["cuda".into()],
        };
        let dir = install(&opts).unwrap();
        assert_eq!(dir, tmp.path().join("jupyter/kernels/whetstone"));
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("kernel.json")).unwrap()).unwrap();
        assert_eq!(spec["display_name"], "Rust (whetstone)");
        assert_eq!(spec["argv"][1], "--control_file");
        assert_eq!(spec["argv"][2], "{connection_file}");
        let config = PathBuf::from(spec["env"]["EVCXR_CONFIG_DIR"].as_str().unwrap());
        assert_eq!(config, dir.join("evcxr"));
        let init = std::fs::read_to_string(config.join("init.evcxr")).unwrap();
        let root = std::fs::canonicalize(workspace_root()).unwrap();
        assert!(init.contains(&format!(":dep whetstone = {{ path = \"{}\"", root.display())), "{init}");
        assert!(init.contains("default-features = false"), "notebooks skip the CLI's dependencies: {init}");
        assert!(init.contains("features = [\"cuda\"]") && init.contains(":cache 4096"), "{init}");
        assert_eq!(std::fs::read_to_string(config.join("prelude.rs")).unwrap(), PRELUDE);
        // Installing again replaces it; uninstall removes it, once.
        install(&opts).unwrap();
        assert_eq!(uninstall(&location).unwrap(), Some(dir.clone()));
        assert!(!dir.exists());
        assert_eq!(uninstall(&location).unwrap(), None);
    }

    #[test]
    fn a_missing_evcxr_says_how_to_get_it() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InstallOptions {
            location: Location::Prefix(tmp.path().to_path_buf()),
            evcxr: tmp.path().join("nowhere/evcxr_jupyter"),
            whetstone: workspace_root(),
            features: Vec::new(),
        };
        let e = install(&opts).unwrap_err().to_string();
        assert!(e.contains("cargo install --locked evcxr_jupyter"), "{e}");
        assert!(!tmp.path().join("share").exists(), "nothing written");
    }

    #[test]
    fn locations_follow_jupyter_conventions() {
        let p = Location::Prefix("/opt/venv".into()).kernel_dir().unwrap();
        assert_eq!(p, PathBuf::from("/opt/venv/share/jupyter/kernels/whetstone"));
        let j = Location::JupyterPath("/tmp/jp".into()).kernel_dir().unwrap();
        assert_eq!(j, PathBuf::from("/tmp/jp/kernels/whetstone"));
    }
}
