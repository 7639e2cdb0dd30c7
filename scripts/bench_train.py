#!/usr/bin/env python3
"""Benchmark `whet train` against PyTorch (transformers + PEFT): training steps on the CPU, same model, same shapes.

A benchmark, not a test. One model folder is made with `whet model tiny` (a Llama of --hidden/--layers/--heads,
tokenizer trained on the rows below), or given with --model (SmolLM2: `--model smollm2`, the folder
`whet model import` makes of .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf); both contestants load that folder
in f32 and train it:

  whetstone  `whet train` as a child process: --method lora (rank --rank on q,k,v,o,gate,up,down, alpha 2×rank,
             no dropout) and --method full, AdamW, --steps steps of --batch rows of --max-len tokens (examples
             packed), constant learning rate. Its tokens/s: the tokens of steps 3 on (metrics.jsonl), over their
             seconds (the first two steps are warm-up).
  PyTorch    LlamaForCausalLM.from_pretrained(folder) (+ peft.get_peft_model with the same LoraConfig for LoRA),
             torch.optim.AdamW, the same number of steps of --batch rows × --max-len random token ids (speed does
             not depend on values), loss over every token; timed from step 3 on, as above. torch's threads: the
             machine's usable cores.

Rows: 2-digit additions ("What is 23 + 58?" → "81") in the chat layout, 4,000 of them. Results: a table of tokens/s
and ratios (whetstone ÷ PyTorch) and .cache/bench/train-results.json. Checks (exit 1 when one fails): every run
succeeds and both contestants' losses are finite and fall.
Usually run through scripts/bench-train.sh, which sets up .venv (torch, transformers, peft) and builds whet.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import peft
import torch
import transformers
from transformers import LlamaForCausalLM

from benchlib import (MIB, bench_dirs, fmt_table, machine_line, report_head, run_child, save_report, tail,
                      usable_cores, whet_binary, whet_train_metrics, whet_version)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rows_file(path: Path, n: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            a, b = rng.randrange(100), rng.randrange(100)
            f.write(json.dumps({"id": f"q{i}", "prompt": f"What is {a} + {b}?", "response": str(a + b)}) + "\n")


def whet_train(whet: Path, args, folder: Path, data: Path, out: Path, method: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(whet), "train", "--base", str(folder), "--data", str(data), "--out", str(out), "--method", method,
            "--steps", str(args.steps), "--batch", str(args.batch), "--max-len", str(args.max_len),
            "--lr", "1e-3", "--schedule", "constant", "--rank", str(args.rank), "--alpha", str(2 * args.rank),
            "--targets", ",".join(TARGETS), "--cpu"]
    log = out.with_name(out.name + ".log")
    res = run_child(argv, log)
    if res["rc"] != 0:
        return {"rc": res["rc"], "error": tail(log)}
    return {"rc": 0, **whet_train_metrics(out), "rss_mib": res["rss_mib"], "process_s": res["seconds"]}


def torch_train(args, folder: Path, method: str, device: str = "cpu", dtype=torch.float32,
                attention: str = "eager") -> dict:
    """PyTorch's side: the folder in `dtype` on `device` (+ PEFT's LoRA with the same settings), AdamW, `args.steps`
    steps of `args.batch` × `args.max_len` random token ids; a step is timed up to its loss on the host (which
    waits for a GPU), from step 3 on. On a GPU, torch_peak_allocated_mib is torch's own peak allocation."""
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attention).to(device)
    if method == "lora":
        config = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=TARGETS,
                                 task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    # A fixed pool of batches, so the loss can fall (as on the real rows).
    pool = [torch.randint(0, vocab, (args.batch, args.max_len), generator=gen).to(device) for _ in range(4)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses, timed_tokens, timed_s = [], 0, 0.0
    for step in range(args.steps):
        ids = pool[step % len(pool)]
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        elapsed = time.perf_counter() - start
        if step >= 2:
            timed_tokens += ids.numel()
            timed_s += elapsed
    import resource

    return {"rc": 0, "tokens_per_s": timed_tokens / timed_s, "tokens_per_step": args.batch * args.max_len,
            "first_loss": losses[0], "last_loss": losses[-1],
            # The benchmark process's own peak so far (PyTorch runs in it, after whet's children).
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainable": sum(p.numel() for p in params),
            "torch_peak_allocated_mib": torch.cuda.max_memory_allocated() / MIB if device == "cuda" else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whet", required=True)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--model", help="a model folder to train instead of a tiny one; `smollm2`: SmolLM2 imported")
    args = ap.parse_args()
    whet = whet_binary(args.whet)
    torch.set_num_threads(usable_cores())
    cache, outdir = bench_dirs("train")
    data = outdir / "rows.jsonl"
    rows_file(data, 4000)
    folder = outdir / "model"
    if args.model == "smollm2":
        gguf = Path(__file__).resolve().parent.parent / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
        made = run_child([str(whet), "model", "import", str(gguf), str(folder)], outdir / "model.log")
    elif args.model:
        folder = Path(args.model)
        made = {"rc": 0}
    else:
        shutil.rmtree(folder, ignore_errors=True)
        made = run_child([str(whet), "model", "tiny", str(folder), "--corpus", str(data), "--vocab", str(args.vocab),
                          "--hidden", str(args.hidden), "--layers", str(args.layers), "--heads", str(args.heads),
                          "--kv-heads", str(args.heads), "--intermediate", str(args.intermediate),
                          "--context", str(args.max_len)], outdir / "model.log")
    if made["rc"] != 0:
        sys.exit(tail(outdir / "model.log"))
    config = json.loads((folder / "config.json").read_text())

    print(machine_line(cpu=True))
    print(f"whetstone {whet_version(whet)}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}, peft {peft.__version__}")
    print(f"model: {args.model or 'tiny Llama'}, hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
          f"{config['num_attention_heads']} heads, vocabulary {config['vocab_size']}; {args.steps} steps of "
          f"{args.batch} × {args.max_len} tokens, f32, AdamW, LoRA rank {args.rank} on {len(TARGETS)} projections\n")
    report = report_head(cpu=True)
    report.update(versions={"whetstone": whet_version(whet), "torch": torch.__version__,
                            "transformers": transformers.__version__, "peft": peft.__version__},
                  settings=vars(args) | {"vocab": config["vocab_size"]}, runs={})
    failed, table = [], []
    for method in ["lora", "full"]:
        ours = whet_train(whet, args, folder, data, outdir / f"whet-{method}", method)
        theirs = torch_train(args, folder, method)
        report["runs"][method] = {"whetstone": ours, "pytorch": theirs}
        for name, r in [("whetstone", ours), ("pytorch", theirs)]:
            if r["rc"] != 0:
                failed.append(f"{name} {method}: {r.get('error')}")
            elif not (r["last_loss"] < r["first_loss"]):
                failed.append(f"{name} {method}: loss did not fall ({r['first_loss']:.3f} -> {r['last_loss']:.3f})")
        if ours["rc"] == 0 and theirs["rc"] == 0:
            ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
            report["runs"][method]["ratio"] = ratio
            table.append([method, f"{ours['tokens_per_s']:,.0f}", f"{theirs['tokens_per_s']:,.0f}", f"{ratio:.2f}×",
                          f"{ours['first_loss']:.2f} → {ours['last_loss']:.2f}",
                          f"{ours['rss_mib']:,.0f} MiB", f"{theirs['rss_mib']:,.0f} MiB"])
    print("\n".join(fmt_table(["training", "whetstone tokens/s", "PyTorch tokens/s", "whetstone ÷ PyTorch",
                               "whetstone loss", "whetstone peak RSS", "PyTorch process peak RSS"], table, {0})))
    return save_report(cache / "train-results.json", report, failed)


if __name__ == "__main__":
    sys.exit(main())
