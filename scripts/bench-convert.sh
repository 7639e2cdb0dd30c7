#!/usr/bin/env bash
# Benchmark: `whet convert` vs pyarrow (read_json + write_table, and streaming open_json) on the same JSONL.
#
#   scripts/bench-convert.sh [SIZE_MB] [extra bench_convert.py args, e.g. --repeat 5]
#
# SIZE_MB (default 1024) is the input size in MiB, built once by repeating the rows of
# ../shared/data/t0-templates/*.jsonl and cached under .cache/bench/. Results: stdout and
# .cache/bench/convert-results.json. A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

size_mb="${1:-1024}"
shift || true

bench_setup pyarrow,pyarrow.json,pyarrow.parquet:pyarrow
exec .venv/bin/python scripts/bench_convert.py --whet "$whet" --size-mb "$size_mb" "$@"
