#!/usr/bin/env python3
"""Benchmark whetstone's MinHash dedup, exact dedup and quality filters against datatrove's on the same pool of
T0-derived rows: wall time, rows/s, peak memory, rows removed and the agreement of the removed ids.

A benchmark, not a test. Usually run through scripts/bench-dedup.sh, which sets up .venv (datatrove 0.10.1 from
PyPI) and builds whet.

The pool: bench_cluster.py's (--rows rows, 1,000,000 by default, in --files Parquet files of id, prompt and
response, built once under .cache/bench/): row i is T0 row i mod 41,813 with a name put in front and its numbers
shifted, so most rows are near duplicates of others and a few exact ones; one row in 50 is spoiled (an empty,
refused, repetitive or symbol-filled response, or an over-long prompt) for the filters to find.

Contestants, each a child process timed from start to exit (wall seconds), --cores cores (RAYON_NUM_THREADS for
whet, the executor's workers for datatrove):

  minhash  whet dedup --method minhash: 5-word shingles, 14 bands × 8 rows, seed 1: with a candidate's
           estimated Jaccard confirmed at --threshold (whetstone's way), and at 0.01, where every band
           collision is a duplicate (datatrove's way), then that again with the next seed; linked rows form
           clusters, each keeping its first row. datatrove: its four MinHash stages with the same shingles,
           bands, seed, normalisation and word split (scripts/bench_dedup_datatrove.py says what cannot match).
           MinHash samples: two seeds remove different rows where pairs sit near the bands' threshold, so the
           agreement of whetstone's two seeds is the most two implementations can be expected to agree.
  exact    whet dedup --method exact; datatrove's three exact-dedup stages on whetstone's key.
  filter   whet filter (its defaults); datatrove's LambdaFilter running the same four rules ported to Python.

Agreement: the Jaccard index of the sets of removed ids (1.0: the same rows removed). For MinHash also with
datatrove's clusters each keeping its first row, as whetstone's do (datatrove's union-find keeps the root its
merges by size left, not the first row): the agreement of the clusters themselves. Speed-up: datatrove's
seconds / whetstone's (above 1: whetstone is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from bench_cluster import build_pool, jaccard, removed_ids_whet, run_tree
from benchlib import (bench_dirs, fmt_table, machine_line, rel, report_head, run_child, save_report, whet_binary,
                      whet_version)

HERE = Path(__file__).resolve().parent


def removed_ids_datatrove(folder: Path) -> list[str]:
    return [i for i, _ in removed_datatrove(folder)]


def removed_datatrove(folder: Path):
    """(id, MinHash cluster id or None) of each removed row. Only these are kept: this process forks the next
    contestant, and Linux counts the memory it had then in the child's peak RSS (ru_maxrss)."""
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    doc = json.loads(line)
                    yield str(doc["id"]), doc.get("metadata", {}).get("minhash_cluster_id")


def removed_keeping_first_datatrove(work: Path) -> list[str]:
    """The ids datatrove's MinHash clusters would remove if each kept its first row in the pool's order, as
    whetstone's do (datatrove's union by size keeps whichever root the merges left). The clusters come from its
    cluster ids: on the removed rows, and on the kept ones (Parquet, -1 for a row in no cluster)."""
    import pyarrow.parquet as pq

    members: dict[int, list[str]] = {}
    for i, c in removed_datatrove(work / "removed"):
        members.setdefault(c, []).append(i)
    for f in sorted((work / "kept").glob("*.parquet")):
        t = pq.read_table(f, columns=["id", "metadata"])
        metadata = t.column("metadata").combine_chunks()
        if metadata.type.get_field_index("minhash_cluster_id") < 0:
            continue  # a task with nothing to remove passes its rows on without cluster ids: none is in a cluster
        cluster = metadata.field("minhash_cluster_id").to_pylist()
        for i, c in zip(t.column("id").to_pylist(), cluster):
            if c != -1:
                members.setdefault(c, []).append(str(i))
    position = lambda i: int(i[1:])  # noqa: E731 (the pool's ids are r0, r1, ...)
    return [i for ids in members.values() for i in sorted(ids, key=position)[1:]]


def whet_argv(whet: Path, step: str, pool: Path, out: Path, threshold: float | None, seed: int) -> list[str]:
    if step == "minhash":
        return [str(whet), "dedup", str(pool), str(out), "--method", "minhash", "--threshold", str(threshold),
                "--shingle", "5", "--bands", "14", "--rows", "8", "--seed", str(seed)]
    if step == "exact":
        return [str(whet), "dedup", str(pool), str(out), "--method", "exact"]
    if step == "filter":
        return [str(whet), "filter", str(pool), str(out)]
    raise ValueError(step)


def run_whet(whet: Path, step: str, pool: Path, args, outdir: Path, threshold: float | None = None,
             seed: int | None = None) -> dict:
    seed = args.seed if seed is None else seed
    label = "whetstone"
    if threshold is not None:
        label += f" (Jaccard ≥ {threshold}" + (f", seed {seed})" if seed != args.seed else ")")
    run_dir = outdir / (f"{step}-whet" + (f"-{threshold}-seed{seed}" if threshold is not None else ""))
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out = run_dir / "out.parquet"
    env = {**os.environ, "RAYON_NUM_THREADS": str(args.cores)}
    print(f"  {step:8} {label:28} ...", end="", flush=True)
    r = run_child(whet_argv(whet, step, pool, out, threshold, seed), run_dir / "run.log", env=env)
    if r["rc"] != 0:
        print(" failed")
        return {"step": step, "contestant": label, "failed": f"see {rel(run_dir / 'run.log')}"}
    manifest = json.loads(Path(str(out) + ".manifest.json").read_text())
    removed = removed_ids_whet(Path(str(out) + ".rejected.jsonl"))
    if manifest["rows"]["in"] != args.rows or len(removed) != manifest["rows"]["rejected"]:
        print(" rows lost")
        return {"step": step, "contestant": label, "failed": f"rows in/out/rejected do not add up: {manifest['rows']}"}
    out.unlink(missing_ok=True)
    print(f" {r['seconds']:8.1f} s  {len(removed):,} removed  {r['rss_mib']:,.0f} MiB", flush=True)
    return {"step": step, "contestant": label, "seconds": r["seconds"], "rss_mib": r["rss_mib"],
            "removed": removed, "threshold": threshold, "seed": seed}


def run_datatrove(step: str, pool: Path, args, outdir: Path) -> dict:
    work = outdir / f"{step}-datatrove"
    shutil.rmtree(work, ignore_errors=True)  # also its logging folders: a completed task would be skipped
    work.mkdir(parents=True)
    print(f"  {step:8} {'datatrove':28} ...", end="", flush=True)
    argv = [sys.executable, str(HERE / "bench_dedup_datatrove.py"), step, str(pool), str(work), str(args.cores)]
    r = run_tree(argv, work / "run.log")
    if r["rc"] != 0:
        print(" failed")
        return {"step": step, "contestant": "datatrove", "failed": f"see {rel(work / 'run.log')}"}
    times = {}
    for line in (work / "run.log").read_text(errors="replace").splitlines():
        if line.startswith("TIMES "):
            times = json.loads(line[6:])
    removed = removed_ids_datatrove(work / "removed")
    first_kept = removed_keeping_first_datatrove(work) if step == "minhash" else None
    shutil.rmtree(work / "kept", ignore_errors=True)
    print(f" {r['seconds']:8.1f} s  {len(removed):,} removed  largest process {r['rss_mib']:,.0f} MiB,"
          f" all together {r['tree_rss_mib']:,.0f} MiB", flush=True)
    return {"step": step, "contestant": "datatrove", "seconds": r["seconds"], "rss_mib": r["rss_mib"],
            "tree_rss_mib": r["tree_rss_mib"], "stage_seconds": times, "removed": removed,
            **({"removed_keeping_first": first_kept} if first_kept is not None else {})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whet", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--steps", default="minhash,exact,filter")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.7, help="whetstone's confirming Jaccard for MinHash")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-datatrove", action="store_true")
    args = ap.parse_args()
    whet = whet_binary(args.whet)
    cache, outdir = bench_dirs(f"dedup-{args.rows}")
    print(machine_line(cpu=True))
    print(f"whet: {rel(whet)} ({whet_version(whet)}); {args.cores} cores each")
    pool = build_pool(args.rows, args.files, cache)

    results = []
    for step in args.steps.split(","):
        if step == "minhash":
            results.append(run_whet(whet, step, pool, args, outdir, threshold=args.threshold))
            results.append(run_whet(whet, step, pool, args, outdir, threshold=0.01))
            results.append(run_whet(whet, step, pool, args, outdir, threshold=0.01, seed=args.seed + 1))
        else:
            results.append(run_whet(whet, step, pool, args, outdir))
        if not args.no_datatrove:
            results.append(run_datatrove(step, pool, args, outdir))

    checks_failed = [f"{r['step']} {r['contestant']}: {r['failed']}" for r in results if "failed" in r]
    table = []
    for r in results:
        if "failed" in r:
            continue
        peer = next((p for p in results if p["step"] == r["step"] and p["contestant"] == "datatrove"
                     and "failed" not in p), None)
        if peer is not None and r is not peer:
            r["speedup"] = peer["seconds"] / r["seconds"]
            r["jaccard_removed"] = jaccard(r["removed"], peer["removed"])
            if "removed_keeping_first" in peer:
                r["jaccard_clusters"] = jaccard(r["removed"], peer["removed_keeping_first"])
        table.append([r["step"], r["contestant"], f"{r['seconds']:.1f}", f"{args.rows / r['seconds']:,.0f}",
                      f"{r['speedup']:.1f}×" if "speedup" in r else "-", f"{len(r['removed']):,}",
                      f"{r['jaccard_removed']:.4f}" if "jaccard_removed" in r else "-",
                      f"{r['jaccard_clusters']:.4f}" if "jaccard_clusters" in r else "-",
                      f"{r['rss_mib']:,.0f}" + (f" (all {r['tree_rss_mib']:,.0f})" if "tree_rss_mib" in r else "")])
    print()
    print(f"{args.rows:,} rows, {args.cores} cores; speed-up = datatrove's seconds / this row's; agreement = Jaccard"
          " of the removed ids with datatrove's; clusters = the same with datatrove's clusters each keeping its"
          " first row, as whetstone's do")
    head = ["step", "run", "seconds", "rows/s", "speed-up", "removed", "agreement", "clusters", "peak MiB"]
    for line in fmt_table(head, table, left={0, 1}):
        print(line)

    seeds = [r for r in results if r["step"] == "minhash" and r.get("threshold") == 0.01 and "failed" not in r]
    seed_agreement = None
    if len(seeds) == 2:
        seed_agreement = jaccard(seeds[0]["removed"], seeds[1]["removed"])
        print(f"MinHash's own sampling: whetstone at 0.01 with seeds {seeds[0]['seed']} and {seeds[1]['seed']}"
              f" agree at {seed_agreement:.4f}")

    for r in results:
        r["removed_count"] = len(r.pop("removed", []))
        r.pop("removed_keeping_first", None)
    report = {**report_head(cpu=True), "rows": args.rows, "cores": args.cores, "whet": whet_version(whet),
              "minhash_seed_agreement": seed_agreement, "results": results}
    return save_report(cache / f"dedup-results-{args.rows}.json", report, checks_failed)


if __name__ == "__main__":
    sys.exit(main())
