#!/usr/bin/env python3
"""Benchmark `whet kmeans` (k-means) against scikit-learn and faiss on the same embeddings, k and iterations.

A benchmark, not a test. Contestants, all on the same float32 matrix (the `embedding` column of one Parquet file):

  whetstone     whet kmeans IN OUT --k K --max-iter ITERS --tol 0 --seed SEED   (its own child process)
                fit time, inertia and iterations from OUT.manifest.json (`results`); the child's whole wall time
                (start, reading, writing Parquet) is reported separately as "process s"
  scikit-learn  KMeans(n_clusters=K, init='k-means++', n_init=1, max_iter=ITERS, tol=0, algorithm='lloyd',
                random_state=SEED); .fit(X) timed; .inertia_
  faiss         faiss.Kmeans(d, K, niter=ITERS, seed=SEED, max_points_per_centroid=10**9) (no subsampling: it
                sees every row); .train(X) timed; inertia = sum of squared L2 distances of index.search(X, 1),
                computed after the timed part

The peers run in this Python process, after the embeddings are loaded (loading is not timed). Seeding differs:
whetstone and scikit-learn use k-means++ (scikit-learn's greedy variant, 2 + log k trials per centroid); faiss
draws its initial centroids at random. With tol 0 faiss runs exactly ITERS iterations, whetstone too unless no
centroid moved (converged); scikit-learn also stops early if no label changes (its `n_iter_` shows in the iters
column). Every contestant runs --repeat
times (order rotated per round) and the median fit time is reported. Threads: library defaults, printed below.

Cases (--cases; default all that exist):
  t0-minilm   .cache/embeddings/t0-minilm.parquet, real all-MiniLM-L6-v2 embeddings of T0 (skipped if absent)
  t0-hashing  `whet embed --embedder hashing --dim 384` of ../shared/data/t0-templates, cached in .cache/bench/
  200k        200,000 rows (--rows) cycling the T0 prompts with " #<row>" appended, hashing dim 384, cached

Checks (exit 1 when one fails): every run succeeds; whetstone's manifest agrees with the matrix (rows, dim)
and ran exactly ITERS iterations (fewer only where it converged: no centroid moved); every inertia is finite;
whetstone's inertia is at most --max-inertia-ratio times the best peer's. The speed goals (≥ 1.5× faiss, ≥ 5× scikit-learn) are reported, not checked.

linfa (linfa-clustering's KMeans) is not a contestant here: it is much slower and is measured separately.
Usually run through scripts/bench-kmeans.sh, which sets up .venv and builds whet.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.parquet as pq

import faiss
import sklearn
from sklearn.cluster import KMeans

try:
    import threadpoolctl
except ImportError:  # optional: only for printing the BLAS/OpenMP thread pools
    threadpoolctl = None

from benchlib import (DIM, MIB, REPO, bench_dirs, build_cycled_jsonl, build_hashing_embeddings, fmt_table,
                      machine_line, rel, report_head, rotated, run_whet_stage, save_report, t0_sources, whet_binary,
                      whet_version)

WHET = "whetstone"
SKLEARN = "scikit-learn"
FAISS = "faiss"
CONTESTANTS = [WHET, SKLEARN, FAISS]
GOALS = {FAISS: 1.5, SKLEARN: 5.0}  # how many times faster than the peer whetstone's fit should be
CASES = ["t0-minilm", "t0-hashing", "200k"]


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def load_embeddings(path: Path) -> np.ndarray:
    """The `embedding` column as a C-contiguous float32 matrix (rows × dim)."""
    col = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    if col.null_count:
        sys.exit(f"{rel(path)}: {col.null_count} null embeddings")
    dim = getattr(col.type, "list_size", None)
    if dim is None:  # a variable-size list: take the row length from the data
        dim = len(col[0]) if len(col) else 0
    x = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------------------------------------
# Contestants


def find_results(manifest: dict) -> dict:
    """The stage's `results` object, wherever the manifest keeps it."""
    if isinstance(manifest.get("results"), dict):
        return manifest["results"]
    for v in manifest.values():
        if isinstance(v, dict) and isinstance(v.get("results"), dict):
            return v["results"]
    raise KeyError("no `results` in the manifest")


def run_whet(whet: Path, inp: Path, out: Path, k: int, iters: int, seed: int) -> dict:
    argv = [str(whet), "kmeans", str(inp), str(out), "--k", str(k), "--max-iter", str(iters), "--tol", "0",
            "--seed", str(seed)]

    def fields(manifest: dict) -> dict:
        r = find_results(manifest)
        return dict(fit_s=float(r["fit_seconds"]), inertia=float(r["inertia"]), iters=int(r["iterations"]),
                    rows=int(r["rows"]), dim=int(r["dim"]), converged=r.get("converged"))

    return run_whet_stage(argv, out, fields)


def run_sklearn(x: np.ndarray, k: int, iters: int, seed: int) -> dict:
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=iters, tol=0, algorithm="lloyd",
                random_state=seed)
    start = time.perf_counter()
    km.fit(x)
    fit = time.perf_counter() - start
    return {"fit_s": fit, "inertia": float(km.inertia_), "iters": int(km.n_iter_), "rc": 0}


def run_faiss(x: np.ndarray, k: int, iters: int, seed: int) -> dict:
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, verbose=False, max_points_per_centroid=10**9)
    start = time.perf_counter()
    km.train(x)
    fit = time.perf_counter() - start
    d, _ = km.index.search(x, 1)
    return {"fit_s": fit, "inertia": float(d[:, 0].astype(np.float64).sum()), "iters": len(km.obj) or iters,
            "rc": 0}


def run_one(name: str, **kw) -> dict:
    try:
        if name == WHET:
            return run_whet(kw["whet"], kw["inp"], kw["out"], kw["k"], kw["iters"], kw["seed"])
        fn = run_sklearn if name == SKLEARN else run_faiss
        return fn(kw["x"], kw["k"], kw["iters"], kw["seed"])
    except Exception as e:  # a peer that throws is a failed run, not a crashed benchmark
        return {"rc": -1, "error": f"{type(e).__name__}: {e}"}


# ---------------------------------------------------------------------------------------------------------------
# Report


def thread_report() -> list[str]:
    lines = [f"faiss OpenMP threads: {faiss.omp_get_max_threads()}"]
    env = [f"{v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                            "RAYON_NUM_THREADS", "OPENBLAS_CORETYPE") if v in os.environ]
    lines.append("thread env: " + (", ".join(env) if env else "none set (library defaults)"))
    if threadpoolctl is None:
        lines.append("threadpoolctl not installed: BLAS/OpenMP pools not listed")
        return lines
    for p in threadpoolctl.threadpool_info():
        lines.append(f"threadpool: {p.get('user_api')}/{p.get('internal_api')} {p.get('version') or ''} "
                     f"{p.get('architecture') or ''} threads={p.get('num_threads')} ({Path(p.get('filepath', '')).name})")
    return lines


def summarize(name: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("rc") == 0]
    row: dict = {"contestant": name, "runs": runs}
    if len(ok) != len(runs) or not ok:
        row.update(ok=False, error=next((r.get("error") for r in runs if r.get("rc") != 0), "no run"))
        return row
    row.update(ok=True, fit_s=statistics.median(r["fit_s"] for r in ok), inertia=ok[0]["inertia"],
               inertia_spread=max(r["inertia"] for r in ok) - min(r["inertia"] for r in ok),
               iters=ok[0]["iters"], converged=ok[0].get("converged"))
    if name == WHET:
        row.update(process_s=statistics.median(r["process_s"] for r in ok),
                   rss_mib=max(r["rss_mib"] for r in ok), rows=ok[0]["rows"], dim=ok[0]["dim"])
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whet", required=True, help="path of the whet binary")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} (default all)")
    ap.add_argument("--ks", default="256,1024", help="comma-separated cluster counts (default 256,1024)")
    ap.add_argument("--iters", type=int, default=20, help="Lloyd iterations, run in full (tol 0) (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every contestant (default 0)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contestant; the median is reported (default 1)")
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the 200k case (default 200000)")
    ap.add_argument("--max-inertia-ratio", type=float, default=1.05,
                    help="check: whetstone's inertia at most this times the best peer's (default 1.05)")
    args = ap.parse_args()

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        sys.exit(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    if not ks or min(ks) < 1 or args.iters < 1 or args.repeat < 1 or args.rows < 1:
        sys.exit("--ks, --iters, --repeat and --rows must be positive")

    whet = whet_binary(args.whet)
    cache, outdir = bench_dirs("kmeans-out")

    version = whet_version(whet)
    versions = {"python": platform.python_version(), "numpy": np.__version__, "pyarrow": pyarrow.__version__,
                "scikit-learn": sklearn.__version__, "faiss": faiss.__version__, "whet": version}
    print(machine_line())
    print(f"{version or whet}, scikit-learn {sklearn.__version__}, faiss {faiss.__version__}, "
          f"numpy {np.__version__}, pyarrow {pyarrow.__version__} (python {platform.python_version()})")
    threads = thread_report()
    for line in threads:
        print(line)
    print(f"k in {ks}, {args.iters} iterations (tol 0), seed {args.seed}, {args.repeat} run(s) each, "
          f"median fit time reported\n", flush=True)

    notes: list[str] = []
    inputs: list[tuple[str, Path]] = []
    for case in cases:
        if case == "t0-minilm":
            p = REPO / ".cache" / "embeddings" / "t0-minilm.parquet"
            if not p.exists():
                note = f"t0-minilm: skipped, {rel(p)} does not exist yet (embed T0 with `whet embed --embedder minilm`)"
                print(f"note: {note}")
                notes.append(note)
                continue
            inputs.append((case, p))
        elif case == "t0-hashing":
            src_dir, _ = t0_sources()
            inputs.append((case, build_hashing_embeddings(whet, src_dir, cache / f"kmeans-t0-hashing-d{DIM}.parquet",
                                                          outdir)))
        else:
            jsonl = build_cycled_jsonl(args.rows, cache)
            name = "200k" if args.rows == 200_000 else f"200k (--rows {args.rows})"
            inputs.append((name, build_hashing_embeddings(whet, jsonl, cache / f"kmeans-{args.rows}rows-hashing-d{DIM}.parquet",
                                                          outdir)))

    report_cases = []
    failures: list[str] = []
    for case, path in inputs:
        x = load_embeddings(path)
        n, d = x.shape
        norms = np.linalg.norm(x, axis=1)
        print(f"\n== {case}: {rel(path)}: {n:,} × {d} float32 ({x.nbytes / MIB:.1f} MiB), "
              f"row norms {norms.min():.3f}..{norms.max():.3f}", flush=True)
        for k in ks:
            if k > n:
                note = f"{case}: k={k} skipped, more clusters than rows ({n:,})"
                print(f"note: {note}")
                notes.append(note)
                continue
            out = outdir / f"{case.split()[0]}-k{k}.parquet"
            runs: dict[str, list[dict]] = {c: [] for c in CONTESTANTS}
            for r in range(args.repeat):
                for name in rotated(CONTESTANTS, r):
                    res = run_one(name, whet=whet, inp=path, out=out, x=x, k=k, iters=args.iters, seed=args.seed)
                    runs[name].append(res)
                    status = "ok" if res.get("rc") == 0 else f"FAILED rc={res.get('rc')}"
                    fit = f"{res['fit_s']:8.2f} s fit" if "fit_s" in res else " " * 14
                    extra = f", {res['process_s']:.2f} s process" if "process_s" in res else ""
                    print(f"  k={k} round {r + 1}/{args.repeat}  {name:<13} {fit}{extra}  {status}", flush=True)

            rows = {name: summarize(name, runs[name]) for name in CONTESTANTS}
            w = rows[WHET]
            checks: list[str] = []
            for name, row in rows.items():
                if not row["ok"]:
                    checks.append(f"{name} failed: {row['error']}")
                elif not math.isfinite(row["inertia"]):
                    checks.append(f"{name}: inertia is {row['inertia']}")
            if w["ok"]:
                if (w["rows"], w["dim"]) != (n, d):
                    checks.append(f"whetstone fitted {w['rows']:,} × {w['dim']}, the matrix is {n:,} × {d}")
                # With tol 0 whetstone stops early only where no centroid moved: Lloyd has converged exactly.
                if w["iters"] > args.iters or (w["iters"] < args.iters and not w["converged"]):
                    checks.append(f"whetstone ran {w['iters']} iterations, not {args.iters} (tol 0)")
                peers = [rows[p]["inertia"] for p in (SKLEARN, FAISS) if rows[p]["ok"]]
                if peers and w["inertia"] > args.max_inertia_ratio * min(peers):
                    checks.append(f"whetstone's inertia {w['inertia']:.6g} is over {args.max_inertia_ratio} × the "
                                  f"best peer's {min(peers):.6g}")

            table = []
            for name, row in rows.items():
                if not row["ok"]:
                    table.append([name, "-", "-", "-", "-", "FAILED"])
                    continue
                ratio = row["inertia"] / w["inertia"] if w["ok"] and w["inertia"] else float("nan")
                table.append([name, f"{row['fit_s']:.3f}", f"{row['inertia']:,.2f}", f"{ratio:.4f}",
                              str(row["iters"]), "ok"])
            block = [f"{case}, k={k}, {n:,} × {d}, {args.iters} iterations:"]
            block += fmt_table(["contestant", "fit s", "inertia", "inertia/whetstone's", "iters", "status"], table,
                               left={0, 5})
            if w["ok"]:
                block.append(f"whetstone process wall time: {w['process_s']:.2f} s (fit {w['fit_s']:.2f} s; start, "
                             f"reading and writing Parquet {w['process_s'] - w['fit_s']:.2f} s), "
                             f"peak RSS {w['rss_mib']:.0f} MiB")
            speedups = {}
            for peer in (FAISS, SKLEARN):
                p = rows[peer]
                if w["ok"] and p["ok"]:
                    s = p["fit_s"] / w["fit_s"]
                    ir = w["inertia"] / p["inertia"]
                    speedups[peer] = {"faster": s, "goal": GOALS[peer], "met": s >= GOALS[peer],
                                      "inertia_ratio": ir}
                    block.append(f"whetstone vs {peer}: {s:.2f}× faster (goal ≥ {GOALS[peer]:g}×"
                                 f"{', met' if s >= GOALS[peer] else ', NOT met'}), inertia ratio {ir:.3f} "
                                 f"(whetstone's / {peer}'s)")
                else:
                    block.append(f"whetstone vs {peer}: n/a (a run failed)")
            if rows[SKLEARN]["ok"] and rows[SKLEARN]["iters"] < args.iters:
                block.append(f"note: scikit-learn converged (no label changed) after {rows[SKLEARN]['iters']} "
                             f"iterations, so it did less work than the others")
            for c in checks:
                block.append(f"CHECK FAILED: {c}")
            print()
            print("\n".join(block), flush=True)
            failures += [f"{case} k={k}: {c}" for c in checks]
            report_cases.append({"case": case, "input": str(path), "rows": n, "dim": d, "k": k,
                                 "iters": args.iters, "seed": args.seed, "results": list(rows.values()),
                                 "whetstone_vs": speedups, "checks_failed": checks})

    if len(report_cases) > 1:
        summary = []
        for c in report_cases:
            by = {r["contestant"]: r for r in c["results"]}
            cell = lambda name: f"{by[name]['fit_s']:.2f}" if by[name]["ok"] else "FAILED"
            vs = lambda peer, key, f: f.format(c["whetstone_vs"][peer][key]) if peer in c["whetstone_vs"] else "-"
            summary.append([c["case"], str(c["k"]), cell(WHET), cell(FAISS), cell(SKLEARN),
                            vs(FAISS, "faster", "{:.2f}×"), vs(SKLEARN, "faster", "{:.2f}×"),
                            vs(FAISS, "inertia_ratio", "{:.3f}"), vs(SKLEARN, "inertia_ratio", "{:.3f}"),
                            "FAILED" if c["checks_failed"] else "ok"])
        print("\nsummary (fit seconds; speed-up and inertia ratio of whetstone over each peer):")
        for line in fmt_table(["case", "k", "whetstone s", "faiss s", "scikit-learn s", "vs faiss",
                               "vs scikit-learn", "inertia/faiss", "inertia/sklearn", "checks"], summary,
                              left={0, 9}):
            print(line)
    for note in notes:
        print(f"note: {note}")

    report = {
        **report_head(),
        "versions": versions, "threads": threads,
        "parameters": {"ks": ks, "iters": args.iters, "seed": args.seed, "repeat": args.repeat,
                       "rows_200k": args.rows, "max_inertia_ratio": args.max_inertia_ratio},
        "goals_faster_than": GOALS, "cases": report_cases, "notes": notes, "checks_failed": failures,
    }
    return save_report(cache / "kmeans-results.json", report, failures)


if __name__ == "__main__":
    sys.exit(main())
