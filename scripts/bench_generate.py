"""Benchmark: sampling from SmolLM2-135M-Instruct on the CPU, side by side in one invocation:

- `whet generate` on the imported f32 folder (whetstone's batched decoder);
- `whet generate` on the GGUF file (mistral.rs, quantised, one sequence at a time on the CPU), on fewer questions;
- transformers `generate` on the same folder (f32, SDPA attention, left-padded batches);
- llama.cpp on the GGUF file, through node-llama-cpp's prebuilt CPU binary (scripts/llama_cpp_generate.mjs, under
  Node.js): --llama-sequences sequences decoded together in one context, continuous batching, plain temperature
  sampling. node-llama-cpp (pinned) is installed into .cache/node by scripts/bench-setup.sh's bench_node_llama_cpp,
  which bench-generate.sh calls; where node or the package is missing, its row says so and the rest runs as before.
  The llama.cpp row's ratio against whetstone's GGUF row is printed below the table (the goal: whetstone ≥ 1×).

GSM8K test questions through the chat template, N samples each at temperature T, at most NEW new tokens.
Each contestant runs as its own process, so its peak RSS is its own. Rates count new tokens (up to and including
the end-of-sequence token) over the generation's own seconds, model loading excluded; the wall time of the
whole process is reported beside it.

  scripts/bench-generate.sh [--questions 64 --samples 4 --new-tokens 128 --temperature 0.8 --batch 64
                             --llama-sequences 32]

Results: stdout and .cache/bench/generate-results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import (REPO, bench_dirs, fmt_table, machine_line, report_head, rel, run_child, save_report,
                      shared_data_dir, tail, usable_cores, whet_binary, whet_version)

GGUF = REPO / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
NODE_PREFIX = REPO / ".cache/node"  # where bench-setup.sh's bench_node_llama_cpp npm-installs node-llama-cpp
WHET_GGUF = "whetstone (GGUF, mistral.rs)"


def chat_texts(tok, questions: list[str]) -> list[str]:
    """The questions through the tokenizer's chat template, as text: what every contestant is given."""
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions]


def transformers_child(folder: str, questions: str, samples: int, new_tokens: int, temperature: float,
                       batch: int, out: str) -> None:
    """The transformers contestant, run as a child: writes its result as JSON to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(usable_cores())
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    prompts = [json.loads(line)["question"] for line in open(questions)]
    texts = [t for t in chat_texts(tok, prompts) for _ in range(samples)]
    eos = tok.eos_token_id
    new, seconds = 0, 0.0
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        start = time.perf_counter()
        with torch.no_grad():
            out_ids = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                     max_new_tokens=new_tokens, pad_token_id=eos)
        seconds += time.perf_counter() - start
        for row in out_ids[:, enc.input_ids.shape[1]:].tolist():
            new += row.index(eos) + 1 if eos in row else len(row)
    Path(out).write_text(json.dumps({"new_tokens": new, "generate_seconds": seconds, "samples": len(texts),
                                     "torch": torch.__version__, "threads": torch.get_num_threads()}))


def whet_generate(whet: Path, model: Path, questions: Path, args, out: Path) -> dict:
    argv = [str(whet), "generate", str(model), str(questions), str(out), "-n", str(args.samples), "--max-tokens",
            str(args.new_tokens), "--temperature", str(args.temperature), "--batch", str(args.batch)]
    log = out.with_suffix(".log")
    r = run_child(argv, log)
    if r["rc"] != 0:
        return r | {"error": tail(log)}
    results = json.loads(Path(f"{out}.manifest.json").read_text())["results"]
    new = results["response_tokens"]
    return r | {"new_tokens": new, "generate_seconds": new / results["response_tokens_per_second"],
                "engine": json.loads(Path(f"{out}.manifest.json").read_text())["parameters"]["engine"]["backend"]}


def node_llama_cpp_version() -> str | None:
    try:
        return json.loads((NODE_PREFIX / "node_modules/node-llama-cpp/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def llama_cpp_setup(node: str) -> tuple[str | None, str | None]:
    """(node's version, None) when node runs and node-llama-cpp is in .cache/node (bench-generate.sh installs it
    with bench-setup.sh's bench_node_llama_cpp); else (None, why not)."""
    if shutil.which(node) is None:
        return None, f"no `{node}` found (the llama.cpp contestant needs Node.js ≥ 20 and npm)"
    if node_llama_cpp_version() is None:
        return None, f"node-llama-cpp is not installed in {rel(NODE_PREFIX)} (see scripts/bench-setup.sh)"
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip(), None


def llama_cpp_generate(node: str, prompts: Path, args, outdir: Path) -> dict:
    """The llama.cpp contestant: scripts/llama_cpp_generate.mjs on the GGUF file, as its own process."""
    out, log = outdir / "llama-cpp.json", outdir / "llama-cpp.log"
    out.unlink(missing_ok=True)
    argv = [node, str(REPO / "scripts/llama_cpp_generate.mjs"), "--model", str(GGUF), "--prompts", str(prompts),
            "--samples", str(args.samples), "--new-tokens", str(args.new_tokens), "--temperature",
            str(args.temperature), "--sequences", str(args.llama_sequences), "--threads", str(usable_cores()),
            "--out", str(out)]
    r = run_child(argv, log, env={**os.environ, "NODE_LLAMA_CPP_PREFIX": str(NODE_PREFIX)})
    if r["rc"] != 0 or not out.is_file():
        return r | {"rc": r["rc"] or -1, "error": tail(log)}
    res = json.loads(out.read_text())
    return r | {k: v for k, v in res.items() if k != "seconds"} | {"generate_seconds": res["seconds"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whet", required=True)
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--gguf-questions", type=int, default=2, help="mistral.rs decodes one sequence at a time")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--llama-sequences", type=int, default=32,
                    help="llama.cpp: sequences decoded together (0: leave llama.cpp out)")
    ap.add_argument("--node", default="node", help="the Node.js that runs the llama.cpp contestant")
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        folder, questions, samples, new_tokens, temperature, batch, out = args.child
        transformers_child(folder, questions, int(samples), int(new_tokens), float(temperature), int(batch), out)
        return 0
    whet = whet_binary(args.whet)
    if not GGUF.is_file():
        sys.exit(f"no {GGUF}: run scripts/fetch-smollm2.sh")
    cache, outdir = bench_dirs("generate")
    folder = outdir / "smollm2"
    if not (folder / "model.safetensors").is_file():
        made = run_child([str(whet), "model", "import", str(GGUF), str(folder)], outdir / "import.log")
        if made["rc"] != 0:
            sys.exit(tail(outdir / "import.log"))
    test = (shared_data_dir() / "gsm8k/test.jsonl").read_text().splitlines()
    questions, few = outdir / "questions.jsonl", outdir / "questions-gguf.jsonl"
    questions.write_text("".join(line + "\n" for line in test[:args.questions]))
    few.write_text("".join(line + "\n" for line in test[:args.gguf_questions]))

    import torch
    import transformers
    from transformers import AutoTokenizer

    prompts = outdir / "prompts.json"  # the llama.cpp contestant's: the questions through the chat template
    prompts.write_text(json.dumps(chat_texts(AutoTokenizer.from_pretrained(folder),
                                             [json.loads(line)["question"] for line in test[:args.questions]])))
    if args.llama_sequences > 0:
        node_version, llama_skip = llama_cpp_setup(args.node)
    else:
        node_version, llama_skip = None, "left out (--llama-sequences 0)"
    llama_version = node_llama_cpp_version()
    llama = (f"llama.cpp (node-llama-cpp {llama_version}, GGUF, {args.llama_sequences} sequences)"
             if llama_version and not llama_skip else "llama.cpp (node-llama-cpp, GGUF)")

    print(machine_line(cpu=True))
    print(f"whetstone {whet_version(whet)}; torch {torch.__version__} ({usable_cores()} threads), "
          f"transformers {transformers.__version__}")
    if llama_skip:
        print(f"llama.cpp: not run: {llama_skip}")
    else:
        print(f"llama.cpp: node-llama-cpp {llama_version} (its prebuilt CPU binary), Node.js {node_version} "
              f"({usable_cores()} threads)")
    print(f"SmolLM2-135M-Instruct; GSM8K questions × {args.samples} samples, ≤ {args.new_tokens} new tokens, "
          f"temperature {args.temperature}, batch {args.batch}\n")
    report = report_head(cpu=True)
    report.update(settings=vars(args), runs={})
    runs = report["runs"]
    runs["whetstone (f32 folder)"] = whet_generate(whet, folder, questions, args, outdir / "whet-folder.parquet")
    runs[WHET_GGUF] = whet_generate(whet, GGUF, few, args, outdir / "whet-gguf.parquet")
    child_out = outdir / "transformers.json"
    r = run_child([sys.executable, __file__, "--whet", str(whet), "--child", str(folder), str(questions),
                   str(args.samples), str(args.new_tokens), str(args.temperature), str(args.batch), str(child_out)],
                  outdir / "transformers.log")
    runs["transformers (f32 folder)"] = r | (json.loads(child_out.read_text()) if r["rc"] == 0 else
                                             {"error": tail(outdir / "transformers.log")})
    runs[llama] = {"rc": None, "skipped": llama_skip} if llama_skip else \
        llama_cpp_generate(args.node, prompts, args, outdir)
    failed, table = [], []
    base = runs["transformers (f32 folder)"]
    base_rate = base["new_tokens"] / base["generate_seconds"] if base["rc"] == 0 else None
    for name, r in runs.items():
        if r.get("skipped"):
            table.append([name, "not run", "—", "—", "—", "—"])
            continue
        if r["rc"] != 0:
            failed.append(f"{name}: {r.get('error')}")
            continue
        rate = r["new_tokens"] / r["generate_seconds"]
        r["tokens_per_s"] = rate
        r["ratio"] = rate / base_rate if base_rate else None
        table.append([name, f"{r['new_tokens']:,}", f"{rate:,.1f}", f"{r['ratio']:.2f}×" if base_rate else "—",
                      f"{r['seconds']:,.0f} s", f"{r['rss_mib']:,.0f} MiB"])
    print("\n".join(fmt_table(["generation", "new tokens", "tokens/s", "÷ transformers", "process wall",
                               "peak RSS"], table, {0})))
    if llama_skip:
        print(f"\n{llama}: not run: {llama_skip}")
    whet_gguf, lcpp = runs[WHET_GGUF], runs[llama]
    if whet_gguf.get("rc") == 0 and lcpp.get("rc") == 0:
        report["gguf_whetstone_over_llama_cpp"] = whet_gguf["tokens_per_s"] / lcpp["tokens_per_s"]
        print(f"\nGGUF: whetstone ÷ llama.cpp = {whet_gguf['tokens_per_s']:,.1f} ÷ {lcpp['tokens_per_s']:,.1f} "
              f"tokens/s = {report['gguf_whetstone_over_llama_cpp']:.2f}× (goal: ≥ 1×; whetstone on "
              f"{args.gguf_questions} questions, llama.cpp on {args.questions})")
    return save_report(cache / "generate-results.json", report, failed)


if __name__ == "__main__":
    sys.exit(main())
