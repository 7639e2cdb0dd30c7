#!/usr/bin/env bash
# Benchmark: `whet train` (LoRA and full, candle) vs transformers + PEFT (PyTorch) on the CPU, same model and shapes.
#
#   scripts/bench-train.sh [bench_train.py args, e.g. --hidden 256 --layers 4 --batch 8 --max-len 128 --steps 20]
#
# Results: stdout and .cache/bench/train-results.json. A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"

bench_setup torch:torch transformers:transformers peft:peft pyarrow:pyarrow
exec .venv/bin/python scripts/bench_train.py --whet "$whet" "$@"
