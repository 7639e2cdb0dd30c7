//! whetstone's Jupyter kernel: the stock `evcxr_jupyter` kernel (0.22), started with a configuration directory
//! of ours, so that a notebook has the whetstone toolkit in scope with no `:dep` line to write.
//!
//! Why the stock binary and not our own build of the `evcxr` crates: evcxr 0.22 compiles only with the exact
//! transitive versions of its own lock file (`cargo install --locked`; newer `salsa` breaks `ra_ap_span`), and
//! pinning those inside this workspace would hold back every other dependency. Evcxr already reads
//! everything we need from `EVCXR_CONFIG_DIR`: `init.evcxr` (commands run at start: the `:dep` on the whetstone
//! facade crate) and `prelude.rs` (code run after it: `use whetstone::prelude::*`), and it compiles in
//! `EVCXR_TMPDIR` when that is set.
//!
//! `install` writes a kernelspec named `whetstone` ("Rust (whetstone)") and copies this binary beside it; the
//! kernelspec's `argv` runs `whetstone-kernel start`, which takes a work folder ([`slots`]), sets those two
//! variables and execs `evcxr_jupyter`. `install --warm` compiles the whetstone tree once ([`warm`]) so that a
//! kernel's start does not. Nothing is downloaded: it works offline.
//!
//! The library's [`notebook`] module is what notebooks see: datasets that display as tables, charts, stage
//! runs with progress; the facade's prelude re-exports it. The installer (this module's other half, and the
//! binary) sits behind the default feature `installer`, so notebooks compile none of its dependencies.

pub mod notebook;

#[cfg(feature = "installer")]
mod install;
#[cfg(feature = "installer")]
pub mod slots;
#[cfg(feature = "installer")]
pub mod warm;

#[cfg(feature = "installer")]
pub use install::*;
