#!/usr/bin/env bash
# Benchmark: sampling from SmolLM2-135M-Instruct on the CPU: `whet generate` (the imported f32 folder, and the
# GGUF file) against transformers `generate` (f32, SDPA) and llama.cpp on the GGUF (node-llama-cpp's prebuilt
# binary), in one invocation, with ratios. See
# scripts/bench_generate.py for the settings.
#
#   scripts/bench-generate.sh [--questions 64 --samples 4 --new-tokens 128 --temperature 0.8 --batch 64
#                              --llama-sequences 32]
#
# Results: stdout and .cache/bench/generate-results.json. A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

./scripts/fetch-smollm2.sh
bench_setup torch:torch transformers:transformers pyarrow:pyarrow
bench_node_llama_cpp
exec .venv/bin/python scripts/bench_generate.py --whet "$whet" "$@"
