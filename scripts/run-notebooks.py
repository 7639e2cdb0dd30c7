#!/usr/bin/env python3
"""Executes notebooks with the whetstone kernel through the real Jupyter client (nbclient), checks their
outputs, and renders each to HTML with nbconvert.

    run-notebooks.py --out DIR [--expect-warm] [--jobs N] NOTEBOOK...

Notebooks run N at a time (default 2), each with its own kernel; the notebooks write to different folders under
work/. A notebook whose metadata lists files it needs (`"whetstone": {"needs": {PATH: "the script that makes
it"}}`, paths from the repository's root) is skipped, with the reason, where one is missing. Checks, per notebook:
no cell ends in an error or writes to stderr; a cell tagged `expect-html-table` shows an HTML table (`text/html`
with `<table`); a cell tagged `expect-svg` shows an SVG (`image/svg+xml`). First in the queue are the kernel's
own checks: a panic in a cell is reported and the variables of earlier cells survive it.
The kernel's stderr goes to DIR/<name>.kernel.log and is printed when something fails; with --expect-warm, a
kernel that compiles any whetstone crate at start fails the run (install --warm should have done it).
Timings (kernel start to ready, first cell, whole notebook) go to stdout as a table and to DIR/timings.json.
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

KERNEL = "whetstone"
ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 1800  # a cold kernel compiles the whole whetstone tree first
CELL_TIMEOUT = 1800


class Failure(Exception):
    pass


def outputs_of(cell, kind):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == kind]


def data_of(cell, mime):
    return [o["data"][mime] for o in cell.get("outputs", []) if mime in o.get("data", {})]


def run(nb, name, out_dir, cwd):
    """Executes nb in place; returns (kernel start seconds, seconds per cell)."""
    log_path = out_dir / f"{name}.kernel.log"
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT,
        startup_timeout=STARTUP_TIMEOUT,
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    seconds = []
    with open(log_path, "w") as log:
        started = time.time()
        try:
            with client.setup_kernel(stdout=log, stderr=log):
                ready = time.time() - started
                for i, cell in enumerate(nb.cells):
                    t = time.time()
                    client.execute_cell(cell, i)
                    if cell.cell_type == "code":
                        seconds.append(time.time() - t)
        except Exception as e:
            raise Failure(f"{name}: {type(e).__name__}: {e}") from e
    return ready, seconds


def kernel_log(out_dir, name):
    path = out_dir / f"{name}.kernel.log"
    return path.read_text(errors="replace") if path.exists() else ""


def check_notebook(nb, name):
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        for e in outputs_of(cell, "error"):
            problems.append(f"cell {i}: {e.get('ename')}: {e.get('evalue')}")
        # Evcxr reports an error returned with `?` (and a panic) on stderr, not as an error output; these
        # notebooks print progress to stdout, so anything on stderr is a failure.
        stderr = "".join(o.get("text", "") for o in outputs_of(cell, "stream") if o.get("name") == "stderr")
        if stderr.strip():
            problems.append(f"cell {i}: stderr: {stderr.strip()[:500]}")
        if "expect-html-table" in tags and not any("<table" in h for h in data_of(cell, "text/html")):
            problems.append(f"cell {i}: no HTML table in its output")
        if "expect-svg" in tags and not any(s.lstrip().startswith("<svg") for s in data_of(cell, "image/svg+xml")):
            problems.append(f"cell {i}: no SVG in its output")
    if problems:
        raise Failure(f"{name}:\n  " + "\n  ".join(problems))


def kernel_checks(out_dir, cwd):
    """A panic is reported, and earlier variables survive it."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Rust (whetstone)", "language": "rust"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        "let kept: i32 = 40 + 2;\nkept",
        'panic!("a panic in a cell");',
        "kept + 1",
        'Dataset::open("no/such/file.jsonl").map(|d| d.rows())',
    ]]
    ready, seconds = run(nb, "kernel-checks", out_dir, cwd)
    first, panic, after, missing = nb.cells
    problems = []
    if data_of(first, "text/plain") != ["42"]:
        problems.append(f"first cell: {first.outputs}")
    panic_text = json.dumps(panic.outputs)
    if "a panic in a cell" not in panic_text:
        problems.append(f"the panic was not reported: {panic.outputs}")
    if data_of(after, "text/plain") != ["43"]:
        problems.append(f"a variable did not survive the panic: {after.outputs}")
    if "no/such/file.jsonl" not in json.dumps(missing.outputs):
        problems.append(f"a missing file's error does not name it: {missing.outputs}")
    if problems:
        raise Failure("kernel checks:\n  " + "\n  ".join(problems))
    return ready, seconds


def run_job(name, path, out, cwd, expect_warm):
    """One notebook (or the kernel checks when path is None), in a worker process: ("ok", timings),
    ("skipped", reason) or ("failed", message with the kernel's last stderr lines)."""
    (cwd / "work").mkdir(exist_ok=True)
    started = time.time()
    try:
        if path is None:
            ready, seconds = kernel_checks(out, cwd)
        else:
            nb = nbformat.read(path, as_version=4)
            needs = nb.metadata.get("whetstone", {}).get("needs", {})
            missing = [f"{need} (run {script})" for need, script in needs.items() if not (ROOT / need).exists()]
            if missing:
                return "skipped", f"{name} (it needs {', '.join(missing)})"
            ready, seconds = run(nb, name, out, cwd)
            nbformat.write(nb, out / f"{name}.ipynb")
            html, _ = HTMLExporter().from_notebook_node(nb)
            (out / f"{name}.html").write_text(html)
            check_notebook(nb, name)
        log = kernel_log(out, name)
        compiled = [l.strip() for l in log.splitlines() if l.strip().startswith("Compiling whetstone")]
        if expect_warm and compiled:
            raise Failure(f"{name}: the kernel compiled at start, though installed warm: {compiled}")
    except Failure as e:
        message = f"FAILED {e}"
        log = kernel_log(out, name)
        if log:
            message += f"\n--- kernel stderr ({name}), last 60 lines ---\n" + "\n".join(log.splitlines()[-60:])
        return "failed", message
    return "ok", {
        "notebook": name,
        "kernel_ready_s": round(ready, 1),
        "first_cell_s": round(seconds[0], 1) if seconds else None,
        "start_to_first_result_s": round(ready + (seconds[0] if seconds else 0), 1),
        "total_s": round(time.time() - started, 1),
        "cells": len(seconds),
        "cell_s": [round(x, 1) for x in seconds],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--expect-warm", action="store_true")
    # Two at a time by default: a kernel's start is mostly Evcxr's analysis of the crate graph on one core, and
    # a notebook waits on its `whet` runs and cell compiles in turns, so a second one fills the idle core.
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [("kernel-checks", None)] + [(p.stem, p) for p in args.notebooks]
    started = time.time()
    # Separate processes (not threads): each client runs its own event loop and kernel manager.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(run_job, name, path, args.out, (path.parent if path else args.notebooks[0].parent).resolve(),
                        args.expect_warm)
            for name, path in jobs
        ]
        results = []
        for (name, _), future in zip(jobs, futures):
            status, detail = future.result()
            results.append((name, status, detail))
            if status == "skipped":
                print(f"skipped {detail}", flush=True)
            elif status == "failed":
                print(detail, file=sys.stderr, flush=True)
    timings = [detail for _, status, detail in results if status == "ok"]
    skipped = [detail for _, status, detail in results if status == "skipped"]
    failed = [name for name, status, _ in results if status == "failed"]
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    header = ["notebook", "kernel ready", "first cell", "start → first result", "all cells", "cells"]
    rows = [[t["notebook"], f"{t['kernel_ready_s']} s", f"{t['first_cell_s']} s",
             f"{t['start_to_first_result_s']} s", f"{t['total_s']} s", str(t["cells"])] for t in timings]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"{len(jobs)} jobs, {args.jobs} at a time: {time.time() - started:.0f} s in all")
    print(f"executed notebooks and their HTML: {args.out}")
    if skipped:
        print(f"skipped, not checked: {'; '.join(skipped)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
