#!/usr/bin/env python3
"""Benchmark `whet embed --embedder minilm` against sentence-transformers: all-MiniLM-L6-v2 on CPU, same texts.

A benchmark, not a test. Both contestants embed the same texts with the same model folder (--model-dir, default
.cache/models/all-MiniLM-L6-v2); throughput is sentences per second.

  whetstone              whet embed SAMPLE.jsonl OUT.parquet --embedder minilm --text prompt   (its own child
                         process, WHETSTONE_MINILM=--model-dir). Two rows in the table: "stage", the embed stage's
                         wall time from OUT.parquet.manifest.json (`seconds`), and "process", the child's whole
                         wall time (start, loading the model, reading JSONL, writing Parquet)
  whetstone bf16         the same with --precision bf16 (products of values rounded to bfloat16), where the
                         processor has AVX512-BF16 (else not run, and said so): an extra pair of rows with its
                         own cosine, never replacing the f32 rows
  sentence-transformers  SentenceTransformer(model_dir, device="cpu") in this process; after a short untimed
                         warm-up encode, model.encode(texts, batch_size=--st-batch-size, normalize_embeddings=True,
                         convert_to_numpy=True) is timed (encode only; loading the model is reported apart)

Texts: the `prompt` texts of ../shared/data/t0-templates (WHETSTONE_SHARED_DATA overrides ../shared/data),
converted once with `whet convert` to .cache/bench/embed-t0.parquet, then --rows rows (default 2000) sampled with
numpy.random.default_rng(--seed) (without replacement while --rows fits T0, in the sampled order) and written to
.cache/bench/embed-sample-<rows>rows-seed<seed>.jsonl ({"prompt", "response"}), which whetstone reads.

Every contestant runs --repeat times (order rotated per round); the median time is reported. Threads: library
defaults (torch's intra-op thread count and the whet child's are printed, not set).

Checks (exit 1 when one fails): every run succeeds; whetstone's manifest says rows.out = --rows; its Parquet holds
--rows embeddings of dim 384 whose `prompt` column equals the sample, in order; no embedding is non-finite; the
per-row cosine between whetstone's and sentence-transformers' embeddings is at least --min-cosine (default 0.999)
on every row (min and mean reported), at bf16 too (whose goal, 0.9999, is printed against its min).
Usually run through scripts/bench-embed.sh, which sets up .venv, fetches the model and builds whet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never reach for the Hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pyarrow
import pyarrow.parquet as pq

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

try:
    import transformers
except ImportError:  # only for printing its version
    transformers = None
try:
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in the report
except AttributeError:
    pass

from benchlib import (REPO, atomic_open, bench_dirs, fmt_table, machine_line, rel, report_head, rotated, run_child,
                      run_whet_stage, save_report, tail, t0_sources, whet_binary, whet_version)

DIM = 384  # all-MiniLM-L6-v2's

ST = "sentence-transformers"
WHET = "whetstone"
WHET_BF16 = "whetstone bf16"
PRECISION = {WHET: "f32", WHET_BF16: "bf16"}
CONTESTANTS = [WHET, WHET_BF16, ST]
BF16_GOAL = 0.9999  # issue 23: the bf16 row counts at this cosine or above


def bf16_products() -> bool:
    """Whether this processor has AVX512-BF16 (what `whet embed --precision bf16` needs)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags and " avx512f" in flags


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def build_t0_parquet(whet: Path, cache: Path, logdir: Path) -> Path:
    """`whet convert ../shared/data/t0-templates .cache/bench/embed-t0.parquet`, once (a .meta.json marks it done)."""
    src_dir, sources = t0_sources()
    out = cache / "embed-t0.parquet"
    meta = out.with_name(out.name + ".meta.json")
    if out.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m.get("bytes") == out.stat().st_size and m.get("source") == str(src_dir):
            return out
    for stale in (out, out.with_name(out.name + ".manifest.json"), meta):
        stale.unlink(missing_ok=True)
    argv = [str(whet), "convert", str(src_dir), str(out)]
    print(f"building {rel(out)}: whet convert {src_dir} {rel(out)} ...", flush=True)
    log = logdir / "convert-t0.log"
    res = run_child(argv, log, cwd=REPO)
    if res["rc"] != 0 or not out.exists():
        sys.exit(f"whet convert failed (rc={res['rc']}); last lines of {rel(log)}:\n{tail(log)}")
    rows = pq.ParquetFile(out).metadata.num_rows
    meta.write_text(json.dumps({"bytes": out.stat().st_size, "rows": rows, "source": str(src_dir),
                                "files": len(sources)}) + "\n")
    return out


def build_sample(t0: Path, rows: int, seed: int, cache: Path) -> tuple[Path, list[str], dict]:
    """The sample JSONL ({"prompt", "response"}), its prompts in order, and a description; the file is built once."""
    path = cache / f"embed-sample-{rows}rows-seed{seed}.jsonl"
    meta_path = cache / f"embed-sample-{rows}rows-seed{seed}.meta.json"
    t0_bytes = t0.stat().st_size
    if path.exists() and meta_path.exists():
        m = json.loads(meta_path.read_text())
        if m.get("bytes") == path.stat().st_size and m.get("t0_bytes") == t0_bytes and m.get("rows") == rows:
            with open(path, encoding="utf-8") as f:
                texts = [json.loads(line)["prompt"] for line in f if line.strip()]
            if len(texts) == rows:
                return path, texts, m
    table = pq.read_table(t0, columns=["prompt", "response"])
    n = table.num_rows
    if n == 0:
        sys.exit(f"{rel(t0)} has no rows")
    rng = np.random.default_rng(seed)
    replace = rows > n
    idx = rng.choice(n, size=rows, replace=replace)
    prompts = table.column("prompt").take(pyarrow.array(idx)).to_pylist()
    responses = table.column("response").take(pyarrow.array(idx)).to_pylist()
    print(f"building {rel(path)} ({rows:,} of {n:,} T0 rows, seed {seed}"
          f"{', with replacement' if replace else ''}) ...", flush=True)
    with atomic_open(path, "w", encoding="utf-8") as out:
        for p, r in zip(prompts, responses):
            out.write(json.dumps({"prompt": p, "response": r or ""}, ensure_ascii=False) + "\n")
    m = {"bytes": path.stat().st_size, "rows": rows, "seed": seed, "t0_rows": n, "t0_bytes": t0_bytes,
         "replace": replace, "source": str(t0)}
    meta_path.write_text(json.dumps(m) + "\n")
    return path, prompts, m


def load_embeddings(path: Path) -> tuple[np.ndarray, list[str]]:
    """The `embedding` column as a float32 matrix (rows × dim) and the `prompt` column, in file order."""
    t = pq.read_table(path, columns=["prompt", "embedding"])
    col = t.column("embedding").combine_chunks()
    if col.null_count:
        raise ValueError(f"{rel(path)}: {col.null_count} null embeddings")
    dim = getattr(col.type, "list_size", None)
    if dim is None:  # a variable-size list: take the row length from the data
        dim = len(col[0]) if len(col) else 0
    x = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    return np.ascontiguousarray(x), t.column("prompt").to_pylist()


# ---------------------------------------------------------------------------------------------------------------
# Contestants


def run_whet(whet: Path, inp: Path, out: Path, model_dir: Path, precision: str) -> dict:
    argv = [str(whet), "embed", str(inp), str(out), "--embedder", "minilm", "--text", "prompt", "--precision",
            precision]
    env = dict(os.environ, WHETSTONE_MINILM=str(model_dir))
    return run_whet_stage(argv, out, lambda m: dict(stage_s=float(m["seconds"]), rows_out=int(m["rows"]["out"]),
                                                    embedder=(m.get("parameters") or {}).get("embedder")),
                          env=env, cwd=REPO)


def run_st(model: SentenceTransformer, texts: list[str], batch_size: int) -> dict:
    start = time.perf_counter()
    emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False)
    secs = time.perf_counter() - start
    return {"encode_s": secs, "rc": 0, "embeddings": np.asarray(emb, dtype=np.float32)}


# ---------------------------------------------------------------------------------------------------------------
# Report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whet", required=True, help="path of the whet binary")
    ap.add_argument("--rows", type=int, default=2000, help="sentences sampled from T0 (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contestant; the median is reported (default 1)")
    ap.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers batch size (default 32)")
    ap.add_argument("--model-dir", default=str(REPO / ".cache" / "models" / "all-MiniLM-L6-v2"),
                    help="all-MiniLM-L6-v2 folder, for both contestants (default .cache/models/all-MiniLM-L6-v2)")
    ap.add_argument("--min-cosine", type=float, default=0.999,
                    help="check: every row's cosine between the two contestants' embeddings (default 0.999)")
    args = ap.parse_args()
    if args.rows < 1 or args.repeat < 1 or args.st_batch_size < 1:
        sys.exit("--rows, --repeat and --st-batch-size must be positive")

    whet = whet_binary(args.whet)
    model_dir = Path(args.model_dir).resolve()
    if not (model_dir / "model.safetensors").is_file():
        sys.exit(f"no model.safetensors in {model_dir} (run scripts/fetch-minilm.sh)")
    cache, outdir = bench_dirs("embed-out")

    version = whet_version(whet)
    versions = {"python": platform.python_version(), "numpy": np.__version__, "pyarrow": pyarrow.__version__,
                "torch": torch.__version__, "sentence-transformers": sentence_transformers.__version__,
                "transformers": getattr(transformers, "__version__", None), "whet": version}
    torch_threads = torch.get_num_threads()
    thread_env = {v: os.environ[v] for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM") if v in os.environ}
    print(machine_line(cpu=True))
    print(f"{version or whet}, sentence-transformers {sentence_transformers.__version__}, torch "
          f"{torch.__version__}, transformers {versions['transformers']}, numpy {np.__version__}, pyarrow "
          f"{pyarrow.__version__} (python {platform.python_version()})")
    print(f"torch intra-op threads: {torch_threads}; thread env: "
          + (", ".join(f"{k}={v}" for k, v in thread_env.items()) or "none set (library defaults)"))

    t0 = build_t0_parquet(whet, cache, outdir)
    sample, texts, sample_meta = build_sample(t0, args.rows, args.seed, cache)
    n = len(texts)

    print(f"loading {rel(model_dir)} into sentence-transformers (cpu) ...", flush=True)
    start = time.perf_counter()
    model = SentenceTransformer(str(model_dir), device="cpu")
    st_load_s = time.perf_counter() - start
    max_seq = model.max_seq_length
    token_ids = model.tokenizer(texts, truncation=False, verbose=False)["input_ids"]  # to report truncation
    tok_lens = np.array([len(ids) for ids in token_ids])
    truncated = int((tok_lens > max_seq).sum())
    model.encode(texts[:8], batch_size=args.st_batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)  # warm-up, untimed
    print(f"sample: {rel(sample)}: {n:,} prompts, {sum(map(len, texts)) / n:,.0f} chars and {tok_lens.mean():.0f} "
          f"tokens on average (median {np.median(tok_lens):.0f}, max {tok_lens.max():,}); {truncated:,} "
          f"({truncated / n:.1%}) longer than max_seq_length {max_seq}, truncated")
    print(f"sentence-transformers: model loaded in {st_load_s:.2f} s, batch size {args.st_batch_size}; "
          f"{args.repeat} run(s) each, median reported\n", flush=True)

    outs = {name: outdir / f"whet-{PRECISION[name]}-{n}rows-seed{args.seed}.parquet" for name in PRECISION}
    contestants = [c for c in CONTESTANTS if c != WHET_BF16 or bf16_products()]
    if WHET_BF16 not in contestants:
        print(f"{WHET_BF16}: not run (this processor has no AVX512-BF16)\n", flush=True)
    runs: dict[str, list[dict]] = {c: [] for c in contestants}
    st_emb = None
    for r in range(args.repeat):
        for name in rotated(contestants, r):
            try:
                res = (run_st(model, texts, args.st_batch_size) if name == ST
                       else run_whet(whet, sample, outs[name], model_dir, PRECISION[name]))
            except Exception as e:  # a contestant that throws is a failed run, not a crashed benchmark
                res = {"rc": -1, "error": f"{type(e).__name__}: {e}"}
            if "embeddings" in res:
                st_emb = res.pop("embeddings")
            runs[name].append(res)
            status = "ok" if res.get("rc") == 0 else f"FAILED rc={res.get('rc')}"
            if "stage_s" in res:
                t = f"{res['stage_s']:8.2f} s stage, {res['process_s']:.2f} s process"
            elif "encode_s" in res:
                t = f"{res['encode_s']:8.2f} s encode"
            else:
                t = ""
            print(f"  round {r + 1}/{args.repeat}  {name:<22} {t}  {status}", flush=True)

    checks: list[str] = []
    ok = {name: all(x.get("rc") == 0 for x in runs[name]) for name in contestants}
    for name in contestants:
        if not ok[name]:
            err = next((x.get("error") for x in runs[name] if x.get("rc") != 0), "no run")
            checks.append(f"{name} failed: {err}")

    results: list[dict] = []
    embeddings: dict[str, np.ndarray] = {}
    for name in (c for c in contestants if c != ST and ok[c]):
        w = runs[name]
        stage_s = statistics.median(x["stage_s"] for x in w)
        process_s = statistics.median(x["process_s"] for x in w)
        rss = max(x["rss_mib"] for x in w)
        for x in w:
            if x["rows_out"] != n:
                checks.append(f"{name}'s manifest says rows.out = {x['rows_out']:,}, the sample has {n:,}")
                break
        results.append({"contestant": f"{name} (stage)", "sentences": n, "seconds": stage_s, "runs": w})
        results.append({"contestant": f"{name} (process)", "sentences": n, "seconds": process_s, "rss_mib": rss})
        try:
            w_emb, w_prompts = load_embeddings(outs[name])
            if w_emb.shape != (n, DIM):
                checks.append(f"{name}'s embeddings are {w_emb.shape[0]:,} × {w_emb.shape[1]}, expected "
                              f"{n:,} × {DIM}")
            elif w_prompts != texts:
                bad = next(i for i, (a, b) in enumerate(zip(w_prompts, texts)) if a != b)
                checks.append(f"{name}'s output `prompt` column differs from the sample (first at row {bad}): "
                              f"order or text changed")
            else:
                embeddings[name] = w_emb
        except Exception as e:
            checks.append(f"reading {name}'s embeddings from {rel(outs[name])}: {type(e).__name__}: {e}")
    if ok[ST]:
        results.append({"contestant": ST, "sentences": n,
                        "seconds": statistics.median(x["encode_s"] for x in runs[ST]),
                        "load_s": st_load_s, "batch_size": args.st_batch_size, "runs": runs[ST]})
        if st_emb is None or st_emb.shape != (n, DIM):
            checks.append(f"sentence-transformers returned {getattr(st_emb, 'shape', None)}, expected {n:,} × {DIM}")
            st_emb = None

    cosines: dict[str, dict] = {}
    if st_emb is not None and not np.isfinite(st_emb).all():
        checks.append(f"{ST}: {int((~np.isfinite(st_emb)).any(axis=1).sum()):,} rows with non-finite values")
    for name, w_emb in embeddings.items():
        if st_emb is None:
            break
        if not np.isfinite(w_emb).all():
            checks.append(f"{name}: {int((~np.isfinite(w_emb)).any(axis=1).sum()):,} rows with non-finite values")
        wn = np.linalg.norm(w_emb.astype(np.float64), axis=1)
        sn = np.linalg.norm(st_emb.astype(np.float64), axis=1)
        cos = (w_emb.astype(np.float64) * st_emb.astype(np.float64)).sum(axis=1) / np.maximum(wn * sn, 1e-30)
        worst = int(np.argmin(cos))
        cosines[name] = {"min": float(cos.min()), "mean": float(cos.mean()), "p01": float(np.quantile(cos, 0.01)),
                         "below_threshold": int((cos < args.min_cosine).sum()), "threshold": args.min_cosine,
                         "worst_row": worst, "worst_row_tokens": int(tok_lens[worst]),
                         "whetstone_norms": [float(wn.min()), float(wn.max())]}
        if not np.isfinite(cos).all() or cos.min() < args.min_cosine:
            checks.append(f"cosine({name}, sentence-transformers) min {cos.min():.6f} < {args.min_cosine} "
                          f"({cosines[name]['below_threshold']:,} rows below; worst row {worst}, {tok_lens[worst]} "
                          f"tokens)")

    st_rate = None
    for row in results:
        row["sentences_per_s"] = row["sentences"] / row["seconds"] if row["seconds"] > 0 else float("inf")
        if row["contestant"] == ST:
            st_rate = row["sentences_per_s"]
    for row in results:
        row["ratio_vs_st"] = row["sentences_per_s"] / st_rate if st_rate else None

    def cos_cell(contestant: str) -> str:
        c = cosines.get(contestant.removesuffix(" (stage)"))
        return f"{c['min']:.6f}" if c and contestant.endswith("(stage)") else ""

    table = [[row["contestant"], f"{row['sentences']:,}", f"{row['seconds']:.3f}", f"{row['sentences_per_s']:,.1f}",
              f"{row['ratio_vs_st']:.2f}×" if row["ratio_vs_st"] else "-", cos_cell(row["contestant"])]
             for row in results]
    for name in contestants:
        if not ok[name]:
            table.append([name, f"{n:,}", "-", "-", "FAILED", ""])
    block = [f"all-MiniLM-L6-v2 on CPU, {n:,} T0 prompts (seed {args.seed}), median of {args.repeat} run(s):"]
    block += fmt_table(["contestant", "sentences", "seconds", "sentences/s", "vs sentence-transformers",
                        "min cosine to s-t"], table, left={0})
    by = {row["contestant"]: row for row in results}
    for name in PRECISION:
        stage, process = by.get(f"{name} (stage)"), by.get(f"{name} (process)")
        if stage and process:
            block.append(f"{name}: stage {stage['seconds']:.2f} s of a {process['seconds']:.2f} s process "
                         f"(start, model load, reading and writing {process['seconds'] - stage['seconds']:.2f} s), "
                         f"peak RSS {process['rss_mib']:.0f} MiB")
            if ST in by:
                block.append(f"{name} vs sentence-transformers: {stage['ratio_vs_st']:.2f}× (stage), "
                             f"{process['ratio_vs_st']:.2f}× (whole process) the sentences/s")
    if ST in by:
        block.append(f"sentence-transformers: encode only, batch size {args.st_batch_size}, {torch_threads} torch "
                     f"threads; model load {st_load_s:.2f} s (not in the table)")
    for name, c in cosines.items():
        goal = (f"; issue 23's bf16 goal, min ≥ {BF16_GOAL}: {'met' if c['min'] >= BF16_GOAL else 'NOT met'}"
                if name == WHET_BF16 else "")
        block.append(f"cosine({name}, sentence-transformers) per row: min {c['min']:.6f}, mean {c['mean']:.6f}, "
                     f"1st percentile {c['p01']:.6f} (check: min ≥ {args.min_cosine}{goal}); norms "
                     f"{c['whetstone_norms'][0]:.4f}..{c['whetstone_norms'][1]:.4f}")
    for c in checks:
        block.append(f"CHECK FAILED: {c}")
    print()
    print("\n".join(block), flush=True)

    report = {
        **report_head(cpu=True),
        "versions": versions, "threads": {"torch": torch_threads, "env": thread_env},
        "parameters": {"rows": n, "seed": args.seed, "repeat": args.repeat, "st_batch_size": args.st_batch_size,
                       "model_dir": str(model_dir), "min_cosine": args.min_cosine},
        "sample": {"path": str(sample), **sample_meta, "mean_chars": sum(map(len, texts)) / n,
                   "mean_tokens": float(tok_lens.mean()), "max_seq_length": max_seq, "truncated": truncated},
        "results": results, "cosine": cosines, "checks_failed": checks,
    }
    return save_report(cache / "embed-results.json", report, checks)


if __name__ == "__main__":
    sys.exit(main())
