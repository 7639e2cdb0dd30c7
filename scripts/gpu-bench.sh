#!/usr/bin/env bash
# The GPU run, on a machine with an NVIDIA GPU, its driver, PyTorch (cu130) and transformers, and no Rust:
#
#   scripts/gpu-bench.sh KIT OUT
#
# KIT (made here by scripts/gpu-kit.sh): whet.gz (scripts/build-cuda.sh), gsm8k-train.jsonl (a tokenizer
# corpus), questions.jsonl (GSM8K test questions), tok32k/ (a 32k BPE tokenizer from `whet model tiny`).
# Writes OUT/results.json (every step's result or error) and OUT/log.txt. Steps go on after a failure, so
# one broken step does not cost the others.
set -uo pipefail
kit=$(realpath "${1:?KIT folder}")
out=$(realpath -m "${2:?OUT folder}")
here=$(dirname "$(realpath "$0")")
mkdir -p "$out"
work=$(mktemp -d)
log=$out/log.txt
results=$out/results.json
echo '{}' >"$results"
export PYTHONUNBUFFERED=1

note() { echo "== $*" | tee -a "$log" >&2; }
# record KEY JSON: adds one result.
record() { python3 - "$results" "$1" "$2" <<'PY'
import json, sys
path, key, value = sys.argv[1:]
data = json.load(open(path))
try:
    data[key] = json.loads(value)
except ValueError:
    data[key] = {"error": value[-2000:]}
json.dump(data, open(path, "w"), indent=1)
PY
}
# step KEY COMMAND...: runs it, records the last line of its stdout (JSON) or its error.
step() {
    local key=$1
    shift
    note "$key: $*"
    local t0=$SECONDS
    if "$@" >"$work/$key.out" 2>"$work/$key.err"; then
        record "$key" "$(tail -n 1 "$work/$key.out")"
    else
        record "$key" "$(tail -c 2000 "$work/$key.err")"
    fi
    cat "$work/$key.out" "$work/$key.err" >>"$log"
    note "$key: $((SECONDS - t0)) s"
}

note "machine"
record gpu "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')"
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
libs=$(find "$site" -name 'libcublas.so.13*' -o -name 'libcudart.so.13*' -o -name 'libnvrtc.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcublasLt.so.13*' | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$libs:${LD_LIBRARY_PATH:-}
gunzip -c "$kit/whet.gz" >"$work/whet" && chmod +x "$work/whet"
whet=$work/whet
missing=$(ldd "$whet" | grep 'not found')
[[ -z "$missing" ]] || note "missing libraries: $missing"
record whet_version "\"$("$whet" --version 2>&1)\""

# whet_stage OUTPUT ARGS...: runs `whet ARGS` (which writes OUTPUT), then prints its manifest's results.
whet_stage() {
    local output=$1
    shift
    "$whet" "$@" >&2 || return 1
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({**m['results'], 'parameters': m['parameters']}))" "$output.manifest.json"
}

# Correctness, on a tiny model: samples distinct; generation's log-probs equal a transformers forward (f32);
# whet score on the GPU equals whet score on the CPU.
cd "$work"
step tiny_model "$whet" model tiny tiny --corpus "$kit/gsm8k-train.jsonl"
head -n 40 "$kit/questions.jsonl" >q40.jsonl
step generate_f32 whet_stage gen.parquet generate tiny q40.jsonl gen.parquet -n 4 --max-tokens 64 --mode raw --dtype f32
step parity_f32 python3 "$here/gpu_bench.py" parity tiny gen.parquet
step score_gpu whet_stage score-gpu.parquet score tiny gen.parquet score-gpu.parquet --mode raw --dtype f32
step score_cpu whet_stage score-cpu.parquet score tiny gen.parquet score-cpu.parquet --mode raw --cpu
step scores_gpu_vs_cpu python3 "$here/gpu_bench.py" scores score-gpu.parquet score-cpu.parquet
step generate_bf16 whet_stage gen16.parquet generate tiny q40.jsonl gen16.parquet -n 4 --max-tokens 64 --mode raw
step parity_bf16 python3 "$here/gpu_bench.py" parity tiny gen16.parquet

# Throughput: a TinyLlama-1.1B-shaped model (random bf16 weights made here), 64 prompts x 4 samples x 256
# new tokens, whetstone (mistral.rs) and transformers generate, one after the other on the same GPU.
head -n 64 "$kit/questions.jsonl" >q64.jsonl
step make_model python3 "$here/gpu_bench.py" make-model "$kit/tok32k" big
step whet_generate whet_stage big.parquet generate big q64.jsonl big.parquet -n 4 --max-tokens 256 --mode raw --batch 256
step whet_generate_again whet_stage big2.parquet generate big q64.jsonl big2.parquet -n 4 --max-tokens 256 --mode raw --batch 256
step hf_generate python3 "$here/gpu_bench.py" hf-generate big q64.jsonl 4 256 64
python3 - "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
try:
    w = max(r["whet_generate"]["response_tokens_per_second"], r["whet_generate_again"]["response_tokens_per_second"])
    r["generation_ratio_whet_over_transformers"] = w / r["hf_generate"]["tokens_per_second"]
except (KeyError, TypeError):
    pass
json.dump(r, open(sys.argv[1], "w"), indent=1)
print(json.dumps(r, indent=1))
PY
