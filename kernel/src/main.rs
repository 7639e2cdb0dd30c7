//! `whetstone-kernel install | uninstall`: the Jupyter kernelspec for notebooks with whetstone in scope.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use whetstone_kernel::{
    find_evcxr, install, prepare_start, uninstall, workspace_root, InstallOptions, Installed, Location, DISPLAY_NAME,
};

#[derive(Parser)]
#[command(name = "whetstone-kernel", version, about = "The whetstone Jupyter kernel (Evcxr with whetstone in scope)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Where {
    /// Into the user's Jupyter data folder (the default).
    #[arg(long, conflicts_with_all = ["prefix", "jupyter_path"])]
    user: bool,
    /// Into PREFIX/share/jupyter (e.g. a virtual environment).
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// Into this Jupyter path folder (one entry of JUPYTER_PATH).
    #[arg(long, conflicts_with = "prefix")]
    jupyter_path: Option<PathBuf>,
}

impl Where {
    fn location(&self) -> Location {
        match (&self.prefix, &self.jupyter_path) {
            (Some(p), _) => Location::Prefix(p.clone()),
            (_, Some(j)) => Location::JupyterPath(j.clone()),
            _ => Location::User,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Write the kernelspec `whetstone` ("Rust (whetstone)").
    Install {
        #[command(flatten)]
        to: Where,
        /// The evcxr_jupyter binary (default: the one on PATH).
        #[arg(long)]
        evcxr: Option<PathBuf>,
        /// The whetstone crate notebooks depend on (default: the checkout this kernel was built from).
        #[arg(long)]
        whetstone: Option<PathBuf>,
        /// Cargo features of whetstone to turn on in notebooks (repeat, or separate with commas).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// Compile the whetstone crate now (minutes, once), so that kernels start in seconds.
        #[arg(long)]
        warm: bool,
    },
    /// Compile the whetstone crate for an installed kernel again (after changing the crate or the toolchain).
    Warm {
        #[command(flatten)]
        at: Where,
    },
    /// Run the kernel (Jupyter calls this, from the kernelspec).
    #[command(hide = true)]
    Start {
        #[arg(long)]
        kernel_dir: PathBuf,
        connection_file: PathBuf,
    },
    /// Remove the kernelspec.
    Uninstall {
        #[command(flatten)]
        from: Where,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Install { to, evcxr, whetstone, features, warm } => {
            let evcxr = evcxr.or_else(find_evcxr).context(
                "no evcxr_jupyter on PATH: install it with `cargo install --locked evcxr_jupyter` or name it with --evcxr",
            )?;
            let opts = InstallOptions {
                location: to.location(),
                evcxr,
                whetstone: whetstone.unwrap_or_else(workspace_root),
                features,
                kernel_exe: std::env::current_exe().context("cannot find this program's own path")?,
            };
            let dir = install(&opts)?;
            println!("installed the kernel \"{DISPLAY_NAME}\" in {}", dir.display());
            if warm {
                warm_kernel(&dir)?;
            }
        }
        Command::Warm { at } => warm_kernel(&at.location().kernel_dir()?)?,
        Command::Uninstall { from } => match uninstall(&from.location())? {
            Some(dir) => println!("removed {}", dir.display()),
            None => println!("no whetstone kernel at {}", from.location().kernel_dir()?.display()),
        },
        Command::Start { kernel_dir, connection_file } => start(&kernel_dir, &connection_file)?,
    }
    Ok(())
}

fn warm_kernel(dir: &std::path::Path) -> Result<()> {
    let installed = Installed::read(dir)?;
    println!("compiling the whetstone crate for notebooks, as Evcxr will (once; minutes on a cold machine) …");
    let started = Instant::now();
    let reset = installed.warm()?;
    println!("compiled in {:.0} s: kernels start without compiling it", started.elapsed().as_secs_f64());
    if reset > 0 {
        println!("{reset} idle work folder(s) emptied: they start from the fresh build");
    }
    Ok(())
}

/// Takes a work slot and becomes `evcxr_jupyter`, keeping the slot's lock open across exec.
fn start(kernel_dir: &std::path::Path, connection_file: &std::path::Path) -> Result<()> {
    let (installed, slot) = prepare_start(kernel_dir, |from, to| {
        eprintln!("whetstone kernel: copying the compiled crates of {} to {}", from.display(), to.display())
    })?;
    if !slot.warm {
        eprintln!(
            "whetstone kernel: slot {} has nothing compiled yet; this start compiles the whetstone crate (minutes). \
             `whetstone-kernel warm` does it ahead of time.",
            slot.index
        );
    }
    exec_evcxr(&installed, &slot, connection_file)
}

#[cfg(unix)]
fn exec_evcxr(
    installed: &Installed,
    slot: &whetstone_kernel::slots::Slot,
    connection_file: &std::path::Path,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // Rust opens files close-on-exec; the lock must outlive this process image, so the kernel inherits it.
    // SAFETY: fcntl on a descriptor this process owns and keeps open.
    if unsafe { libc::fcntl(slot.lock.as_raw_fd(), libc::F_SETFD, 0) } == -1 {
        return Err(std::io::Error::last_os_error()).context("cannot pass the slot's lock to the kernel");
    }
    // See warm::target_libdir for why the cells need this.
    let mut library_path = vec![whetstone_kernel::warm::target_libdir()?];
    library_path.extend(std::env::var_os("LD_LIBRARY_PATH").iter().flat_map(std::env::split_paths));
    let error = std::process::Command::new(&installed.evcxr)
        .env("LD_LIBRARY_PATH", std::env::join_paths(library_path)?)
        .arg("--control_file")
        .arg(connection_file)
        .env("EVCXR_CONFIG_DIR", installed.dir.join("evcxr"))
        .env("EVCXR_TMPDIR", &slot.dir)
        .exec();
    Err(error).with_context(|| format!("{}: cannot run it", installed.evcxr.display()))
}
