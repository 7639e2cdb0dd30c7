#!/usr/bin/env python3
"""Saves a model folder again the way transformers 5 saves it: `from_pretrained` then `save_pretrained`, model
and tokenizer. What comes out is what a user's own fine-tuning script writes (rope θ under `rope_parameters`,
`dtype`, the chat template in `chat_template.jinja`, transformers 5's tokenizer_config.json).

  .venv/bin/python scripts/transformers5_save.py SOURCE OUT

Made `tests/fixtures/transformers5-tiny` from a `whet model tiny` folder.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, out = sys.argv[1:]
    if int(transformers.__version__.split(".")[0]) < 5:
        print(f"transformers {transformers.__version__}: this needs 5 or later", file=sys.stderr)
        return 2
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"saved {source} with transformers {transformers.__version__} to {out}: {sorted(os.listdir(out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
