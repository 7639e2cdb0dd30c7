#!/usr/bin/env bash
# Benchmark: `whet curate` on one machine vs `whet curate --cluster` on a loopback Ballista cluster of 1 and 2
# `whet cluster executor` processes (exact dedup, MinHash dedup, k-means), and MinHash dedup vs datatrove's
# local executor, on a synthetic pool of T0 prompts (10 M rows by default); then a projection to 1 B rows.
#
#   scripts/bench-cluster.sh [bench_cluster.py args, e.g. --rows 1000000 --steps minhash --no-datatrove]
#
# Results: stdout and .cache/bench/cluster-results-ROWS.json. A benchmark, not a test: run it on an otherwise
# idle machine. The 10 M-row pool takes about 3 GB of disk under .cache/bench/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

BENCH_FEATURES=cluster bench_setup pyarrow:pyarrow datatrove:datatrove regex:regex xxhash:xxhash==3.5.0 tokenizers:tokenizers spacy:spacy orjson:orjson psutil:psutil
exec .venv/bin/python scripts/bench_cluster.py --whet "$whet" "$@"
