#!/usr/bin/env python3
"""Checks the held-out accuracy of `whet demo --model …` with transformers: the last round's merged model (a
plain Hugging Face folder) answers the held-out sums greedily in transformers, scored by whetstone's own final-number
verifier (`whet reward --with gsm8k`), and the accuracy is compared with the one whetstone measured.

  .venv/bin/python scripts/demo_check.py out/demo-smollm2 [--arm filtered] [--tolerance 2]

Prints both accuracies, their difference in points and how many answers are the same text; exits 1 when the
accuracies differ by more than --tolerance points, or when this script's scoring of whetstone's own answers
disagrees with whetstone's metrics. Meant for the full demo's 200 questions: on `--quick`'s 16, one answer is
6.25 points.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def whet_binary() -> Path:
    """The newest `whet` the checkout built (release or debug)."""
    built = [p for p in (REPO / "target/release/whet", REPO / "target/debug/whet") if p.is_file()]
    if not built:
        sys.exit("no whet built: run `cargo build --release --bin whet` first")
    return max(built, key=lambda p: p.stat().st_mtime)


def rewards(rows: list[dict], scratch: Path) -> dict[str, float]:
    """`whet reward --with gsm8k` (whetstone's own final-number verifier) on rows with id, prompt, response and
    reference: the reward of each id."""
    given, scored = scratch / "answers.jsonl", scratch / "scored.parquet"
    given.write_text("".join(json.dumps(r) + "\n" for r in rows))
    subprocess.run([str(whet_binary()), "reward", "--with", "gsm8k", str(given), str(scored)], check=True,
                   stdout=subprocess.DEVNULL)
    return {r["id"]: r["reward"] for r in pq.read_table(scored, columns=["id", "reward"]).to_pylist()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", type=Path, help="the demo's folder (whet demo --out)")
    ap.add_argument("--arm", default="filtered", choices=["filtered", "control"])
    ap.add_argument("--tolerance", type=float, default=2.0, help="points")
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()

    arm = args.demo / args.arm
    metrics = [json.loads(line) for line in (arm / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = metrics[-1]
    round_dir = arm / f"round-{last['round']}"
    model_dir = round_dir / "model"
    # One greedy sample per question, named by the question's id.
    theirs = {r["prompt_id"]: r["response"] for r in pq.read_table(round_dir / "eval/answers.parquet").to_pylist()}
    test = [json.loads(line) for line in (args.demo / "data/test.jsonl").read_text().splitlines() if line.strip()]
    # As many new tokens as the rounds' own evaluation.
    max_new = json.loads((arm / "rounds.json").read_text())["eval_max_tokens"]

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ours = {}
    for start in range(0, len(test), args.batch):
        rows = test[start : start + args.batch]
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                          add_generation_prompt=True)
            for r in rows
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        for r, ids in zip(rows, out[:, enc["input_ids"].shape[1] :]):
            ours[r["id"]] = tokenizer.decode(ids, skip_special_tokens=True)
        print(f"transformers: {min(start + args.batch, len(test))}/{len(test)} answered", file=sys.stderr)

    n = len(test)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "theirs").mkdir()
        (scratch / "ours").mkdir()

        def graded(answers: dict[str, str], where: str) -> dict[str, float]:
            return rewards([{"id": r["id"], "prompt": r["prompt"], "response": answers.get(r["id"], ""),
                             "reference": r["response"]} for r in test], scratch / where)

        acc_t = sum(graded(ours, "ours").values()) / n
        acc_w_rescored = sum(graded(theirs, "theirs").values()) / n
    acc_w = float(last["held_out_accuracy"])
    same = sum(ours[r["id"]].strip() == theirs.get(r["id"], "").strip() for r in test)
    diff = 100 * abs(acc_t - acc_w)
    print(f"| model | {model_dir} |")
    print("|---|---|")
    print(f"| held-out questions | {n} |")
    print(f"| whetstone's accuracy (its metrics; rescored here) | {100 * acc_w:.1f}% ({100 * acc_w_rescored:.1f}%) |")
    print(f"| transformers greedy accuracy | {100 * acc_t:.1f}% |")
    print(f"| difference | {diff:.1f} points (tolerance {args.tolerance}) |")
    print(f"| same answer text | {same}/{n} |")
    if abs(acc_w_rescored - acc_w) > 1e-9:
        print("whetstone's metrics and this script's scoring of its answers disagree", file=sys.stderr)
        return 1
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
