#!/usr/bin/env bash
# Benchmark: peak memory of selecting from 1M rows, `whet select` vs pyarrow (+ faiss for k-means) in Python.
#
#   scripts/bench-select-memory.sh [bench_select_memory.py args, e.g. --rows 1000000 --k 256]
#
# Builds (once, cached under .cache/bench/) 1M rows of T0 prompts with 384-dimensional hashing embeddings.
# A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

bench_setup pyarrow:pyarrow numpy:numpy faiss:faiss-cpu
exec .venv/bin/python scripts/bench_select_memory.py --whet "$whet" "$@"
