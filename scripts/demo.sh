#!/usr/bin/env bash
# The main job, for now: inspect, convert and curate the shared sample data with `whet`.
# Outputs go to out/demo/ (datasets with their manifests).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${WHETSTONE_SHARED_DATA:-../shared/data}"
out=out/demo
mkdir -p "$out"
cargo build --release --bin whet
whet="${CARGO_TARGET_DIR:-target}/release/whet"

echo "== GSM8K: what is in it"
"$whet" inspect "$data/gsm8k/train.jsonl"
echo "== T0 templates: 220 files (8 empty) into one Parquet dataset"
"$whet" convert "$data/t0-templates" "$out/t0.parquet"
"$whet" head "$out/t0.parquet" -n 5
echo "== Self-Instruct seed tasks, exported for trainers"
"$whet" convert "$data/self-instruct/seed_tasks.jsonl" "$out/seed_tasks.messages.jsonl" --format messages
"$whet" convert "$data/self-instruct/seed_tasks.jsonl" "$out/seed_tasks.alpaca.jsonl" --format alpaca
echo "== Curation: embed T0 (model-free hashing; --embedder minilm for the real model), cluster, select"
"$whet" embed "$out/t0.parquet" "$out/t0-emb.parquet" --embedder hashing
"$whet" cluster "$out/t0-emb.parquet" "$out/t0-k64.parquet" --k 64
for method in random kmq kcenter; do
    "$whet" select "$out/t0-emb.parquet" "$out/t0-$method.parquet" --method "$method" --budget 0.005 --label source
done
echo "== Dedup and decontamination"
"$whet" dedup "$out/t0.parquet" "$out/t0-dedup.parquet" --method minhash
"$whet" decontam "$data/gsm8k/train.jsonl" "$out/gsm8k-train-clean.parquet" --eval "$data/gsm8k/test.jsonl"
echo "== The same stages as one pipeline: curation/examples/t0-curate.toml"
"$whet" curate curation/examples/t0-curate.toml
echo "datasets and manifests in $out/:"
ls -1 "$out"
