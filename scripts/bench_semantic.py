#!/usr/bin/env python3
"""Benchmark semantic dedup: `whet dedup --method semantic` (hnsw_rs) against faiss HNSW, same embeddings.

A benchmark, not a test. Both sides find pairs of rows whose cosine similarity is at least --threshold among
each row's --neighbours nearest neighbours, then group them (union-find) and keep the first row of each group:

  whetstone     whet dedup IN OUT --method semantic --threshold T --index I   (its own child process), for
                each I of --indexes: `clusters` (default: SemDeDup's k-means partition, √rows clusters, each row
                compared exactly with the rows of its 2 nearest clusters) and `hnsw` (hnsw_rs, M 16,
                ef_construction 100, ef_search 64, 16 neighbours). Stage seconds from OUT.manifest.json; the
                dropped rows from OUT.rejected.jsonl.
  faiss HNSW    IndexHNSWFlat(d, 16, inner product), efConstruction 100, efSearch 64, search 16 neighbours;
                pairs, groups and dropped rows computed here the same way. Build + search timed.
  exact         IndexFlatIP.range_search(X, T): every pair at or above T. The truth both are scored against.

Recall = dropped rows that the truth also drops ÷ rows the truth drops (rows are matched by id, counting
repeats, since exact copies share an id). Goal: recall ≥ 0.95; then the time ratio is what counts.

Case: .cache/embeddings/t0-minilm.parquet (real all-MiniLM-L6-v2 embeddings of T0; `whet embed --embedder minilm`
of the T0 templates), or --input another dataset with an `embedding` column.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from benchlib import REPO, bench_dirs, fmt_table


def load(path: Path) -> tuple[np.ndarray, list[str]]:
    t = pq.read_table(path, columns=["id", "embedding"])
    emb = t.column("embedding").combine_chunks()
    dim = emb.type.list_size
    x = np.asarray(emb.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    return np.ascontiguousarray(x), t.column("id").to_pylist()


def dropped_rows(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find with the smaller index as root; every row but its group's first is dropped."""
    parent = np.arange(n)

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            parent[hi] = lo
    roots = np.array([root(i) for i in range(n)])
    return np.nonzero(roots != np.arange(n))[0]


def recall(found_ids: list[str], truth_ids: list[str]) -> float:
    if not truth_ids:
        return 1.0
    f, t = collections.Counter(found_ids), collections.Counter(truth_ids)
    return sum(min(c, f[i]) for i, c in t.items()) / len(truth_ids)


def run_whet(whet: Path, inp: Path, out: Path, threshold: float, index: str) -> dict:
    start = time.perf_counter()
    p = subprocess.run(
        [str(whet), "dedup", str(inp), str(out), "--method", "semantic", "--threshold", str(threshold),
         "--index", index],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"whet dedup failed:\n{p.stderr[-3000:]}")
    m = json.loads(Path(f"{out}.manifest.json").read_text())
    ids = []
    rejected = Path(f"{out}.rejected.jsonl")
    if rejected.exists():
        with open(rejected, encoding="utf-8") as f:
            for line in f:
                ids.append(json.loads(line)["row"]["id"])
    return {"seconds": m["seconds"], "process_seconds": wall, "dropped_ids": ids, "pairs": m["results"]["similar_pairs"]}


def run_faiss_hnsw(x: np.ndarray, threshold: float, neighbours: int) -> dict:
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    index.add(x)
    index.hnsw.efSearch = 64
    sims, nbrs = index.search(x, neighbours)
    seconds = time.perf_counter() - start
    rows = np.repeat(np.arange(len(x)), neighbours)
    keep = (nbrs.ravel() >= 0) & (nbrs.ravel() != rows) & (sims.ravel() >= threshold)
    pairs = np.stack([rows[keep], nbrs.ravel()[keep]], axis=1)
    return {"seconds": seconds, "pairs": pairs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whet", required=True)
    ap.add_argument("--input", default=str(REPO / ".cache/embeddings/t0-minilm.parquet"))
    ap.add_argument("--thresholds", default="0.95,0.9")
    ap.add_argument("--neighbours", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--indexes", default="clusters,hnsw", help="whetstone's --index values to run")
    args = ap.parse_args()
    inp = Path(args.input)
    if not inp.exists():
        sys.exit(f"{inp} is missing: make it with `whet embed ../shared/data/t0-templates {inp} --embedder minilm`")
    x, ids = load(inp)
    cache, out_dir = bench_dirs("semantic")
    print(f"{len(x):,} rows × {x.shape[1]} from {inp}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads,"
          f" {os.cpu_count()} cpus")
    results = []
    for threshold in [float(t) for t in args.thresholds.split(",")]:
        start = time.perf_counter()
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(x)
        lims, sims, nbrs = flat.range_search(x, threshold)
        exact_seconds = time.perf_counter() - start
        rows = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
        keep = nbrs != rows
        truth = dropped_rows(len(x), np.stack([rows[keep], nbrs[keep]], axis=1))
        truth_ids = [ids[i] for i in truth]
        faiss_runs = [run_faiss_hnsw(x, threshold, args.neighbours) for _ in range(args.repeat)]
        f = faiss_runs[0]
        f_ids = [ids[i] for i in dropped_rows(len(x), f["pairs"])]
        for index in args.indexes.split(","):
            whet_runs = [run_whet(Path(args.whet), inp, out_dir / f"t{threshold}-{index}.parquet", threshold, index)
                         for _ in range(args.repeat)]
            w = whet_runs[0]
            results.append({
                "threshold": threshold,
                "index": index,
                "truth_dropped": len(truth_ids),
                "exact_seconds": exact_seconds,
                "whetstone_seconds": statistics.median(r["seconds"] for r in whet_runs),
                "whetstone_process_seconds": statistics.median(r["process_seconds"] for r in whet_runs),
                "whetstone_dropped": len(w["dropped_ids"]),
                "whetstone_recall": recall(w["dropped_ids"], truth_ids),
                "faiss_seconds": statistics.median(r["seconds"] for r in faiss_runs),
                "faiss_dropped": len(f_ids),
                "faiss_recall": recall(f_ids, truth_ids),
            })
    print()
    header = ["threshold", "truth drops", "whetstone index", "whetstone s", "drops", "recall", "faiss HNSW s", "drops", "recall",
              "exact (flat) s", "whetstone ÷ faiss time"]
    table = []
    for r in results:
        table.append([f"{r['threshold']}", f"{r['truth_dropped']:,}", r["index"], f"{r['whetstone_seconds']:.2f}",
                      f"{r['whetstone_dropped']:,}", f"{r['whetstone_recall']:.4f}", f"{r['faiss_seconds']:.2f}",
                      f"{r['faiss_dropped']:,}", f"{r['faiss_recall']:.4f}", f"{r['exact_seconds']:.2f}",
                      f"{r['whetstone_seconds'] / r['faiss_seconds']:.2f}×"])
    print("\n".join(fmt_table(header, table, left=set())))
    print("\nwhetstone s = the dedup stage's own time (manifest; reading and writing Parquet included); "
          "faiss s = index build + search, in memory.")
    (cache / "semantic-results.json").write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["whetstone_recall"] < 0.95]
    if bad:
        print(f"FAIL: whetstone recall below 0.95: {[(r['threshold'], r['index']) for r in bad]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
