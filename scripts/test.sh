#!/usr/bin/env bash
# Runs every test of the workspace, as CI does. Needs only the Rust toolchain; the real data is read from
# $WHETSTONE_SHARED_DATA or ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo test --workspace --all-targets
cargo test --workspace --doc
