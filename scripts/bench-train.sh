#!/usr/bin/env bash
# Benchmark: `whet train` (LoRA and full, candle) vs transformers + PEFT (PyTorch) on the CPU, same model and shapes.
#
#   scripts/bench-train.sh [bench_train.py args, e.g. --hidden 256 --layers 4 --batch 8 --max-len 128 --steps 20]
#   scripts/bench-train.sh --model smollm2 --rank 16 --batch 8 --max-len 256 --steps 10   # SmolLM2-135M-Instruct
#
# Results: stdout and .cache/bench/train-results.json. A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

./scripts/fetch-smollm2.sh   # for --model smollm2
bench_setup torch:torch transformers:transformers peft:peft pyarrow:pyarrow
exec .venv/bin/python scripts/bench_train.py --whet "$whet" "$@"
