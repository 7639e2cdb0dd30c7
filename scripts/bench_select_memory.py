#!/usr/bin/env python3
"""Peak memory (and time) of selecting from 1M rows: `whet select` against the Python a user would write.

A benchmark, not a test. Input: 1,000,000 rows (--rows) cycling the T0 prompts with " #<row>" appended, each
with a 384-dimensional hashing embedding (`whet embed --embedder hashing --dim 384`), built once and cached in
.cache/bench/ (about 1.3 GB of Parquet). Every contestant runs as its own child process; its peak resident
memory (ru_maxrss from wait4) and wall time are reported.

  whetstone random   whet select IN OUT --method random --budget B
  whetstone kmq      whet select IN OUT --method kmq --budget B --k K   (k-means with K clusters first)
  python random      pyarrow.parquet.read_table(IN) → take B random rows → pq.write_table
  python kmq         read_table(IN) → embeddings as numpy → faiss.Kmeans(K, niter 25) → B rows spread evenly
                     over the clusters, random within each → pq.write_table

The Python contestants are what a notebook user would write (the whole table read at once), not tuned for
memory. B is 0.5% of the rows, K 256 (--k).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchlib import DIM, bench_dirs, build_cycled_jsonl, build_hashing_embeddings, rel, run_child, tail, write_json

PY_RANDOM = """
import sys, numpy as np, pyarrow.parquet as pq
inp, out, budget, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
t = pq.read_table(inp)
n = t.num_rows
rows = np.sort(np.random.default_rng(seed).choice(n, max(1, round(n * budget)), replace=False))
pq.write_table(t.take(rows), out)
"""

PY_KMQ = """
import sys, numpy as np, pyarrow.parquet as pq, faiss
inp, out, budget, seed, k = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t = pq.read_table(inp)
emb = t.column("embedding").combine_chunks()
x = np.ascontiguousarray(emb.values.to_numpy(zero_copy_only=False).reshape(-1, emb.type.list_size), dtype=np.float32)
km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, max_points_per_centroid=10**9)
km.train(x)
_, labels = km.index.search(x, 1)
labels = labels[:, 0]
b = max(1, round(len(x) * budget))
rng = np.random.default_rng(seed)
per = np.full(k, b // k) + (np.arange(k) < b % k)
rows = []
for c in range(k):
    members = np.nonzero(labels == c)[0]
    rows.extend(rng.choice(members, min(per[c], len(members)), replace=False))
pq.write_table(t.take(np.sort(np.array(rows))), out)
"""


def run(argv: list[str], log: Path) -> dict:
    """run_child, exiting when argv fails; its wall seconds and peak RSS (MiB)."""
    res = run_child(argv, log)
    if res["rc"] != 0:
        sys.exit(f"{argv[:3]} failed (rc {res['rc']}); see {log}:\n{tail(log)}")
    return {"seconds": res["seconds"], "peak_mib": res["rss_mib"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whet", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--budget", type=float, default=0.005)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cache, out = bench_dirs("select-memory")
    src = build_cycled_jsonl(args.rows, cache)
    inp = build_hashing_embeddings(Path(args.whet), src, cache / f"kmeans-{args.rows}rows-hashing-d{DIM}.parquet",
                                   cache)
    size = inp.stat().st_size
    print(f"input: {rel(inp)}: {args.rows:,} rows, {size / 2**30:.2f} GiB; budget {args.budget}, k {args.k}")
    emb_gib = args.rows * DIM * 4 / 2**30
    print(f"the embeddings alone: {emb_gib:.2f} GiB as float32\n")
    budget, seed = str(args.budget), str(args.seed)
    contestants = [
        ("whetstone random", [args.whet, "select", str(inp), str(out / "w-random.parquet"), "--method", "random",
                              "--budget", budget, "--seed", seed]),
        ("whetstone kmq", [args.whet, "select", str(inp), str(out / "w-kmq.parquet"), "--method", "kmq",
                           "--budget", budget, "--k", str(args.k), "--seed", seed]),
        ("python random", [sys.executable, "-c", PY_RANDOM, str(inp), str(out / "p-random.parquet"), budget, seed]),
        ("python kmq", [sys.executable, "-c", PY_KMQ, str(inp), str(out / "p-kmq.parquet"), budget, seed,
                        str(args.k)]),
    ]
    results = {}
    for name, argv in contestants:
        r = run(argv, out / f"{name.replace(' ', '-')}.log")
        results[name] = r
        print(f"  {name:<17} {r['peak_mib']:>8,.0f} MiB peak  {r['seconds']:>7.1f} s", flush=True)
    print()
    print(f"{'selection':<10} {'whetstone MiB':>14} {'python MiB':>11} {'memory: python ÷ whetstone':>27} "
          f"{'whetstone s':>12} {'python s':>9} {'time: python ÷ whetstone':>25}")
    for m in ("random", "kmq"):
        w, p = results[f"whetstone {m}"], results[f"python {m}"]
        results[m] = {"memory_ratio": p['peak_mib'] / w['peak_mib'], "time_ratio": p['seconds'] / w['seconds']}
        print(f"{m:<10} {w['peak_mib']:>14,.0f} {p['peak_mib']:>11,.0f} {results[m]['memory_ratio']:>26.2f}× "
              f"{w['seconds']:>12.1f} {p['seconds']:>9.1f} {results[m]['time_ratio']:>24.2f}×")
    print("\nwhetstone times include its coverage metrics (mean/max distance to the selection, on a sample of rows);"
          " the Python contestants compute none.")
    write_json(cache / "select-memory-results.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
