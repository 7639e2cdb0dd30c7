"""The Python half of scripts/gpu-bench.sh, run on the GPU machine (PyTorch, transformers, pyarrow there).

  gpu_bench.py parity MODEL GENERATED.parquet        whet's generation log-probs vs a transformers forward
  gpu_bench.py scores A.parquet B.parquet             two `whet score` outputs, row by row
  gpu_bench.py make-model TOKENIZER_DIR OUT           a TinyLlama-1.1B-shaped folder, random bf16 weights
  gpu_bench.py hf-generate MODEL PROMPTS.jsonl N NEW BATCH   transformers generate, tokens/s

Each prints one JSON object on its last line.
"""

import json
import shutil
import sys
import time

import pyarrow.parquet as pq
import torch

# The GPU when there is one; the CPU lets the script be tried out where it is written.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def parity(model_dir, generated):
    """Sum of natural-log probabilities of each sample's drawn tokens after its (raw) prompt, from one
    transformers forward in f32, against the `log_likelihood` whet recorded while generating."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(DEVICE).eval()
    rows = pq.read_table(generated).to_pylist()
    per_token, worst = [], 0.0
    with torch.no_grad():
        for r in rows:
            prompt = tok(r["prompt"]).input_ids
            ids = r["response_token_ids"]
            x = torch.tensor([prompt + ids], device=DEVICE)
            logp = torch.log_softmax(model(x).logits[0].double(), -1)
            picked = logp[len(prompt) - 1 : len(prompt) - 1 + len(ids)].gather(1, torch.tensor(ids, device=DEVICE)[:, None])
            diff = abs(picked.sum().item() - r["log_likelihood"]) / max(len(ids), 1)
            per_token.append(diff)
            worst = max(worst, diff)
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
    }


def scores(a, b):
    ra, rb = pq.read_table(a).to_pylist(), pq.read_table(b).to_pylist()
    diffs = [abs(x["mean_log_prob"] - y["mean_log_prob"]) for x, y in zip(ra, rb)]
    return {"rows": len(diffs), "max_abs_diff_mean_log_prob": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs)}


def make_model(tokenizer_dir, out):
    """TinyLlama-1.1B's shape (22 layers, hidden 2048, 32 heads of 64, 4 KV heads, MLP 5632) with the
    vocabulary of the tokenizer given; random weights (std 0.02) made on the GPU, saved as bf16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = json.load(open(f"{tokenizer_dir}/tokenizer.json"))
    ids = [*tok["model"]["vocab"].values(), *(t["id"] for t in tok["added_tokens"])]
    gen = json.load(open(f"{tokenizer_dir}/generation_config.json"))
    # The config in the layout `whet model tiny` writes, which mistral.rs and transformers both read.
    fields = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": max(ids) + 1,
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
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
    return {"parameters": params, "vocab": config.vocab_size, "seconds": time.time() - started}


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


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    result = {"parity": parity, "scores": scores, "make-model": make_model, "hf-generate": hf_generate}[command](*args)
    print(json.dumps(result))
