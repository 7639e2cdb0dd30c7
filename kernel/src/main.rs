//! `whetstone-kernel install | uninstall`: the Jupyter kernelspec for notebooks with whetstone in scope.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use whetstone_kernel::{find_evcxr, install, uninstall, workspace_root, InstallOptions, Location, DISPLAY_NAME};

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
    },
    /// Remove the kernelspec.
    Uninstall {
        #[command(flatten)]
        from: Where,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Install { to, evcxr, whetstone, features } => {
            let evcxr = evcxr.or_else(find_evcxr).context(
                "no evcxr_jupyter on PATH: install it with `cargo install --locked evcxr_jupyter` or name it with --evcxr",
            )?;
            let opts = InstallOptions {
                location: to.location(),
                evcxr,
                whetstone: whetstone.unwrap_or_else(workspace_root),
                features,
            };
            let dir = install(&opts)?;
            println!("installed the kernel \"{DISPLAY_NAME}\" in {}", dir.display());
        }
        Command::Uninstall { from } => match uninstall(&from.location())? {
            Some(dir) => println!("removed {}", dir.display()),
            None => println!("no whetstone kernel at {}", from.location().kernel_dir()?.display()),
        },
    }
    Ok(())
}
