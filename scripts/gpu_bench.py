"""The Python half of scripts/gpu-bench.sh, run on the GPU machine (PyTorch, transformers, pyarrow there).

  gpu_bench.py parity MODEL GENERATED.parquet [ADAPTER]  whet's generation log-probs vs a transformers forward
                                                      (of MODEL with the PEFT adapter ADAPTER applied, if given)
  gpu_bench.py scores A.parquet B.parquet             two `whet score` outputs, row by row
  gpu_bench.py make-model TOKENIZER_DIR OUT [SHAPE]   a model folder of SHAPE (tinyllama: TinyLlama-1.1B's;
                                                      small: for a rehearsal on a CPU), random bf16 weights
  gpu_bench.py hf-generate MODEL PROMPTS.jsonl N NEW BATCH   transformers generate, tokens/s
  gpu_bench.py watch COMMAND...                       runs COMMAND; adds the GPU memory it took at most
  gpu_bench.py train-summary OUT [WATCHED_JSON]       a `whet train` run: tokens/s, losses, device
  gpu_bench.py train-check RESULTS.json               CPU vs GPU training runs of one model, compared
  gpu_bench.py hf-train MODEL RANK BATCH MAX_LEN STEPS   transformers + PEFT LoRA steps, tokens/s, memory
  gpu_bench.py summary RESULTS.json                   adds the ratios and the failed steps; prints tables;
                                                      exits 1 when a step failed or a check did not pass

Each prints one JSON object on its last line.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pyarrow.parquet as pq
import torch

# scripts/ is on sys.path: this file is run as a script from there.
from benchlib import MIB, fmt_table, whet_train_metrics

# The GPU when there is one; the CPU lets the script be tried out where it is written.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def parity(model_dir, generated, adapter=None):
    """Sum of natural-log probabilities of each sample's drawn tokens after its (raw) prompt, from one
    transformers forward in f32, against the `log_likelihood` whet recorded while generating. With ADAPTER,
    the forward is PEFT's (MODEL with the adapter applied, not merged), and the result also says how far the
    base alone is (which shows the adapter matters)."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(DEVICE).eval()
    if adapter:
        import peft

        model = peft.PeftModel.from_pretrained(model, adapter).to(DEVICE).eval()
    rows = pq.read_table(generated).to_pylist()

    def diff(r):
        prompt = tok(r["prompt"]).input_ids
        ids = r["response_token_ids"]
        x = torch.tensor([prompt + ids], device=DEVICE)
        logp = torch.log_softmax(model(x).logits[0].double(), -1)
        picked = logp[len(prompt) - 1 : len(prompt) - 1 + len(ids)].gather(1, torch.tensor(ids, device=DEVICE)[:, None])
        return abs(picked.sum().item() - r["log_likelihood"]) / max(len(ids), 1)

    with torch.no_grad():
        per_token = [diff(r) for r in rows]
        worst = max(per_token)
        base = None
        if adapter:
            with model.disable_adapter():
                base = sum(diff(r) for r in rows) / len(rows)
    groups = {}
    for r in rows:
        groups.setdefault(r["prompt_id"], set()).add(r["response"])
    n = max(len(g) for g in groups.values())
    return {
        "rows": len(rows),
        "mean_abs_diff_per_token": sum(per_token) / len(per_token),
        "max_abs_diff_per_token": worst,
        "prompts": len(groups),
        "prompts_all_distinct": sum(len(g) == n for g in groups.values()),
        **({"adapter": adapter, "peft": __import__("peft").__version__,
            "mean_abs_diff_per_token_without_adapter": base} if adapter else {}),
    }


def scores(a, b):
    ra, rb = pq.read_table(a).to_pylist(), pq.read_table(b).to_pylist()
    diffs = [abs(x["mean_log_prob"] - y["mean_log_prob"]) for x, y in zip(ra, rb)]
    return {"rows": len(diffs), "max_abs_diff_mean_log_prob": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs)}


# Model shapes: TinyLlama-1.1B's (22 layers, hidden 2048, 32 heads of 64, 4 KV heads, MLP 5632), and a small
# one of the same make for rehearsing the GPU run on a CPU.
SHAPES = {
    "tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
}


def make_model(tokenizer_dir, out, shape="tinyllama"):
    """A Llama of SHAPE with the vocabulary of the tokenizer given; random weights (std 0.02) made on the
    GPU, saved as bf16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = json.load(open(f"{tokenizer_dir}/tokenizer.json"))
    ids = [*tok["model"]["vocab"].values(), *(t["id"] for t in tok["added_tokens"])]
    gen = json.load(open(f"{tokenizer_dir}/generation_config.json"))
    # The config in the layout `whet model tiny` writes, which mistral.rs and transformers both read.
    fields = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": max(ids) + 1,
        **SHAPES[shape],
        "head_dim": 64,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": gen["bos_token_id"],
        "eos_token_id": gen["eos_token_id"],
        "pad_token_id": gen["pad_token_id"],
        "torch_dtype": "bfloat16",
    }
    config = LlamaConfig(**{k: v for k, v in fields.items() if k not in ("architectures", "model_type", "torch_dtype")})
    torch.manual_seed(0)
    started = time.time()
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    json.dump(fields, open(f"{out}/config.json", "w"), indent=1)
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        shutil.copy(f"{tokenizer_dir}/{f}", f"{out}/{f}")
    params = sum(p.numel() for p in model.parameters())
    return {"shape": shape, "parameters": params, "vocab": config.vocab_size, "seconds": time.time() - started}


def hf_generate(model_dir, prompts_path, n, new, batch):
    """transformers `generate` on the same prompts: sampling at temperature 1, `n` per prompt, exactly `new`
    new tokens each (EOS suppressed), in batches of `batch` prompts; bf16, SDPA attention."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    n, new, batch = int(n), int(new), int(batch)
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
    tok.pad_token, tok.padding_side = "<pad>", "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(DEVICE).eval()
    prompts = [json.loads(line)["question"] for line in open(prompts_path)]
    kwargs = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=n, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        warm = tok(prompts[:2], return_tensors="pt", padding=True).to(DEVICE)
        model.generate(**warm, max_new_tokens=8, **kwargs)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started, tokens = time.time(), 0
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True).to(DEVICE)
            out = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, **kwargs)
            tokens += (out.shape[1] - enc.input_ids.shape[1]) * out.shape[0]
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        seconds = time.time() - started
    return {
        "prompts": len(prompts),
        "samples": len(prompts) * n,
        "new_tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None,
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }


def gpu_memory_reader():
    """A function giving the MiB in use on GPU 0, or None where there is no GPU. NVML (nvidia-ml-py) when it is
    there: a reading costs microseconds, so short peaks are seen (candle's CUDA allocator hands memory back at
    every synchronisation); else nvidia-smi, a process per reading."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
    except Exception:  # no NVML library or no GPU: nvidia-smi, or nothing
        pass

    def nvidia_smi():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, check=True).stdout
            return float(out.split()[0])
        except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
            return None

    return nvidia_smi


def watch(*argv):
    """Runs argv. Its stdout but the last line goes to stderr; the last line, when it is a JSON object, is the
    result, with peak_gpu_mib added: the most GPU memory in use while it ran, above what was in use before (read
    every 2 ms: the process's whole footprint, CUDA context and allocator caches included). The same measure for
    every program, whatever its framework reports of itself. Fails when argv fails."""
    used = gpu_memory_reader()
    before = used()
    peak = [before]
    done = threading.Event()

    def poll():
        while not done.wait(0.002):
            now = used()
            if now is not None:
                peak[0] = max(peak[0], now)

    poller = threading.Thread(target=poll, daemon=True)
    if before is not None:
        poller.start()
    child = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    done.set()
    if before is not None:
        poller.join()
    lines = child.stdout.splitlines()
    sys.stderr.write("\n".join(lines[:-1]) + "\n")
    if child.returncode != 0:
        sys.stderr.write((lines[-1] if lines else "") + "\n")
        sys.exit(f"{argv[0]} exited with {child.returncode}")
    try:
        result = json.loads(lines[-1]) if lines else {}
        assert isinstance(result, dict)
    except (ValueError, AssertionError):
        sys.stderr.write(lines[-1] + "\n")
        result = {}
    result["peak_gpu_mib"] = peak[0] - before if before is not None else None
    return result


def train_summary(out, watched="{}"):
    """What a `whet train` run in OUT did: from its record (whetstone-adapter.json or whetstone-trained.json)
    and its steps (benchlib.whet_train_metrics)."""
    name = "whetstone-adapter.json" if os.path.exists(f"{out}/whetstone-adapter.json") else "whetstone-trained.json"
    record = json.load(open(f"{out}/{name}"))
    report, config = record["report"], record["config"]
    return {
        "device": "cpu" if config["cpu"] else "gpu",
        "dtype": config["dtype"],
        **whet_train_metrics(out),
        "eval_loss_before": report["eval_loss_before"],
        "eval_loss_after": report["eval_loss_after"],
        "trainable": report["trainable_parameters"],
        **json.loads(watched),
    }


def train_check(results):
    """The same LoRA run of one model on the CPU (f32) and on the GPU (f32 and bf16), from RESULTS.json:
    the forward agrees (held-out loss before training, same weights and tokens), and training lowers the loss
    on the GPU as on the CPU. A run that is not there (bf16 in a rehearsal on a CPU) is not checked."""
    r = json.load(open(results))
    # A run that failed or was skipped is not there; without the CPU's there is nothing to compare with.
    runs = {k: r[f"train_{k}"] for k in ("cpu", "gpu_f32", "gpu_bf16") if "eval_loss_after" in r.get(f"train_{k}", {})}
    if "cpu" not in runs or len(runs) < 2:
        sys.exit(f"train-check: too few training runs to compare: {sorted(runs)}")
    cpu = runs["cpu"]

    def rel(a, b):
        return abs(a - b) / abs(b)

    drop = {k: v["eval_loss_before"] - v["eval_loss_after"] for k, v in runs.items()}
    # (value, largest allowed): one forward over the held-out rows, the same weights: f32 up to summation
    # order, bf16 up to rounding; after training, f32 on the GPU follows the CPU's run.
    checks = {"loss_falls_everywhere": (min(drop.values()), None)}
    if "gpu_f32" in runs:
        f32 = runs["gpu_f32"]
        checks["forward_f32_rel_diff"] = (rel(f32["eval_loss_before"], cpu["eval_loss_before"]), 1e-4)
        checks["first_step_loss_f32_rel_diff"] = (rel(f32["first_loss"], cpu["first_loss"]), 1e-4)
        checks["trained_f32_rel_diff"] = (rel(f32["eval_loss_after"], cpu["eval_loss_after"]), 1e-2)
    if "gpu_bf16" in runs:
        checks["forward_bf16_rel_diff"] = (rel(runs["gpu_bf16"]["eval_loss_before"], cpu["eval_loss_before"]), 2e-2)
        # bf16 lowers the held-out loss at least half as much as f32 on the CPU.
        checks["bf16_drop_over_cpu_drop"] = (drop["gpu_bf16"] / drop["cpu"] if drop["cpu"] else 0.0, None)
    passed = {k: v <= limit for k, (v, limit) in checks.items() if limit is not None}
    passed["loss_falls_everywhere"] = min(drop.values()) > 0
    if "gpu_bf16" in runs:
        passed["bf16_drop_at_least_half"] = checks["bf16_drop_over_cpu_drop"][0] >= 0.5
    return {"runs": sorted(runs), "values": {k: v for k, (v, _) in checks.items()}, "held_out_drop": drop,
            "passed": passed, "all_passed": all(passed.values())}


def hf_train(model_dir, rank, batch, max_len, steps):
    """transformers + PEFT LoRA steps on the folder (bf16 on a GPU, f32 on a CPU; SDPA attention), with the
    settings `whet train` gets in scripts/gpu-bench.sh: scripts/bench_train.py's PyTorch side."""
    from bench_train import torch_train  # imports PEFT and transformers: only here

    args = SimpleNamespace(rank=int(rank), batch=int(batch), max_len=int(max_len), steps=int(steps))
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    result = torch_train(args, model_dir, "lora", device=DEVICE, dtype=dtype, attention="sdpa")
    return {**result, "dtype": str(dtype), "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "peft": __import__("peft").__version__}


def summary(path):
    """Adds the ratios (whetstone ÷ transformers) and the failed steps to RESULTS.json and prints a table of
    the checks and one of the benchmarks."""
    r = json.load(open(path))

    def get(*keys):
        value = r
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        return value

    def ratio(ours, theirs):
        a, b = get(*ours), get(*theirs)
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    r["generation_ratio_whet_over_transformers"] = ratio(("whet_generate", "response_tokens_per_second"),
                                                         ("hf_generate", "tokens_per_second"))
    r["lora_train_ratio_whet_over_peft"] = ratio(("whet_train_big", "tokens_per_s"), ("hf_train_big", "tokens_per_s"))
    r["lora_train_memory_ratio_whet_over_peft"] = ratio(("whet_train_big", "peak_gpu_mib"),
                                                        ("hf_train_big", "peak_gpu_mib"))
    prompts, distinct = get("parity_f32", "prompts"), get("parity_f32", "prompts_all_distinct")
    not_distinct = prompts - distinct if prompts is not None and distinct is not None else None
    # (what, value, largest allowed). Generation in f32 agrees with transformers' f32 forward up to summation
    # order (5e-6 a token on the first H100 run); bf16 generation against it up to bf16's rounding.
    limits = [
        ("generation log-probs vs transformers, f32 (mean per token)", get("parity_f32", "mean_abs_diff_per_token"), 1e-4),
        ("generation log-probs vs transformers, f32 (largest per token)", get("parity_f32", "max_abs_diff_per_token"), 1e-3),
        ("generation log-probs vs transformers, bf16 (mean per token)", get("parity_bf16", "mean_abs_diff_per_token"), 1e-2),
        ("prompts whose f32 samples are not all distinct", not_distinct, 0),
        ("whet score GPU vs CPU (mean log-prob, largest)", get("scores_gpu_vs_cpu", "max_abs_diff_mean_log_prob"), 1e-4),
        ("merged adapter in mistral.rs vs PEFT (mean per token)", get("peft_parity", "mean_abs_diff_per_token"), 1e-4),
        ("  PEFT without the adapter, for scale (mean per token)", get("peft_parity", "mean_abs_diff_per_token_without_adapter"), None),
        *[(f"training: {k}", v, None) for k, v in (get("train_check", "values") or {}).items()],
    ]
    missed = [what.strip() for what, value, limit in limits if limit is not None and (value is None or value > limit)]
    if (get("peft_parity", "mean_abs_diff_per_token_without_adapter") or 0) <= 10 * (get("peft_parity", "mean_abs_diff_per_token") or 0):
        missed.append("the adapter barely moves PEFT's log-probs")
    failed = [k for k, v in r.items() if isinstance(v, dict) and ("error" in v or "skipped" in v)]
    failed += [k for k in ("train_check",) if get(k, "all_passed") is False]
    if r.get("part") != "generation":
        failed += [f"check: {m}" for m in missed]
    r["failed"] = failed
    json.dump(r, open(path, "w"), indent=1)

    fmt = lambda x, spec: "–" if x is None else format(x, spec)
    checks = [[what, fmt(value, ".3g"), "" if limit is None else f"≤ {limit:g}"] for what, value, limit in limits]
    checks.append(["training checks passed", str(get("train_check", "all_passed")), ""])
    benchmarks = [
        ["generation, new tokens/s", fmt(get("whet_generate", "response_tokens_per_second"), ",.0f"),
         fmt(get("hf_generate", "tokens_per_second"), ",.0f"), fmt(r["generation_ratio_whet_over_transformers"], ".2f")],
        ["LoRA SFT, tokens/s", fmt(get("whet_train_big", "tokens_per_s"), ",.0f"),
         fmt(get("hf_train_big", "tokens_per_s"), ",.0f"), fmt(r["lora_train_ratio_whet_over_peft"], ".2f")],
        ["LoRA SFT, tokens a step (whet: not padding)", fmt(get("whet_train_big", "tokens_per_step"), ",.0f"),
         fmt(get("hf_train_big", "tokens_per_step"), ",.0f"), ""],
        ["LoRA SFT, peak GPU MiB", fmt(get("whet_train_big", "peak_gpu_mib"), ",.0f"),
         fmt(get("hf_train_big", "peak_gpu_mib"), ",.0f"), fmt(r["lora_train_memory_ratio_whet_over_peft"], ".2f")],
        *[[f"generation, 32 new tokens, {k.removeprefix('whet_generate_32_')}",
           fmt(get(k, "response_tokens_per_second"), ",.0f"), "", ""] for k in r if k.startswith("whet_generate_32_")],
    ]
    # Where whet generate's time went (its manifest's decode_times): thread-seconds in whetstone's per-sequence
    # draw, against the run's wall seconds; on mistral.rs the rest is its own (forward passes, scheduling).
    profile = []
    for k in [k for k in r if k.startswith("whet_generate")]:
        times, wall = get(k, "decode_times"), get(k, "seconds")
        if isinstance(times, dict) and wall:
            profile.append([k, f"{wall:.1f}", *(f"{times.get(f, 0):.1f}" for f in
                            ("forward_seconds", "logits_to_host_seconds", "sampling_seconds", "to_device_seconds")),
                            f"{times.get('draws', 0):,}"])
    print(f"GPU: {r.get('gpu')}; {json.dumps(r.get('versions'))}; {r.get('whet_version')}\n")
    if r.get("part") != "generation":
        print("\n".join(fmt_table(["check", "value", "limit"], checks, {0})) + "\n")
    if profile:
        print("\n".join(fmt_table(["generation run", "wall s", "forward s (whetstone's decoder)", "logits to host s",
                                   "sampling s", "row to device s", "draws"], profile, {0})) + "\n")
    print("\n".join(fmt_table(["benchmark", "whetstone", "transformers", "ratio"], benchmarks, {0})) + "\n")
    print(f"failed: {', '.join(failed) or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    result = {"parity": parity, "scores": scores, "make-model": make_model, "hf-generate": hf_generate,
              "watch": watch, "train-summary": train_summary, "train-check": train_check,
              "hf-train": hf_train, "summary": summary}[command](*args)
    print(json.dumps(result))
