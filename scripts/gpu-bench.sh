#!/usr/bin/env bash
# The GPU run, on a machine with an NVIDIA GPU, its driver, PyTorch (cu130), transformers and PEFT, and no Rust:
#
#   scripts/gpu-bench.sh KIT OUT              the run (the device tool: see README, "GPU")
#   scripts/gpu-bench.sh KIT OUT --rehearse   the same steps on this machine's CPU, small shapes, with the CPU
#                                             build of whet ($WHET or target/release/whet): tries the script out
#   GPU_BENCH_PART=generation scripts/gpu-bench.sh KIT OUT    the generation benchmark alone (≈ 3 min), with
#                                             where its time went (whet generate's decode_times)
#
# KIT (made here by scripts/gpu-kit.sh): whet.gz (scripts/build-cuda.sh), gsm8k-train.jsonl (rows and a
# tokenizer corpus), questions.jsonl (GSM8K test questions), tok32k/ (a 32k BPE tokenizer from `whet model tiny`).
# Writes OUT/results.json (every step's result or error, and the checks) and OUT/log.txt. Steps go on after a
# failure, so one broken step does not cost the others; each has a time limit, so the run fits the device's
# time. Exits 1 when a step failed or a check did not pass.
set -uo pipefail
kit=$(realpath "${1:?KIT folder}")
out=$(realpath -m "${2:?OUT folder}")
rehearse=${3:-}
[[ -z $rehearse || $rehearse == --rehearse ]] || { echo "gpu-bench: unknown option $rehearse (only --rehearse)" >&2; exit 2; }
here=$(dirname "$(realpath "$0")")
mkdir -p "$out"
work=$(mktemp -d)
log=$out/log.txt
results=$out/results.json
: >"$log"
echo '{}' >"$results"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=${PYTHON:-python3}
[[ $py == */* ]] && py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")

note() { echo "== $*" | tee -a "$log" >&2; }
# record KEY TEXT [error]: adds one result: TEXT when it is JSON, else {"output": TEXT}, or {"error": TEXT}.
record() { "$py" - "$results" "$1" "$2" "${3:-}" <<'PY'
import json, sys
path, key, value, error = sys.argv[1:]
data = json.load(open(path))
if error:
    data[key] = {"error": value[-2000:]}
else:
    try:
        data[key] = json.loads(value)
    except ValueError:
        data[key] = {"output": value[-2000:]}
json.dump(data, open(path, "w"), indent=1)
PY
}
# The whole run ends within $GPU_BENCH_SECONDS (default 540: the device tool's 600 s a command, less a margin).
deadline=${GPU_BENCH_SECONDS:-540}
# step KEY SECONDS COMMAND...: runs it (at most SECONDS, and never past the deadline), records the last line of
# its stdout (JSON) or its error; a step with no time left is recorded as skipped.
step() {
    local key=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS - 10))
    if ((left < 10)); then
        note "$key: skipped, the run's $deadline s are spent"
        record "$key" '{"skipped": "the run'"'"'s time was spent"}'
        return
    fi
    ((limit > left)) && limit=$left
    note "$key: $*"
    local t0=$SECONDS
    # bash -c: the command may be one of the functions below (exported).
    if timeout -k 10 "$limit" bash -c '"$@"' step "$@" >"$work/$key.out" 2>"$work/$key.err"; then
        record "$key" "$(tail -n 1 "$work/$key.out")"
    else
        local rc=$?
        [[ $rc == 124 ]] && echo "timed out after $limit s" >>"$work/$key.err"
        record "$key" "$(tail -c 2000 "$work/$key.err")" error
    fi
    cat "$work/$key.out" "$work/$key.err" >>"$log"
    note "$key: $((SECONDS - t0)) s"
}

if [[ $rehearse == --rehearse ]]; then
    whet=$(realpath "${WHET:-$here/../target/release/whet}")
    shape=small new_tokens=32 train_steps=6 train_len=128
    record gpu '"none: a rehearsal on the CPU"'
else
    note "machine"
    record gpu "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | "$py" -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')"
    site=$("$py" -c 'import site; print(site.getsitepackages()[0])')
    libs=$(find "$site" -name 'libcublas.so.13*' -o -name 'libcudart.so.13*' -o -name 'libnvrtc.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcublasLt.so.13*' | xargs -r -n1 dirname | sort -u | paste -sd:)
    export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    gunzip -c "$kit/whet.gz" >"$work/whet" && chmod +x "$work/whet"
    whet=$work/whet
    missing=$(ldd "$whet" | grep 'not found')
    [[ -z "$missing" ]] && note "all libraries found" || note "missing libraries: $missing"
    shape=tinyllama new_tokens=256 train_steps=12 train_len=512
fi
record versions "$("$py" -c 'import json, torch, transformers, peft; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__, "peft": peft.__version__}))' 2>&1)"
record whet_version "\"$("$whet" --version 2>&1)\""
part=${GPU_BENCH_PART:-all}
record part "\"$part\""

# whet_stage OUTPUT ARGS...: runs `whet ARGS` (which writes OUTPUT), then prints its manifest's results.
whet_stage() {
    local output=$1
    shift
    "$whet" "$@" >&2 || return 1
    "$py" -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({**m['results'], 'parameters': m['parameters']}))" "$output.manifest.json"
}
# whet_train OUT ARGS...: `whet train --out OUT ARGS`, watched for GPU memory, then what it did.
whet_train() {
    local dir=$1
    shift
    local watched
    watched=$("$py" "$here/gpu_bench.py" watch "$whet" train --out "$dir" "$@") || return 1
    "$py" "$here/gpu_bench.py" train-summary "$dir" "$watched"
}

export whet py here
export -f whet_stage whet_train
cd "$work"
if [[ $part == all ]]; then
# --- Correctness, on a tiny model (0.8 M parameters) -------------------------------------------------------
# Generation: samples distinct; generation's log-probs, 160 sequences in flight, equal a transformers forward
# (f32 and bf16); whet score on the GPU equals whet score on the CPU. One key/value head for two query heads,
# as in the benchmark's model: grouped-query attention takes its own rotary-embedding path in mistral.rs.
step tiny_model 120 "$whet" model tiny tiny --corpus "$kit/gsm8k-train.jsonl" --kv-heads 1
head -n 40 "$kit/questions.jsonl" >q40.jsonl
step generate_f32 120 whet_stage gen.parquet generate tiny q40.jsonl gen.parquet -n 4 --max-tokens 64 --mode raw --dtype f32
step parity_f32 120 "$py" "$here/gpu_bench.py" parity tiny gen.parquet
step score_gpu 120 whet_stage score-gpu.parquet score tiny gen.parquet score-gpu.parquet --mode raw --dtype f32
step score_cpu 120 whet_stage score-cpu.parquet score tiny gen.parquet score-cpu.parquet --mode raw --cpu
step scores_gpu_vs_cpu 60 "$py" "$here/gpu_bench.py" scores score-gpu.parquet score-cpu.parquet
# As many key/value heads as query heads: mistral.rs's fused rotary kernel, which a CUDA build ran on the CPU
# too ("query must be a cuda tensor") until the patch.
step tiny_model_mha 60 "$whet" model tiny tiny-mha --corpus "$kit/gsm8k-train.jsonl"
step score_cpu_mha 60 whet_stage score-mha.parquet score tiny-mha gen.parquet score-mha.parquet --mode raw --cpu
step generate_bf16 120 whet_stage gen16.parquet generate tiny q40.jsonl gen16.parquet -n 4 --max-tokens 64 --mode raw
step parity_bf16 120 "$py" "$here/gpu_bench.py" parity tiny gen16.parquet

# Training (candle): one LoRA run on the CPU (f32) and on the GPU (f32, bf16), same rows, seed and steps. The
# held-out loss before training is one forward of each; train_check compares them. The bf16 adapter is
# then merged, loaded in mistral.rs to generate, and PEFT (base + adapter, not merged) scores what it drew.
head -n 2000 "$kit/gsm8k-train.jsonl" >rows.jsonl
tail -n 200 "$kit/questions.jsonl" >held-out.jsonl
lora=(--base tiny --data rows.jsonl --eval held-out.jsonl --method lora --rank 8 --alpha 16 --steps 40
    --batch 8 --max-len 256 --lr 3e-3 --schedule constant --mode raw --on-error skip)
step train_cpu 180 whet_train lora-cpu "${lora[@]}" --cpu
step train_gpu_f32 180 whet_train lora-f32 "${lora[@]}" --dtype f32
adapter=lora-bf16
# candle's CPU matmul has no bf16: a rehearsal goes on with the f32 adapter.
[[ $rehearse == --rehearse ]] && adapter=lora-f32 || step train_gpu_bf16 180 whet_train lora-bf16 "${lora[@]}" --dtype bf16
step train_check 30 "$py" "$here/gpu_bench.py" train-check "$results"
step merge 60 "$whet" model merge tiny "$adapter" merged
step generate_merged 120 whet_stage genm.parquet generate merged q40.jsonl genm.parquet -n 2 --max-tokens 64 --mode raw --dtype f32
step peft_parity 120 "$py" "$here/gpu_bench.py" parity tiny genm.parquet "$adapter"
fi

# --- Benchmarks: a TinyLlama-1.1B-shaped model, random bf16 weights made here -----------------------------
step make_model 300 "$py" "$here/gpu_bench.py" make-model "$kit/tok32k" big "$shape"
# LoRA SFT steps: rank 16 on every projection, alpha 32, batch 8 × train_len tokens, AdamW lr 1e-3, bf16.
if [[ $part == all ]]; then
step whet_train_big 300 whet_train lora-big --base big --data "$kit/gsm8k-train.jsonl" --method lora --rank 16 \
    --alpha 32 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --steps "$train_steps" --batch 8 \
    --max-len "$train_len" --lr 1e-3 --schedule constant --mode raw --on-error skip
step hf_train_big 300 "$py" "$here/gpu_bench.py" watch "$py" "$here/gpu_bench.py" hf-train big 16 8 "$train_len" "$train_steps"
fi
# Generation: 64 prompts × 4 samples, sampling at temperature 1: first 32 new tokens with the defaults, then
# new_tokens (the comparison with transformers), then 32 under other engine settings (which one is fastest is
# measured, not assumed).
head -n 64 "$kit/questions.jsonl" >q64.jsonl
whet_generate_32() {
    local name=$1
    shift
    step "whet_generate_32_$name" 90 whet_stage "s-$name.parquet" generate big q64.jsonl "s-$name.parquet" -n 4 \
        --max-tokens 32 --mode raw "$@"
}
whet_generate_32 default
# The comparison's length: new_tokens, or fewer (a multiple of 32) where the rate just measured would not make
# them in 150 s; transformers gets the same.
new_tokens=$("$py" - "$results" "$new_tokens" <<'PY'
import json, sys
rate = json.load(open(sys.argv[1])).get("whet_generate_32_default", {}).get("response_tokens_per_second")
fits = int(rate * 150 / 256) // 32 * 32 if rate else 32
print(max(32, min(int(sys.argv[2]), fits)))
PY
)
record new_tokens "$new_tokens"
step whet_generate 240 whet_stage big.parquet generate big q64.jsonl big.parquet -n 4 --max-tokens "$new_tokens" --mode raw
step hf_generate 180 "$py" "$here/gpu_bench.py" hf-generate big q64.jsonl 4 "$new_tokens" 64
if [[ $part == all ]]; then
    whet_generate_32 batch64 --batch 64
    whet_generate_32 batch16 --batch 16
    [[ $rehearse == --rehearse ]] || whet_generate_32 batch256_paged --paged-attention
fi

"$py" "$here/gpu_bench.py" summary "$results"
