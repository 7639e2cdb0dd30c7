#!/usr/bin/env python3
"""Benchmark `whet convert` against pyarrow on one JSONL file, JSONL -> Parquet (zstd).

A benchmark, not a test. Contestants, each its own child process (wall time and peak RSS of that child):

  whetstone                    whet convert INPUT OUT.parquet        (Parquet zstd + OUT.parquet.manifest.json)
  pyarrow read_json+write_table  pj.read_json(INPUT); pq.write_table(t, OUT, compression='zstd')
  pyarrow open_json streaming  pj.open_json(INPUT) batch by batch into pq.ParquetWriter(zstd)
                               (skipped when the installed pyarrow has no open_json)

Every round runs every contestant once (order rotated per round), each preceded by `cat INPUT > /dev/null`
so all start from the same page cache; the table shows the median wall time over --repeat rounds.
Wall time includes process start (for pyarrow: the interpreter and `import pyarrow`), as a user sees it.

Sizes: MiB (2**20 bytes) throughout; throughput is MiB of input per second.
Usually run through scripts/bench-convert.sh, which sets up .venv and builds whet.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow
import pyarrow.json as pj
import pyarrow.parquet as pq

from benchlib import (MIB, atomic_open, bench_dirs, fmt_table, machine_line, rel, report_head, rotated, run_child,
                      save_report, tail, t0_sources, whet_binary, whet_version)

READ_JSON_CODE = """\
import sys
import pyarrow.json as pj, pyarrow.parquet as pq
t = pj.read_json(sys.argv[1])
pq.write_table(t, sys.argv[2], compression='zstd')
"""

OPEN_JSON_CODE = """\
import sys
import pyarrow.json as pj, pyarrow.parquet as pq
r = pj.open_json(sys.argv[1])
with pq.ParquetWriter(sys.argv[2], r.schema, compression='zstd') as w:
    for batch in r:
        w.write_batch(batch)
"""

WHET = "whetstone"
READ_JSON = "pyarrow read_json+write_table"
OPEN_JSON = "pyarrow open_json streaming"


def build_input(size_mb: int, cache: Path) -> tuple[Path, int]:
    """The cached input of about size_mb MiB and its line count; built once (atomically) if missing."""
    path = cache / f"convert-input-{size_mb}MiB.jsonl"
    meta = cache / f"convert-input-{size_mb}MiB.meta.json"
    if path.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m.get("bytes") == path.stat().st_size:
            return path, m["lines"]

    src_dir, sources = t0_sources()
    target = size_mb * MIB
    print(f"building {rel(path)} ({size_mb} MiB) from {len(sources)} files in {src_dir} ...", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    written = lines = passes = 0
    with atomic_open(path, "wb") as out:
        while written < target:
            passes += 1
            before = written
            for src in sources:
                with open(src, "rb") as f:
                    for line in f:
                        if not line.strip():
                            continue  # a blank line would be no row; keep lines == rows
                        if not line.endswith(b"\n"):
                            line += b"\n"
                        out.write(line)
                        written += len(line)
                        lines += 1
                        if written >= target:
                            break
                if written >= target:
                    break
            if written == before:
                sys.exit(f"no rows in {src_dir}/*.jsonl")
    meta.write_text(json.dumps({"bytes": written, "lines": lines, "passes": passes,
                                "source": str(src_dir), "files": len(sources)}) + "\n")
    return path, lines


def warm(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whet", required=True, help="path of the whet binary")
    ap.add_argument("--size-mb", type=int, default=1024, help="input size in MiB (default 1024)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (default 3)")
    args = ap.parse_args()

    whet = whet_binary(args.whet)
    cache, outdir = bench_dirs("convert-out")

    version = whet_version(whet)
    print(machine_line())
    print(f"pyarrow {pyarrow.__version__} (python {platform.python_version()}), {version or whet}")

    inp, lines = build_input(args.size_mb, cache)
    in_bytes = inp.stat().st_size
    print(f"input: {rel(inp)}: {in_bytes / MIB:.1f} MiB, {lines:,} lines; "
          f"{args.repeat} round(s), median reported\n", flush=True)

    py = sys.executable
    contestants: dict[str, tuple[list[str], Path]] = {}

    def add(name: str, slug: str, argv_for) -> None:
        out = outdir / f"{slug}.parquet"
        contestants[name] = (argv_for(out), out)

    add(WHET, "whetstone", lambda out: [str(whet), "convert", str(inp), str(out)])
    add(READ_JSON, "pyarrow-read_json", lambda out: [py, "-c", READ_JSON_CODE, str(inp), str(out)])
    notes: list[str] = []
    if hasattr(pj, "open_json"):
        add(OPEN_JSON, "pyarrow-open_json", lambda out: [py, "-c", OPEN_JSON_CODE, str(inp), str(out)])
    else:
        notes.append(f"{OPEN_JSON}: skipped, pyarrow {pyarrow.__version__} has no pyarrow.json.open_json")

    runs: dict[str, list[dict]] = {n: [] for n in contestants}
    names = list(contestants)
    failed: dict[str, str] = {}
    for r in range(args.repeat):
        order = rotated(names, r)
        for name in order:
            if name in failed:
                continue
            argv, out = contestants[name]
            for stale in (out, out.with_name(out.name + ".manifest.json")):
                stale.unlink(missing_ok=True)
            warm(inp)
            res = run_child(argv, outdir / f"{out.stem}.log")
            runs[name].append(res)
            status = "ok" if res["rc"] == 0 else f"FAILED rc={res['rc']}"
            print(f"  round {r + 1}/{args.repeat}  {name:<32} {res['seconds']:8.2f} s  "
                  f"{res['rss_mib']:8.1f} MiB peak  {status}", flush=True)
            if res["rc"] != 0:
                failed[name] = tail(outdir / f"{out.stem}.log")

    results = []
    for name, (argv, out) in contestants.items():
        ok_runs = [x for x in runs[name] if x["rc"] == 0]
        row: dict = {"contestant": name, "argv": argv, "runs": runs[name], "output": str(out)}
        if name in failed or not ok_runs:
            row.update(ok=False, error=failed.get(name, "no run"))
            results.append(row)
            continue
        med = statistics.median(x["seconds"] for x in ok_runs)
        row.update(
            seconds=med,
            mib_per_s=in_bytes / MIB / med,
            rss_mib=max(x["rss_mib"] for x in ok_runs),
            output_mib=out.stat().st_size / MIB,
        )
        pf = pq.ParquetFile(out)
        md = pf.metadata
        row.update(rows=md.num_rows, row_groups=md.num_row_groups,
                   columns=[f"{f.name}: {f.type}" for f in pf.schema_arrow],
                   compression=sorted({md.row_group(i).column(j).compression
                                       for i in range(md.num_row_groups) for j in range(md.num_columns)}))
        row["ok"] = md.num_rows == lines
        results.append(row)

    # The table.
    header = ["contestant", "median s", "MiB/s", "peak RSS MiB", "output MiB", "rows", "check"]
    table = []
    for row in results:
        if "seconds" not in row:
            table.append([row["contestant"], "-", "-", "-", "-", "-", "FAILED"])
            continue
        check = "ok" if row["ok"] else f"MISMATCH (want {lines:,})"
        table.append([row["contestant"], f"{row['seconds']:.2f}", f"{row['mib_per_s']:.1f}",
                      f"{row['rss_mib']:.1f}", f"{row['output_mib']:.1f}", f"{row['rows']:,}", check])
    print()
    print("\n".join(fmt_table(header, table, left={0, 6})))
    print()

    by = {row["contestant"]: row for row in results}
    ratios = {}
    w = by.get(WHET, {})
    for other in (READ_JSON, OPEN_JSON):
        o = by.get(other)
        if o is None:
            continue
        if "seconds" in w and "seconds" in o:
            ratio = o["seconds"] / w["seconds"]
            ratios[other] = ratio
            print(f"whetstone vs {other}: {ratio:.2f}× throughput (>1 means whetstone is faster)")
        else:
            print(f"whetstone vs {other}: n/a (a run failed)")
    for n in notes:
        print(f"note: {n}")

    print("\nschemas:")
    for row in results:
        if "columns" in row:
            print(f"  {row['contestant']}: {row['row_groups']} row group(s), "
                  f"{'/'.join(row['compression'])}; " + ", ".join(row["columns"]))
    for name, err in failed.items():
        print(f"\n{name} failed; last lines of its log:\n{err}")

    report = {
        **report_head(),
        "pyarrow": pyarrow.__version__, "python": platform.python_version(), "whet": version,
        "input": {"path": str(inp), "bytes": in_bytes, "lines": lines},
        "repeat": args.repeat, "results": results,
        "throughput_ratio_whetstone_over": ratios, "notes": notes,
    }
    save_report(cache / "convert-results.json", report)

    bad = failed or any(not r.get("ok") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
