#!/usr/bin/env python3
"""Checks that PEFT reads a whetstone adapter as whetstone does: the base with the adapter applied by PEFT gives
the logits of whetstone's merged folder (both run in transformers, f32, CPU).

  .venv/bin/python scripts/peft_check.py BASE ADAPTER MERGED

BASE: the base model folder; ADAPTER: `whet train` output (PEFT layout); MERGED: `whet model merge BASE ADAPTER
MERGED`. Prints the largest logit difference; exits 1 above --tolerance (default 1e-4).
"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import peft
import torch
from transformers import AutoModelForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("adapter")
    ap.add_argument("merged")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    base = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32)
    adapted = peft.PeftModel.from_pretrained(base, args.adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(args.merged, torch_dtype=torch.float32).eval()
    ids = torch.randint(0, base.config.vocab_size, (4, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, m = adapted(input_ids=ids).logits, merged(input_ids=ids).logits
        plain = peft.PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32), args.adapter
        )
        with plain.disable_adapter():
            b = plain(input_ids=ids).logits
    diff = (a - m).abs().max().item()
    moved = (a - b).abs().max().item()
    print(f"PEFT {peft.__version__}: base + adapter vs whetstone's merged folder, max |Δ logit| = {diff:.2e} "
          f"(the adapter moves the logits by up to {moved:.2e})")
    return 0 if diff <= args.tolerance and moved > 10 * args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
