#!/usr/bin/env bash
# Benchmark: whetstone's MinHash dedup, exact dedup and quality filters against datatrove's (its local executor,
# 2 workers) on the same pool of T0-derived rows (1 M by default): seconds, rows/s, peak memory and the Jaccard
# of the removed ids.
#
#   scripts/bench-dedup.sh [bench_dedup.py args, e.g. --rows 200000 --steps minhash]
#
# Results: stdout and .cache/bench/dedup-results-ROWS.json. A benchmark, not a test: run it on an otherwise idle
# machine. The 1 M-row pool takes about 300 MB of disk under .cache/bench/ (shared with bench-cluster.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

# xxhash below 4 (datatrove's own pin); tokenizers because datatrove.pipeline.dedup imports it.
bench_setup pyarrow:pyarrow datatrove:datatrove==0.10.1 regex:regex xxhash:xxhash==3.5.0 tokenizers:tokenizers \
    orjson:orjson psutil:psutil
exec .venv/bin/python scripts/bench_dedup.py --whet "$whet" "$@"
