#!/usr/bin/env bash
# Assembles the kit scripts/gpu-bench.sh takes to a GPU machine, in .gpu-kit/ (ignored by git, under 64 MiB):
# whet.gz (run scripts/build-cuda.sh first), a GSM8K corpus and questions, and a 32k-token BPE tokenizer
# trained on the T0 templates with a CPU build of whet (the model it comes with is not taken along: the GPU
# run makes its own weights).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${WHETSTONE_SHARED_DATA:-../shared/data}
kit=.gpu-kit
whet=${WHET:-target/release/whet}
[[ -f target/cuda/whet.gz ]] || { echo "gpu-kit: no target/cuda/whet.gz: run scripts/build-cuda.sh" >&2; exit 1; }
[[ -x "$whet" ]] || cargo build --release --bin whet
rm -rf "$kit.part" && mkdir -p "$kit.part"
cp target/cuda/whet.gz "$kit.part/"
cp "$data/gsm8k/train.jsonl" "$kit.part/gsm8k-train.jsonl"
cp "$data/gsm8k/test.jsonl" "$kit.part/questions.jsonl"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$whet" model tiny "$tmp/tok32k" --corpus "$data/t0-templates" --vocab 32000
mkdir "$kit.part/tok32k"
cp "$tmp"/tok32k/{tokenizer.json,tokenizer_config.json,generation_config.json} "$kit.part/tok32k/"
rm -rf "$kit" && mv "$kit.part" "$kit"
du -sh "$kit"
