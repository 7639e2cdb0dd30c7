//! Installing the kernel: the kernelspec, its Evcxr configuration, and what `start` and `warm` read back.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{slots, warm};
use serde_json::json;

/// The kernelspec's name (the folder under `kernels/`) and what Jupyter shows.
pub const KERNEL_NAME: &str = "whetstone";
pub const DISPLAY_NAME: &str = "Rust (whetstone)";
/// The name of this binary's copy in the kernel folder.
const KERNEL_EXE: &str = "whetstone-kernel";

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
    /// This program, copied into the kernel folder: the kernelspec runs the copy's `start`.
    pub kernel_exe: PathBuf,
}

/// The workspace this kernel was built from: the facade crate notebooks depend on by default.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kernel/ sits in the workspace").to_path_buf()
}

/// `evcxr_jupyter` on PATH, if there is one.
pub fn find_evcxr() -> Option<PathBuf> {
    warm::on_path("evcxr_jupyter")
}

/// The `:dep` line's right-hand side: the whetstone library, without the CLI's own dependencies.
pub fn dep_config(whetstone: &Path, features: &[String]) -> String {
    let path = serde_json::to_string(&whetstone.to_string_lossy()).expect("a string");
    let features = serde_json::to_string(features).expect("strings");
    format!("{{ path = {path}, default-features = false, features = {features} }}")
}

/// The text of `init.evcxr`. Evcxr's own compile cache (`:cache`) stays off: see [`slots`](crate::slots) for why.
pub fn init_evcxr(whetstone: &Path, features: &[String]) -> String {
    format!(
        "// Written by `whetstone-kernel install`: the whetstone toolkit as a dependency of every cell.\n\
         :dep whetstone = {}\n",
        dep_config(whetstone, features)
    )
}

/// The text of `prelude.rs`. Its binding makes Evcxr's rust-analyzer do its first type inference over the
/// whetstone tree (several seconds) while the kernel starts, rather than in the notebook's first cell.
pub const PRELUDE: &str = "use whetstone::prelude::*;\n\
                           let whetstone_version: &str = whetstone::VERSION;\n";

/// What `install` recorded in the kernelspec's metadata, read back by `start` and `warm`.
#[derive(Debug, Clone)]
pub struct Installed {
    pub dir: PathBuf,
    pub evcxr: PathBuf,
    pub whetstone: PathBuf,
    pub features: Vec<String>,
}

impl Installed {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("kernel.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read it; run `whetstone-kernel install`", path.display()))?;
        let spec: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let meta = &spec["metadata"]["whetstone"];
        let text_of = |key: &str| {
            meta[key]
                .as_str()
                .map(PathBuf::from)
                .with_context(|| format!("{}: no metadata.whetstone.{key}; install again", path.display()))
        };
        let features = meta["features"].as_array().into_iter().flatten();
        Ok(Installed {
            dir: dir.to_path_buf(),
            evcxr: text_of("evcxr")?,
            whetstone: text_of("crate")?,
            features: features.filter_map(|f| f.as_str().map(str::to_owned)).collect(),
        })
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Compiles the template slot (see [`slots`](crate::slots)), holding its lock meanwhile, then empties the idle slots so
    /// they start from it; returns how many it emptied.
    pub fn warm(&self) -> Result<usize> {
        let template = slots::template_dir(&self.work_dir());
        let _lock = slots::lock(&template)?;
        let dep_line = format!("whetstone = {}", dep_config(&self.whetstone, &self.features));
        write_profile(&self.work_dir(), &self.whetstone)?;
        warm::compile(&template, &dep_line)?;
        slots::reset_idle(&self.work_dir())
    }
}

/// Writes the kernelspec, its Evcxr configuration and the kernel's copy of this program; returns the folder.
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
    if let Some(project) = enclosing_cargo_project(&dir) {
        bail!(
            "{}: inside the cargo project {}, whose manifest cargo would take Evcxr's crate to be part of; \
             install the kernel outside it (--user, or a --jupyter-path elsewhere)",
            dir.display(),
            project.display()
        );
    }
    let config = dir.join("evcxr");
    std::fs::create_dir_all(&config).with_context(|| format!("{}: cannot create it", config.display()))?;
    let evcxr = std::fs::canonicalize(&opts.evcxr)?;
    let whetstone = std::fs::canonicalize(&opts.whetstone)?;
    let dir = std::fs::canonicalize(&dir)?;
    let exe = dir.join(KERNEL_EXE);
    copy_executable(&opts.kernel_exe, &exe)?;
    let spec = json!({
        "argv": [exe, "start", "--kernel-dir", dir, "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "rust",
        "interrupt_mode": "message",
        "metadata": {"whetstone": {"crate": whetstone, "features": opts.features, "evcxr": evcxr}},
    });
    write(&config.join("init.evcxr"), &init_evcxr(&whetstone, &opts.features))?;
    write(&config.join("prelude.rs"), PRELUDE)?;
    write(&dir.join("kernel.json"), &(serde_json::to_string_pretty(&spec)? + "\n"))?;
    write_profile(&dir.join("work"), &whetstone)?;
    Ok(dir)
}

/// What `start` does before it becomes Evcxr: the slot it took and the environment to run Evcxr with.
pub fn prepare_start(dir: &Path, on_seed: impl FnOnce(&Path, &Path)) -> Result<(Installed, slots::Slot)> {
    let installed = Installed::read(dir)?;
    if !installed.evcxr.is_file() {
        bail!(
            "{}: evcxr_jupyter is gone; install it again (`cargo install --locked evcxr_jupyter`) or run \
             `whetstone-kernel install --evcxr PATH`",
            installed.evcxr.display()
        );
    }
    let slot = slots::acquire(&installed.work_dir(), on_seed)?;
    Ok((installed, slot))
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

/// Writes (or removes) the Cargo configuration above the slots: see [`warm::profile_config`].
fn write_profile(work: &Path, whetstone: &Path) -> Result<()> {
    let path = work.join(".cargo").join("config.toml");
    match warm::profile_config(whetstone)? {
        Some(text) => {
            std::fs::create_dir_all(work.join(".cargo"))?;
            write(&path, &text)
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    }
}

/// Writes a file atomically, so a half-written kernelspec never shows.
fn write(path: &Path, text: &str) -> Result<()> {
    Ok(whetstone_datasets::write::write_atomic(path, text.as_bytes())?)
}

/// The nearest folder above `dir` that holds a `Cargo.toml`, if any.
fn enclosing_cargo_project(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    absolute.ancestors().skip(1).find(|a| a.join("Cargo.toml").is_file()).map(Path::to_path_buf)
}

/// Copies the kernel program through a temporary beside it, executable.
fn copy_executable(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).with_context(|| format!("{} → {}: cannot copy it", from.display(), tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&tmp, to).with_context(|| format!("{}: cannot write it", to.display()))?;
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
    fn installs_a_kernelspec_that_starts_evcxr_with_the_whetstone_config() {
        let tmp = tempfile::tempdir().unwrap();
        let location = Location::JupyterPath(tmp.path().join("jupyter"));
        let opts = InstallOptions {
            location: location.clone(),
            evcxr: fake_evcxr(tmp.path()),
            whetstone: workspace_root(),
            features: vec!["cuda".into()],
            kernel_exe: fake_evcxr(tmp.path()),
        };
        let dir = install(&opts).unwrap();
        assert_eq!(dir, std::fs::canonicalize(tmp.path().join("jupyter/kernels/whetstone")).unwrap());
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("kernel.json")).unwrap()).unwrap();
        assert_eq!(spec["display_name"], "Rust (whetstone)");
        let argv: Vec<&str> = spec["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let exe = dir.join("whetstone-kernel");
        assert_eq!(argv, [exe.to_str().unwrap(), "start", "--kernel-dir", dir.to_str().unwrap(), "{connection_file}"]);
        assert!(exe.is_file(), "the kernel runs its own copy of this program");
        let installed = Installed::read(&dir).unwrap();
        assert_eq!(installed.evcxr, std::fs::canonicalize(tmp.path().join("evcxr_jupyter")).unwrap());
        assert_eq!(installed.features, ["cuda"]);
        let init = std::fs::read_to_string(dir.join("evcxr/init.evcxr")).unwrap();
        let root = std::fs::canonicalize(workspace_root()).unwrap();
        assert_eq!(installed.whetstone, root);
        assert!(init.contains(&format!(":dep whetstone = {{ path = \"{}\"", root.display())), "{init}");
        assert!(init.contains("default-features = false"), "notebooks skip the CLI's dependencies: {init}");
        assert!(init.contains("features = [\"cuda\"]") && !init.contains(":cache"), "{init}");
        assert_eq!(std::fs::read_to_string(dir.join("evcxr/prelude.rs")).unwrap(), PRELUDE);
        // The slots' builds take the workspace's optimisation levels from the folder above them.
        let profile = std::fs::read_to_string(dir.join("work/.cargo/config.toml")).unwrap();
        assert!(profile.contains("[profile.dev.package.\"candle-core\"]\nopt-level = 2"), "{profile}");

        // A start takes the first slot; a second kernel meanwhile the next.
        let (_, first) = prepare_start(&dir, |_, _| {}).unwrap();
        let (_, second) = prepare_start(&dir, |_, _| {}).unwrap();
        assert_eq!((first.index, second.index), (0, 1));
        assert_eq!(first.dir, dir.join("work/slot-0"));
        drop((first, second));

        // Installing again replaces it; uninstall removes it (work folders too), once.
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
            kernel_exe: tmp.path().join("whetstone-kernel"),
        };
        let e = install(&opts).unwrap_err().to_string();
        assert!(e.contains("cargo install --locked evcxr_jupyter"), "{e}");
        assert!(!tmp.path().join("share").exists(), "nothing written");
    }

    #[test]
    fn refuses_a_location_inside_a_cargo_project() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        let opts = InstallOptions {
            location: Location::JupyterPath(tmp.path().join("target/jupyter")),
            evcxr: fake_evcxr(tmp.path()),
            whetstone: workspace_root(),
            features: Vec::new(),
            kernel_exe: fake_evcxr(tmp.path()),
        };
        let e = install(&opts).unwrap_err().to_string();
        assert!(e.contains("inside the cargo project") && e.contains("--user"), "{e}");
    }

    #[test]
    fn locations_follow_jupyter_conventions() {
        let p = Location::Prefix("/opt/venv".into()).kernel_dir().unwrap();
        assert_eq!(p, PathBuf::from("/opt/venv/share/jupyter/kernels/whetstone"));
        let j = Location::JupyterPath("/tmp/jp".into()).kernel_dir().unwrap();
        assert_eq!(j, PathBuf::from("/tmp/jp/kernels/whetstone"));
    }
}
