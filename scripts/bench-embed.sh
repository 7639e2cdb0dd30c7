#!/usr/bin/env bash
# Benchmark: `whet embed --embedder minilm` vs sentence-transformers, all-MiniLM-L6-v2 on CPU, same texts.
#
#   scripts/bench-embed.sh [bench_embed.py args, e.g. --rows 2000 --repeat 3 --st-batch-size 32]
#
# Texts: a deterministic sample of --rows (default 2000) `prompt` texts of ../shared/data/t0-templates
# (WHETSTONE_SHARED_DATA overrides ../shared/data), cached under .cache/bench/. Model: .cache/models/all-MiniLM-L6-v2
# (fetched with scripts/fetch-minilm.sh if missing). Results: stdout and .cache/bench/embed-results.json.
# A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

bench_setup pyarrow:pyarrow numpy:numpy sentence_transformers:sentence-transformers
if [[ ! -f .cache/models/all-MiniLM-L6-v2/model.safetensors ]]; then
    scripts/fetch-minilm.sh
fi
exec .venv/bin/python scripts/bench_embed.py --whet "$whet" "$@"
