#!/usr/bin/env bash
# Benchmark: peak memory of selecting from 1M rows, `whet select` vs pyarrow (+ faiss for k-means) in Python.
#
#   scripts/bench-select-memory.sh [bench_select_memory.py args, e.g. --rows 1000000 --k 256]
#
# Builds (once, cached under .cache/bench/) 1M rows of T0 prompts with 384-dimensional hashing embeddings.
# A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
missing=()
for pair in pyarrow:pyarrow numpy:numpy faiss:faiss-cpu sklearn:scikit-learn; do
    if ! .venv/bin/python -c "import ${pair%%:*}" 2>/dev/null; then
        missing+=("${pair#*:}")
    fi
done
if ((${#missing[@]})); then
    .venv/bin/pip install -q "${missing[@]}"
fi

cargo build --release --bin whet
whet="${CARGO_TARGET_DIR:-target}/release/whet"

exec .venv/bin/python scripts/bench_select_memory.py --whet "$whet" "$@"
