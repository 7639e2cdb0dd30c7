#!/usr/bin/env bash
# The selection goal, measured: `whet select --method kmq` against `--method random` on T0 with real MiniLM
# embeddings, budget 0.5% (about one row per template), over seeds 0..N-1 (one seed for both methods per row).
#
#   scripts/kmq-vs-random.sh [EMBEDDED.parquet] [SEEDS]
#
# EMBEDDED.parquet defaults to .cache/embeddings/t0-minilm.parquet; make it with
#   whet embed ../shared/data/t0-templates .cache/embeddings/t0-minilm.parquet --embedder minilm   (~50 min)
# Prints, per seed and on average, each method's mean distance from every row to its nearest selected row and
# the templates (`source` values) covered, and kMQ's distance relative to random's.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
input="${1:-.cache/embeddings/t0-minilm.parquet}"
seeds="${2:-10}"
if [[ ! -f "$input" ]]; then
    echo "no $input: embed T0 first (see the comment at the top of $0)" >&2
    exit 1
fi
cargo build --release --bin whet >&2
whet="${CARGO_TARGET_DIR:-target}/release/whet"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# mean distance and templates covered, from the select manifest
metrics() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(r["mean_distance"], r["labels_covered"], r["labels_total"])' "$1"
}

printf '%-5s  %-22s  %-22s  %s\n' seed "random: distance, templ." "kmq: distance, templ." "kmq distance vs random"
sum_rd=0 sum_rt=0 sum_kd=0 sum_kt=0
for ((seed = 0; seed < seeds; seed++)); do
    for method in random kmq; do
        "$whet" select "$input" "$out/$method.parquet" --method "$method" --budget 0.005 --label source \
            --seed "$seed" > /dev/null 2>&1
    done
    read -r rd rt total < <(metrics "$out/random.parquet.manifest.json")
    read -r kd kt _ < <(metrics "$out/kmq.parquet.manifest.json")
    printf '%-5s  %.4f, %-3s of %-8s  %.4f, %-3s of %-8s  %+.1f%%\n' "$seed" "$rd" "$rt" "$total" "$kd" "$kt" "$total" \
        "$(python3 -c "print(($kd / $rd - 1) * 100)")"
    sum_rd=$(python3 -c "print($sum_rd + $rd)"); sum_rt=$((sum_rt + rt))
    sum_kd=$(python3 -c "print($sum_kd + $kd)"); sum_kt=$((sum_kt + kt))
done
python3 - "$seeds" "$sum_rd" "$sum_rt" "$sum_kd" "$sum_kt" <<'PY'
import sys
n, rd, rt, kd, kt = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"mean   {rd / n:.4f}, {rt / n:.1f} templates    {kd / n:.4f}, {kt / n:.1f} templates    {(kd / rd - 1) * 100:+.1f}%")
PY
