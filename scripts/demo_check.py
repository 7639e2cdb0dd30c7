#!/usr/bin/env python3
"""Checks the held-out accuracy of `whet demo --model …` with transformers: the last round's merged model (a
plain Hugging Face folder) answers the held-out sums greedily in transformers, scored by the same final-number
rule, and the accuracy is compared with the one whetstone measured.

  .venv/bin/python scripts/demo_check.py out/demo-smollm2 [--arm filtered] [--tolerance 2]

Prints both accuracies, their difference in points and how many answers are the same text; exits 1 when the
accuracies differ by more than --tolerance points, or when this script's scoring of whetstone's own answers
disagrees with whetstone's metrics. Meant for the full demo's 200 questions: on `--quick`'s 16, one answer is
6.25 points.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def numbers_in(text: str) -> list[float]:
    """whetstone's `numbers_in`: digits joined by `,` or `.` before a digit; a `-` not after a letter or digit."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        starts = c.isascii() and c.isdigit() or (
            c == "-" and i + 1 < len(text) and text[i + 1].isascii() and text[i + 1].isdigit()
            and (i == 0 or not (text[i - 1].isascii() and text[i - 1].isalnum()))
        )
        if not starts:
            i += 1
            continue
        start, i = i, i + 1
        while i < len(text):
            d = text[i]
            joins = d in ",." and i + 1 < len(text) and text[i + 1].isascii() and text[i + 1].isdigit()
            if (d.isascii() and d.isdigit()) or joins:
                i += 1
            else:
                break
        try:
            out.append(float(text[start:i].replace(",", "")))
        except ValueError:
            pass
    return out


def final_number(text: str):
    """whetstone's `final_number`: after the last `####`, else after the last "answer is", else the last number."""
    if "####" in text:
        tail = text[text.rfind("####") + 4 :]
    elif "answer is" in text.lower():
        tail = text[text.lower().rfind("answer is") + len("answer is") :]
    else:
        tail = text
    numbers = numbers_in(tail)
    if not numbers:
        return None
    return numbers[0] if len(tail) < len(text) else numbers[-1]


def right(response: str, reference: str) -> bool:
    got, want = final_number(response), final_number(reference)
    return got is not None and want is not None and abs(got - want) <= 1e-6 * max(abs(want), 1.0)


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
    acc_t = sum(right(ours[r["id"]], r["response"]) for r in test) / n
    acc_w_rescored = sum(right(theirs.get(r["id"], ""), r["response"]) for r in test) / n
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
