//! With the `cuda` feature, says plainly when nvcc is missing, before the CUDA kernels' own build scripts
//! fail deep inside with less helpful messages.

fn main() {
    // Without `cuda` nothing here depends on the environment, so a changed PATH (a notebook kernel's, say)
    // does not rebuild the crate.
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    println!("cargo:rerun-if-env-changed=PATH");
    let from_root = std::env::var_os("CUDA_ROOT").map(|r| std::path::Path::new(&r).join("bin/nvcc"));
    let nvcc = from_root.filter(|p| p.exists()).unwrap_or_else(|| "nvcc".into());
    if !std::process::Command::new(&nvcc).arg("--version").output().is_ok_and(|o| o.status.success()) {
        panic!(
            "the `cuda` feature needs nvcc (a CUDA toolkit, 11.4-13.2), and there is none on PATH or in \
             $CUDA_ROOT/bin; scripts/build-cuda.sh installs one from PyPI and builds whet for NVIDIA GPUs"
        );
    }
}
