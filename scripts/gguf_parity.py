#!/usr/bin/env python3
"""Checks a `whet model import` of a GGUF file against transformers reading the same GGUF file (dequantised to
f32): the same token ids for the same texts, and the same log-probabilities for the same tokens.

  .venv/bin/python scripts/gguf_parity.py GGUF ROWS.jsonl [--tolerance 1e-4]

ROWS.jsonl (written by the SmolLM2 test, tests/cli/smollm2.rs) holds lines of two kinds:
  {"text": T, "ids": [...]}                     whetstone's ids for T (no special tokens added)
  {"ids": [...], "log_probs": {NAME: [...]}}    natural-log probability of ids[i + 1] after ids[..= i], for
                                                each of whetstone's forward passes NAME (mistral.rs, trainer)
Prints a table and one JSON line; exits 1 when an id differs or a log-prob is further than --tolerance.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("rows")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    rows = [json.loads(line) for line in open(args.rows)]

    texts = [r for r in rows if "text" in r]
    differing = [r["text"] for r in texts if tok(r["text"], add_special_tokens=False).input_ids != r["ids"]]

    worst, tokens = {}, 0
    with torch.no_grad():
        for r in (r for r in rows if "log_probs" in r):
            ids = r["ids"]
            logits = model(torch.tensor([ids])).logits[0].double()
            theirs = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            tokens += len(ids) - 1
            for what, ours in r["log_probs"].items():
                diff = (theirs - torch.tensor(ours, dtype=torch.float64)).abs().max().item()
                worst[what] = max(worst.get(what, 0.0), diff)

    print(f"{'check':<40} {'result':>16}")
    print(f"{'texts tokenised':<40} {len(texts):>16,}")
    print(f"{'texts with other ids':<40} {len(differing):>16,}")
    for what, diff in sorted(worst.items()):
        print(f"{'max |Δ log-prob|, ' + what:<40} {diff:>16.2e}")
    print(f"{'tokens compared (per forward pass)':<40} {tokens:>16,}")
    for text in differing[:3]:
        print("other ids for:", repr(text[:200]), file=sys.stderr)
    ok = not differing and texts and worst and max(worst.values()) <= args.tolerance
    print(json.dumps({"texts": len(texts), "texts_differing": len(differing), "tokens": tokens,
                      "max_abs_diff_log_prob": worst, "tolerance": args.tolerance, "ok": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
