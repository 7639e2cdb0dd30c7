#!/usr/bin/env bash
# Benchmark: `whet kmeans` (k-means) vs scikit-learn KMeans (Lloyd) and faiss-cpu on the same embeddings.
#
#   scripts/bench-kmeans.sh [bench_kmeans.py args, e.g. --cases t0-hashing --ks 256 --iters 20 --repeat 3]
#
# Cases: t0-minilm (.cache/embeddings/t0-minilm.parquet, skipped if absent), t0-hashing and 200k (hashing
# embeddings, dim 384, built once with `whet embed` from ../shared/data/t0-templates and cached under
# .cache/bench/). Results: stdout and .cache/bench/kmeans-results.json. A benchmark, not a test: run it on an
# otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

bench_setup pyarrow:pyarrow numpy:numpy sklearn:scikit-learn faiss:faiss-cpu threadpoolctl:threadpoolctl
exec .venv/bin/python scripts/bench_kmeans.py --whet "$whet" "$@"
