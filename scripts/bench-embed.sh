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

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
missing=()
for pair in pyarrow:pyarrow numpy:numpy sentence_transformers:sentence-transformers; do
    if ! .venv/bin/python -c "import ${pair%%:*}" 2>/dev/null; then
        missing+=("${pair#*:}")
    fi
done
if ((${#missing[@]})); then
    .venv/bin/pip install -q "${missing[@]}"
fi

if [[ ! -f .cache/models/all-MiniLM-L6-v2/model.safetensors ]]; then
    scripts/fetch-minilm.sh
fi

cargo build --release --bin whet
whet="${CARGO_TARGET_DIR:-target}/release/whet"

exec .venv/bin/python scripts/bench_embed.py --whet "$whet" "$@"
