#!/usr/bin/env python3
"""Benchmark `whet curate` on one machine against `whet curate --cluster` on a Ballista cluster of 1 and 2
executors, and MinHash dedup against datatrove's, on a synthetic pool of T0 prompts.

A benchmark, not a test. Usually run through scripts/bench-cluster.sh, which sets up .venv and builds whet with
the `cluster` feature.

The pool: --rows rows (10,000,000) in --files Parquet files under .cache/bench/t0-pool-ROWS/, built once.
Row i takes T0 prompt (and response) i mod P (P = 41,813 T0 rows), with its numbers shifted and a name put in
front, both drawn from i's hash (60 names, shifts 0-4): most variants of a prompt are near duplicates of
each other, a few exact ones. One row in 50 is spoiled for the filters (an empty, refused, repetitive or
symbol-filled response, or an over-long prompt).

Contestants, each a child process timed from start to exit (wall seconds; rows/s = pool rows / wall):

  local         whet curate PIPELINE.toml: one step, on this machine
  cluster-1     whet curate PIPELINE.toml --cluster df://127.0.0.1:PORT, a fresh cluster of whet processes on
                loopback for each run: `whet cluster scheduler` and one `whet cluster executor --slots 2`
  cluster-2     the same with two executors of one slot each (two slots in all, as the machine has 2 cores:
                this row shows what a second process costs, not what a second machine gains)
  datatrove     (MinHash only) datatrove's four MinHash stages with its LocalPipelineExecutor, 2 workers:
                signatures (2 tasks) → buckets (14 tasks) → clusters (1 task) → filter (2 tasks)

Steps: exact dedup; MinHash dedup (14 bands × 8 rows, 5-word shingles, as datatrove's defaults; whetstone
also confirms a candidate by its estimated Jaccard ≥ --minhash-threshold); k-means (k = --k, --iters Lloyd
iterations, tol 0) over hashing embeddings of dimension --dim made once with `whet embed` (not timed).

Peak RSS: each process's own high-water mark (VmHWM for the cluster's processes, read before they stop;
wait4's ru_maxrss for the driver); for datatrove, whose workers are processes of their own, its process tree
sampled every 0.2 s: the largest process, and the largest sum at one time.

Agreement: the ids each MinHash contestant removed, as a Jaccard index against whetstone local's; the cluster
runs must also write the local run's output (its hash, from the manifests) and k-means's inertia within 1%.

Projection: from the cluster-1 run's per-row costs, the wall time of each step on 1 B rows with N machines
of C cores; the assumptions print with it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from benchlib import (bench_dirs, fmt_table, machine_line, rel, report_head, run_child, save_report, t0_sources,
                      whet_binary, whet_version)

NAMES = ("Ada Ben Chloe Dmitri Elena Farid Grace Hiro Ines Jonas Kofi Lena Mateo Nadia Omar Priya Quinn Rosa Sami "
         "Tara Umar Vera Wen Xavier Yara Zane Alba Bruno Carmen Diego Emma Felix Gita Hana Ivan Jade Kai Lucia Milo "
         "Noor Oscar Pia Rafael Sofia Tomas Uma Viktor Willa Ximena Yusuf Zoe Anika Boris Cora Dev Esme Finn Gael "
         "Hugo").split()
NUMBER = re.compile(r"\d+")


# One row in BAD_EVERY is spoiled in one of the ways whetstone's default filters catch (BAD_KINDS), so the filter
# benchmarks have rows to remove: T0's own rows pass them all.
BAD_EVERY = 50
BAD_KINDS = ("empty response", "refusal", "repeated words", "symbols", "too long")


def spoil(i: int, prompt: str, response: str) -> tuple[str, str]:
    """Row i's prompt and response, spoiled where i is a multiple of BAD_EVERY."""
    if i % BAD_EVERY:
        return prompt, response
    kind = BAD_KINDS[(i // BAD_EVERY) % len(BAD_KINDS)]
    if kind == "empty response":
        return prompt, ""
    if kind == "refusal":
        return prompt, "I'm sorry, but I can't help with that request."
    if kind == "repeated words":
        return prompt, " ".join(["the answer is yes"] * 20)
    if kind == "symbols":
        return prompt, "#@%&*" * 20 + response[:40]
    # too long (over 100,000 characters), only one time in 50 (each is about 100 kB)
    return (prompt + " " + "lorem " * 17_000, response) if (i // BAD_EVERY) % 50 == 4 else (prompt, "")


def build_pool(rows: int, files: int, cache: Path) -> Path:
    """The pool's folder of Parquet files (id, prompt, response); built once, a marker file written last."""
    folder = cache / f"t0-pool-{rows}"
    done = cache / f"t0-pool-{rows}.done.json"
    # The marker names what the pool holds: a pool built without responses (read as `completion`) or without the
    # spoiled rows is built again.
    marker = {"rows": rows, "files": files, "responses": "completion", "bad_every": BAD_EVERY, "bad": BAD_KINDS}
    if done.exists() and json.loads(done.read_text()) == json.loads(json.dumps(marker)):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    _, sources = t0_sources()
    base: list[tuple[str, str]] = []
    for src in sources:
        with open(src, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    if isinstance(r.get("prompt"), str):
                        # T0's rows name the response `completion`.
                        base.append((r["prompt"], r.get("response") or r.get("completion") or ""))
    print(f"building {rel(folder)}: {rows:,} rows from {len(base):,} T0 rows in {files} files ...", flush=True)
    per_file = -(-rows // files)
    started = time.perf_counter()
    for f in range(files):
        lo, hi = f * per_file, min(rows, (f + 1) * per_file)
        ids, prompts, responses = [], [], []
        for i in range(lo, hi):
            prompt, response = base[i % len(base)]
            h = random.Random(i).getrandbits(32)
            name, shift = NAMES[h % len(NAMES)], (h >> 8) % 5
            if shift:
                prompt = NUMBER.sub(lambda m: str(int(m.group()) + shift), prompt)
            prompt, response = spoil(i, f"{name} asks: {prompt}", response)
            ids.append(f"r{i}")
            prompts.append(prompt)
            responses.append(response)
        table = pa.table({"id": ids, "prompt": prompts, "response": responses})
        pq.write_table(table, folder / f"part-{f:03d}.parquet", compression="zstd", row_group_size=200_000)
        print(f"  file {f + 1}/{files}: {hi:,} rows, {time.perf_counter() - started:.0f} s", flush=True)
    done.write_text(json.dumps(marker) + "\n")
    return folder


def build_embeddings(whet: Path, pool: Path, dim: int, cache: Path, logdir: Path) -> Path:
    """`whet embed POOL --embedder hashing --dim DIM`, once."""
    out = cache / f"cluster-embeddings-{pool.name}-{dim}.parquet"
    if out.exists():
        return out
    full = logdir / "embedded-full.parquet"
    argv = [str(whet), "embed", str(pool), str(full), "--embedder", "hashing", "--dim", str(dim)]
    print(f"building {rel(out)}: {' '.join(argv[1:])} ...", flush=True)
    r = run_child(argv, logdir / "embed.log")
    if r["rc"] != 0:
        sys.exit(f"whet embed failed; see {rel(logdir / 'embed.log')}")
    print(f"  embedded in {r['seconds']:.0f} s", flush=True)
    full.rename(out)
    Path(str(full) + ".manifest.json").unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------------------------------------------
# A cluster of whet processes on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, what: str) -> None:
    start = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() - start > 60:
                sys.exit(f"{what}: nothing listens on port {port} after 60 s")
            time.sleep(0.1)


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Cluster:
    """`whet cluster scheduler` and `executors` executors with `slots` slots each, on loopback."""

    def __init__(self, whet: Path, executors: int, slots: int, logdir: Path):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        port = free_port()
        self.url = f"df://127.0.0.1:{port}"
        self.logs = [open(logdir / "scheduler.log", "wb")]
        sched = subprocess.Popen([str(whet), "cluster", "scheduler", "--bind", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=self.logs[0])
        self.procs.append(("scheduler", sched))
        wait_for(port, "the scheduler")
        for i in range(executors):
            work = logdir / f"executor-{i}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            ep, gp = free_port(), free_port()
            self.logs.append(open(logdir / f"executor-{i}.log", "wb"))
            e = subprocess.Popen([str(whet), "cluster", "executor", "--scheduler", f"127.0.0.1:{port}", "--port", str(ep),
                                  "--grpc-port", str(gp), "--slots", str(slots), "--work-dir", str(work)],
                                 stdout=subprocess.DEVNULL, stderr=self.logs[-1])
            self.procs.append((f"executor-{i}", e))
            wait_for(ep, f"executor {i}")
        time.sleep(2)  # the executors register with their first heartbeat

    def stop(self) -> dict[str, float]:
        """Each process's peak RSS (MiB), then stops them."""
        peaks = {}
        for name, p in self.procs:
            peaks[name] = peak_rss_mib(p.pid) if p.poll() is None else float("nan")
            p.kill()
            p.wait()
        for log in self.logs:
            log.close()
        return peaks


# ---------------------------------------------------------------------------------------------------------------
# The contestants


def pipeline_toml(step: str, source: Path, out: Path, args) -> str:
    head = f"input = {json.dumps(str(source))}\noutput = {json.dumps(str(out))}\nseed = {args.seed}\n\n[[stage]]\n"
    if step == "exact":
        return head + 'run = "dedup"\nmethod = "exact"\n'
    if step == "minhash":
        return head + (f'run = "dedup"\nmethod = "minhash"\nthreshold = {args.minhash_threshold}\n'
                       f"bands = 14\nrows = 8\nshingle = 5\n")
    if step == "kmeans":
        return head + f'run = "cluster"\nk = {args.k}\nmax_iter = {args.iters}\ntol = 0.0\n'
    raise ValueError(step)


def run_whet(whet: Path, step: str, source: Path, executors: int, args, outdir: Path) -> dict:
    name = "local" if executors == 0 else f"cluster-{executors}"
    run_dir = outdir / f"{step}-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out = run_dir / "out.parquet"
    toml = run_dir / "pipeline.toml"
    toml.write_text(pipeline_toml(step, source, out, args))
    argv = [str(whet), "curate", str(toml)]
    cluster = None
    if executors:
        cluster = Cluster(whet, executors, max(1, args.cores // executors), run_dir)
        argv += ["--cluster", cluster.url]
    print(f"  {step:8} {name:10} ...", end="", flush=True)
    r = run_child(argv, run_dir / "curate.log")
    peaks = cluster.stop() if cluster else {}
    if r["rc"] != 0:
        print(" failed")
        for work in run_dir.glob("executor-*"):
            if work.is_dir():
                shutil.rmtree(work, ignore_errors=True)
        return {"contestant": name, "step": step, "failed": f"see {rel(run_dir / 'curate.log')}"}
    manifest = json.loads(Path(str(out) + ".manifest.json").read_text())
    report = json.loads(Path(str(out) + ".pipeline.json").read_text())
    work = report["steps"][0].get("cluster") or {}
    result = {
        "contestant": name, "step": step, "seconds": r["seconds"], "rows_per_s": args.rows / r["seconds"],
        "driver_rss_mib": r["rss_mib"], "cluster_rss_mib": peaks, "output_xxh3": manifest["output"]["xxh3_128"],
        "rows": manifest["rows"], "results": manifest.get("results"), "cluster_work": work,
    }
    if step == "minhash":
        result["removed"] = removed_ids_whet(Path(str(out) + ".rejected.jsonl"))
    # A 10 M-row run leaves gigabytes (the output, shuffle files): keep the manifests and logs only.
    out.unlink(missing_ok=True)
    Path(str(out) + ".rejected.jsonl").unlink(missing_ok=True)
    for big in [*run_dir.glob("executor-*"), *run_dir.glob("*.stages")]:
        if big.is_dir():
            shutil.rmtree(big, ignore_errors=True)
    print(f" {r['seconds']:8.1f} s  {args.rows / r['seconds']:10,.0f} rows/s  driver {r['rss_mib']:,.0f} MiB"
          + "".join(f"  {k} {v:,.0f} MiB" for k, v in peaks.items()), flush=True)
    return result


def removed_ids_whet(rejected: Path) -> list[str]:
    ids = []
    if not rejected.exists():  # a stage that rejects nothing writes no rejected file
        return ids
    with open(rejected, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            row = r.get("row") if isinstance(r.get("row"), dict) else r
            ids.append(str(row.get("id")))
    return ids


DATATROVE_CHILD = """
import sys, time, json
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup import MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig

pool, work, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)

def adapter(self, data, path, id_in_file):
    return {"text": data["prompt"] + " " + (data["response"] or ""), "id": data["id"], "metadata": {}}

def reader():
    return ParquetReader(pool, glob_pattern="*.parquet", adapter=adapter)

times = {}
stages = [
    ("signatures", [reader(), MinhashDedupSignature(output_folder=f"{work}/signatures", config=config)], 2),
    ("buckets", [MinhashDedupBuckets(input_folder=f"{work}/signatures", output_folder=f"{work}/buckets",
                                     config=config)], config.num_buckets),
    ("clusters", [MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids",
                                      config=config)], 1),
    ("filter", [reader(), MinhashDedupFilter(input_folder=f"{work}/remove_ids",
                exclusion_writer=JsonlWriter(f"{work}/removed", compression=None))], 2),
]
for name, steps, tasks in stages:
    start = time.perf_counter()
    LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=min(workers, tasks),
                          logging_dir=f"{work}/logs/{name}").run()
    times[name] = time.perf_counter() - start
print("TIMES " + json.dumps(times))
"""


def run_datatrove(pool: Path, args, outdir: Path) -> dict:
    work = outdir / "minhash-datatrove"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"  {'minhash':8} {'datatrove':10} ...", end="", flush=True)
    r = run_tree([sys.executable, "-c", DATATROVE_CHILD, str(pool), str(work), str(args.cores)], work / "run.log")
    if r["rc"] != 0:
        print(" failed")
        return {"contestant": "datatrove", "step": "minhash", "failed": f"see {rel(work / 'run.log')}"}
    times = {}
    for line in (work / "run.log").read_text(errors="replace").splitlines():
        if line.startswith("TIMES "):
            times = json.loads(line[6:])
    removed = []
    for f in sorted((work / "removed").glob("*.jsonl*")):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt", encoding="utf-8") as fh:
            removed.extend(str(json.loads(line)["id"]) for line in fh)
    print(f" {r['seconds']:8.1f} s  {args.rows / r['seconds']:10,.0f} rows/s  largest process {r['rss_mib']:,.0f} MiB,"
          f" all together {r['tree_rss_mib']:,.0f} MiB", flush=True)
    return {"contestant": "datatrove", "step": "minhash", "seconds": r["seconds"], "rows_per_s": args.rows / r["seconds"],
            "driver_rss_mib": r["rss_mib"], "tree_rss_mib": r["tree_rss_mib"], "stage_seconds": times,
            "removed": removed}


def run_tree(argv: list[str], log: Path) -> dict:
    """Run argv (stdout and stderr to log), sampling its process tree's memory every 0.2 s: wall seconds, the
    largest RSS any one of its processes reached, and the largest sum over them at one time (MiB)."""
    with open(log, "wb") as lf:
        start = time.perf_counter()
        p = psutil.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT)
        largest = together = 0
        while p.poll() is None:
            total = 0
            for proc in [p, *p.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                largest, total = max(largest, rss), total + rss
            together = max(together, total)
            time.sleep(0.2)
        wall = time.perf_counter() - start
    return {"seconds": wall, "rc": p.returncode, "rss_mib": largest / 2**20, "tree_rss_mib": together / 2**20}


# ---------------------------------------------------------------------------------------------------------------


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whet", required=True)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--steps", default="exact,minhash,kmeans")
    ap.add_argument("--executors", default="0,1,2", help="0 is the local run")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--minhash-threshold", type=float, default=0.7)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--machines", default="1,10,100", help="N for the 1 B-row projection")
    ap.add_argument("--machine-cores", type=int, default=32, help="C for the 1 B-row projection")
    args = ap.parse_args()
    whet = whet_binary(args.whet)
    cache, outdir = bench_dirs(f"cluster-{args.rows}")
    print(machine_line(cpu=True))
    print(f"whet: {rel(whet)} ({whet_version(whet)})")
    pool = build_pool(args.rows, args.files, cache)
    steps = args.steps.split(",")
    executors = [int(e) for e in args.executors.split(",")]
    embedded = build_embeddings(whet, pool, args.dim, cache, outdir) if "kmeans" in steps else None

    results = []
    for step in steps:
        source = embedded if step == "kmeans" else pool
        for e in executors:
            results.append(run_whet(whet, step, source, e, args, outdir))
        if step == "minhash" and not args.no_datatrove:
            results.append(run_datatrove(pool, args, outdir))

    checks_failed = []
    table = []
    for r in results:
        if "failed" in r:
            checks_failed.append(f"{r['step']} {r['contestant']}: {r['failed']}")
            continue
        local = next((x for x in results if x["step"] == r["step"] and x["contestant"] == "local" and "failed" not in x), None)
        agree = "-"
        if local is not None and r is not local:
            if r["step"] == "kmeans" and r["contestant"] != "datatrove":
                a, b = local["results"]["inertia"], r["results"]["inertia"]
                agree = f"inertia {b / a:.4f}×"
                if abs(b - a) > 0.01 * a:
                    checks_failed.append(f"kmeans {r['contestant']}: inertia {b} vs {a} here")
            elif r["contestant"] == "datatrove":
                agree = f"removed ids J = {jaccard(local['removed'], r['removed']):.3f}"
            else:
                same = r["output_xxh3"] == local["output_xxh3"]
                agree = "same output bytes" if same else "OUTPUT DIFFERS"
                if not same:
                    checks_failed.append(f"{r['step']} {r['contestant']}: the output differs from the local run's")
        ratio = f"{local['seconds'] / r['seconds']:.2f}×" if local else "-"
        cluster_rss = r.get("cluster_rss_mib") or {}
        work = r.get("cluster_work") or {}
        table.append([
            r["step"], r["contestant"], f"{r['seconds']:.1f}", f"{r['rows_per_s']:,.0f}", ratio,
            f"{work['staging_seconds']:.1f} / {work['seconds']:.1f}" if work else "-",
            f"{r['driver_rss_mib']:,.0f}" + (f" (all {r['tree_rss_mib']:,.0f})" if "tree_rss_mib" in r else ""),
            " ".join(f"{v:,.0f}" for v in cluster_rss.values()) or "-",
            agree,
        ])
    print()
    print(f"{args.rows:,} rows, {args.cores} cores; ratio = local seconds / this row's seconds (above 1: faster)")
    for line in fmt_table(["step", "run", "seconds", "rows/s", "vs local", "staged / cluster s", "driver MiB",
                           "scheduler, executors MiB", "agreement"], table, left={0, 1, 8}):
        print(line)

    # Projection for 1 B rows: the cluster's part (its jobs) spreads over N × C cores at the measured cost per
    # row and core; the driver's part (staging the rows, then its own pass over every row) does not spread.
    projection = []
    for r in results:
        if r.get("contestant") != "cluster-1" or "failed" in r:
            continue
        w = r["cluster_work"]
        core_s_per_row = w["seconds"] * args.cores / args.rows
        driver_s_per_row = (r["seconds"] - w["seconds"]) / args.rows
        for n in [int(x) for x in args.machines.split(",")]:
            cluster_s = 1e9 * core_s_per_row / (n * args.machine_cores)
            driver_s = 1e9 * driver_s_per_row
            projection.append({"step": r["step"], "machines": n, "cluster_hours": cluster_s / 3600,
                               "driver_hours": driver_s / 3600, "total_hours": (cluster_s + driver_s) / 3600})
    if projection:
        print(f"\n1 B rows on N machines of {args.machine_cores} cores, from cluster-1's costs per row (hours):")
        rows = [[p["step"], str(p["machines"]), f"{p['cluster_hours']:.2f}", f"{p['driver_hours']:.2f}",
                 f"{p['total_hours']:.2f}"] for p in projection]
        for line in fmt_table(["step", "machines", "cluster", "driver", "total"], rows, left={0}):
            print(line)
        print("assumptions: the cluster's jobs scale linearly with cores (measured here on one 2-core machine);"
              " the driver's share (staging every row, then its pass over every row) runs on one machine at the"
              " speed measured here; shared storage keeps up; the pool's duplicate rate is this one's.")

    for r in results:
        r.pop("removed", None)
    report = {**report_head(cpu=True), "rows": args.rows, "cores": args.cores, "whet": whet_version(whet),
              "results": results, "projection": projection}
    return save_report(cache / f"cluster-results-{args.rows}.json", report, checks_failed)


if __name__ == "__main__":
    sys.exit(main())
