"""Helpers shared by the benchmark scripts (scripts/bench_*.py): paths, child processes, the machine, tables,
atomic writes and the cached inputs built from the T0 templates.

Not a script: the benchmarks are run as `python scripts/bench_X.py`, which puts this folder on sys.path, and do
`from benchlib import ...`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, Iterator

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
DIM = 384  # dimension of the hashing embeddings built below (that of all-MiniLM-L6-v2 too)


# ---------------------------------------------------------------------------------------------------------------
# Paths and child processes


def shared_data_dir() -> Path:
    env = os.environ.get("WHETSTONE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def t0_sources() -> tuple[Path, list[str]]:
    """The T0 templates folder and its *.jsonl files, sorted; exits when there are none."""
    src_dir = shared_data_dir() / "t0-templates"
    sources = sorted(glob.glob(str(src_dir / "*.jsonl")))
    if not sources:
        sys.exit(f"no *.jsonl under {src_dir} (set WHETSTONE_SHARED_DATA)")
    return src_dir, sources


def bench_dirs(out: str) -> tuple[Path, Path]:
    """.cache/bench (the benchmarks' inputs and results) and its folder `out` (their outputs and logs), made."""
    cache = REPO / ".cache" / "bench"
    outdir = cache / out
    outdir.mkdir(parents=True, exist_ok=True)
    return cache, outdir


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_child(argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run argv to completion (stdout and stderr to log); wall seconds and peak RSS (MiB) of that child.

    The peak is the kernel's ru_maxrss, which carries this process's own peak across the spawn (exec records the
    memory the child started from): it is the child's alone only while this process is smaller. A benchmark that
    has loaded a large peer (torch) before spawning reports at least its own size here."""
    with open(log, "wb") as lf:
        start = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen so it won't wait
    return {"seconds": wall, "rss_mib": ru.ru_maxrss / 1024, "rc": p.returncode,
            "user_s": ru.ru_utime, "sys_s": ru.ru_stime}


def run_whet_stage(argv: list[str], out: Path, fields: Callable[[dict], dict], env: dict | None = None,
                   cwd: Path | None = None) -> dict:
    """Run one whet stage (argv) that writes `out` and `out`.manifest.json, as a child logging to `out`'s stem + .log,
    after removing any stale `out` and manifest. The run: argv, process_s, rss_mib, user_s, sys_s, rc; when the
    child fails, error (the log's tail); else what fields(manifest) returns (a manifest that cannot be read, or
    fields that raise, make rc -1 with an error)."""
    manifest = out.with_name(out.name + ".manifest.json")
    for stale in (out, manifest):
        stale.unlink(missing_ok=True)
    log = out.with_name(out.stem + ".log")
    res = run_child(argv, log, env=env, cwd=cwd)
    run = {"argv": argv, "process_s": res["seconds"], "rss_mib": res["rss_mib"], "user_s": res["user_s"],
           "sys_s": res["sys_s"], "rc": res["rc"]}
    if res["rc"] != 0:
        run["error"] = tail(log)
        return run
    try:
        run.update(fields(json.loads(manifest.read_text())))
    except (OSError, KeyError, ValueError, TypeError) as e:
        run.update(rc=-1, error=f"reading {rel(manifest)}: {e!r}")
    return run


def rotated(items: list, r: int) -> list:
    """items rotated left by r (modulo their count): round r's order, so that no contestant always goes first."""
    return items[r % len(items):] + items[:r % len(items)]


# ---------------------------------------------------------------------------------------------------------------
# The whet binary and the machine


def whet_binary(path: str) -> Path:
    """--whet, resolved; exits when it is not an executable file."""
    whet = Path(path).resolve()
    if not os.access(whet, os.X_OK):
        sys.exit(f"whet binary not found or not executable: {whet}")
    return whet


def whet_version(whet: Path) -> str:
    """`whet --version`, or "" when it prints nothing."""
    return subprocess.run([str(whet), "--version"], capture_output=True, text=True).stdout.strip()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line(cpu: bool = False) -> str:
    """The report's `machine: ...` line; with cpu, the CPU model too."""
    model = f", {cpu_model()}" if cpu else ""
    return (f"machine: {platform.machine()} {platform.system()} {platform.release()}{model}, "
            f"cores: {os.cpu_count()} (usable: {usable_cores()})")


def report_head(cpu: bool = False) -> dict:
    """The first keys of a results file: `when` (now) and `machine`; with cpu, the machine's CPU model too."""
    machine: dict = {"cores": os.cpu_count(), "usable_cores": usable_cores()}
    if cpu:
        machine["cpu"] = cpu_model()
    machine["platform"] = platform.platform()
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine}


# ---------------------------------------------------------------------------------------------------------------
# Output


def fmt_table(header: list[str], rows: list[list[str]], left: set[int]) -> list[str]:
    """The lines of a table: header, dashes, rows; columns two spaces apart, those in `left` left-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def whet_train_metrics(out: Path) -> dict:
    """A `whet train` run's steps (OUT/metrics.jsonl): tokens/s and tokens a step over steps 3 on (the first
    two are warm-up, and the PyTorch side is timed the same way), the first and last step's loss."""
    steps = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    timed = steps[2:] or steps
    tokens, seconds = sum(s["tokens"] for s in timed), sum(s["seconds"] for s in timed)
    return {"steps": len(steps), "tokens_per_s": tokens / seconds, "tokens_per_step": tokens / len(timed),
            "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"]}


def write_json(path: Path, obj) -> None:
    """obj as indented JSON and a newline, replacing path at once (through path.tmp)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def save_report(path: Path, report: dict, checks_failed: list[str] | None = None) -> int:
    """Write the results file, print its path and how many checks failed (if any); the exit status: 1 if any."""
    write_json(path, report)
    print(f"\nresults: {rel(path)}")
    if checks_failed:
        print(f"{len(checks_failed)} check(s) failed")
    return 1 if checks_failed else 0


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = None) -> Iterator[IO]:
    """Write a file to a hidden temporary next to path, fsync it and move it onto path only when the block ends
    without an exception; otherwise the temporary is removed and path is left as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, encoding=encoding, buffering=8 * MIB) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------------------------------------------------------
# Cached inputs


def build_cycled_jsonl(rows: int, cache: Path) -> Path:
    """A JSONL of `rows` rows {"prompt": "<T0 prompt> #<i>"}, cycling the T0 prompts; built once (atomically)."""
    path = cache / f"kmeans-input-{rows}rows.jsonl"
    meta = cache / f"kmeans-input-{rows}rows.meta.json"
    if path.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m.get("bytes") == path.stat().st_size and m.get("rows") == rows:
            return path
    src_dir, sources = t0_sources()
    prompts: list[str] = []
    for src in sources:
        with open(src, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    p = json.loads(line).get("prompt")
                    if isinstance(p, str):
                        prompts.append(p)
    if not prompts:
        sys.exit(f"no prompts in {src_dir}/*.jsonl")
    print(f"building {rel(path)} ({rows:,} rows cycling {len(prompts):,} T0 prompts) ...", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            out.write(json.dumps({"prompt": f"{prompts[i % len(prompts)]} #{i}"}, ensure_ascii=False) + "\n")
    meta.write_text(json.dumps({"bytes": path.stat().st_size, "rows": rows, "prompts": len(prompts),
                                "source": str(src_dir), "files": len(sources)}) + "\n")
    return path


def build_hashing_embeddings(whet: Path, source: Path, out: Path, logdir: Path) -> Path:
    """`whet embed SOURCE OUT --embedder hashing --dim 384`, once: a .meta.json written after success marks it done."""
    meta = out.with_name(out.name + ".meta.json")
    if out.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m.get("bytes") == out.stat().st_size:
            return out
    for stale in (out, out.with_name(out.name + ".manifest.json"), meta):
        stale.unlink(missing_ok=True)
    argv = [str(whet), "embed", str(source), str(out), "--embedder", "hashing", "--dim", str(DIM)]
    print(f"building {rel(out)}: {' '.join(argv[1:])} ...", flush=True)
    log = logdir / f"embed-{out.stem}.log"
    res = run_child(argv, log)
    if res["rc"] != 0 or not out.exists():
        sys.exit(f"whet embed failed (rc={res['rc']}); last lines of {rel(log)}:\n{tail(log)}")
    rows = pq.ParquetFile(out).metadata.num_rows
    print(f"  {rows:,} rows in {res['seconds']:.1f} s", flush=True)
    meta.write_text(json.dumps({"bytes": out.stat().st_size, "rows": rows, "source": str(source),
                                "embedder": "hashing", "dim": DIM, "seconds": res["seconds"]}) + "\n")
    return out
