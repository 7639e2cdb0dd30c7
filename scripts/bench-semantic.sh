#!/usr/bin/env bash
# Benchmark: `whet dedup --method semantic` (hnsw_rs) vs faiss HNSW on the same embeddings, both scored for
# recall against faiss's exact range search.
#
#   scripts/bench-semantic.sh [bench_semantic.py args, e.g. --thresholds 0.95 --repeat 3]
#
# Needs .cache/embeddings/t0-minilm.parquet (`whet embed ../shared/data/t0-templates … --embedder minilm`, about
# 50 minutes on 2 cores) or --input DATASET with an `embedding` column. Results: stdout and
# .cache/bench/semantic-results.json. A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

bench_setup pyarrow:pyarrow numpy:numpy faiss:faiss-cpu
exec .venv/bin/python scripts/bench_semantic.py --whet "$whet" "$@"
