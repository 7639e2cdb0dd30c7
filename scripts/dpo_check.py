#!/usr/bin/env python3
"""Checks whetstone's DPO loss and gradients against TRL's DPOTrainer formula, computed here in PyTorch.

  .venv/bin/python scripts/dpo_check.py CASE.json

CASE.json (written by the test `dpo_gradients_match_finite_differences_and_trl_s_formula_computed_in_pytorch`):
`base` (a model folder), `adapter` (a PEFT LoRA adapter of it), `beta`, `rpo_alpha`, `pairs` (token ids:
`prompt_len`, `chosen`, `rejected`, each answer after its prompt) and `whetstone` (its `loss` and the
`gradients` of every adapter tensor, by name).

The formula is TRL 1.16's `DPOTrainer._compute_loss` with `loss_type=["sigmoid", "sft"]`,
`loss_weights=[1, rpo_alpha]` (its RPO mix): per-token log-probabilities of the completion summed per answer;
the reference is the PEFT model with its adapter disabled, under no_grad;
`-logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))` averaged over pairs, plus
`rpo_alpha *` the mean negative log-likelihood over all chosen completion tokens. Each answer runs on its own
(no padding, no packing), in float32 on the CPU. Exits 1 when the loss or any gradient differs by more than
--tolerance (default 1e-4).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import peft
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM


def completion_logps(model, ids, prompt_len):
    """Per-token log-probabilities of the completion tokens (TRL's per_token_logps under the shifted mask)."""
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0].float()
    per_token = logits[:-1].log_softmax(-1).gather(-1, x[0, 1:, None]).squeeze(-1)
    mask = torch.zeros(len(ids) - 1)
    mask[prompt_len - 1 :] = 1.0  # the target at position j + 1 is a completion token
    return per_token[mask.bool()]


def name_of(parameter_name):
    return parameter_name.removeprefix("base_model.model.").replace(".default.", ".")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    case = json.load(open(args.case))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(case["base"], dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, case["adapter"], is_trainable=True)
    model.eval()  # no dropout (the adapter's is 0 anyway)
    beta, rpo_alpha = case["beta"], case["rpo_alpha"]

    chosen, rejected, ref_chosen, ref_rejected, chosen_tokens = [], [], [], [], []
    for p in case["pairs"]:
        c = completion_logps(model, p["chosen"], p["prompt_len"])
        r = completion_logps(model, p["rejected"], p["prompt_len"])
        chosen.append(c.sum())
        rejected.append(r.sum())
        chosen_tokens.append(c)
        with torch.no_grad(), model.disable_adapter():
            ref_chosen.append(completion_logps(model, p["chosen"], p["prompt_len"]).sum())
            ref_rejected.append(completion_logps(model, p["rejected"], p["prompt_len"]).sum())
    chosen, rejected = torch.stack(chosen), torch.stack(rejected)
    ref_chosen, ref_rejected = torch.stack(ref_chosen), torch.stack(ref_rejected)
    delta = (chosen - ref_chosen) - (rejected - ref_rejected)
    loss = (-F.logsigmoid(beta * delta)).mean()
    if rpo_alpha:
        loss = loss + rpo_alpha * (-torch.cat(chosen_tokens).mean())
    loss.backward()

    ours = case["whetstone"]
    rows = [("loss", abs(loss.item() - ours["loss"]), abs(loss.item()))]
    theirs = {name_of(n): p.grad for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(theirs) ^ set(ours["gradients"]))
    if missing:
        print(f"adapter tensors named on one side only: {missing}")
        return 1
    for name in sorted(theirs):
        mine = torch.tensor(ours["gradients"][name]).reshape(theirs[name].shape)
        rows.append((name, (mine - theirs[name]).abs().max().item(), theirs[name].abs().max().item()))
    width = max(len(r[0]) for r in rows)
    print(f"{'quantity':<{width}}  {'max |whetstone - PyTorch|':>26}  {'max |PyTorch|':>13}")
    for name, diff, scale in rows:
        print(f"{name:<{width}}  {diff:>26.2e}  {scale:>13.3e}")
    worst = max(rows, key=lambda r: r[1])
    print(f"{len(case['pairs'])} pairs, beta {beta}, rpo_alpha {rpo_alpha}: loss {loss.item():.6f} (whetstone "
          f"{ours['loss']:.6f}); largest difference {worst[1]:.2e} ({worst[0]})")
    if worst[1] > args.tolerance:
        print(f"differ by more than {args.tolerance}")
        return 1
    print(f"agree within {args.tolerance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
