#!/usr/bin/env python3
"""Compares two output folders of the same whet runs (before and after a change that should not change results).

    scripts/same-outputs.py BEFORE AFTER

Every file in either folder is compared:
- byte-identical: the same bytes;
- same but timings: JSON, JSONL, Parquet, Markdown or SVG equal once what measures time is taken out
  (keys and columns named *seconds*, *_per_s*, *per_second*, started_unix; "N s" and "N.N s" in text) and
  the process id in the name of a step's temporary folder (`.eval.partial-8047`) is masked;
- DIFFERENT, or only in one folder: listed with the first difference.
Manifests' row counts (in, out, rejected by reason) are also listed side by side. Parquet needs pyarrow
(python3 -m venv .venv && .venv/bin/pip install pyarrow). Exits 1 when anything differs.
"""

import json
import re
import signal
import sys
from pathlib import Path

TIMING_KEY = re.compile(r"seconds|_per_s\b|per_s$|per_second|started_unix|elapsed")
TIMING_TEXT = re.compile(r"\b\d+(?:[.,]\d+)*(?:\.\d+)? ?(?:s|seconds|tokens/s|rows/s)\b")
# A whole-or-nothing step writes into `.<step>.partial-<process id>/` and renames it when done; manifests
# record the path they were written at.
PARTIAL_DIR = re.compile(r"\.partial-\d+")


def strip_json(v):
    if isinstance(v, dict):
        return {k: strip_json(x) for k, x in v.items() if not TIMING_KEY.search(k)}
    if isinstance(v, list):
        return [strip_json(x) for x in v]
    if isinstance(v, str):
        return PARTIAL_DIR.sub(".partial-<pid>", v)
    return v


def normalised(path: Path):
    name = path.name
    if name.endswith(".json"):
        return strip_json(json.loads(path.read_text()))
    if name.endswith(".jsonl"):
        return [strip_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        keep = [c for c in table.column_names if not TIMING_KEY.search(c)]
        return table.select(keep).to_pylist()
    if name.endswith((".md", ".svg", ".txt", ".csv")):
        return TIMING_TEXT.sub("<time>", path.read_text())
    return None


def first_difference(a, b, where=""):
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}.{k}: only in {'after' if k not in a else 'before'}"
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, str) and "\n" in a:
        for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines())):
            if x != y:
                return f"line {i + 1}: {x[:100]!r} vs {y[:100]!r}"
        return None if a == b else "line count differs"
    return None if a == b else f"{where}: {str(a)[:80]} vs {str(b)[:80]}"


def counts(path: Path):
    m = json.loads(path.read_text())
    rows = m.get("rows", {})
    return (rows.get("in"), rows.get("out"), rows.get("rejected"), json.dumps(m.get("rejected", {}).get("by_reason", {})))


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends it quietly
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    files = sorted({p.relative_to(before) for p in before.rglob("*") if p.is_file()}
                   | {p.relative_to(after) for p in after.rglob("*") if p.is_file()})
    same, timings, different = [], [], []
    for rel in files:
        a, b = before / rel, after / rel
        if not a.exists() or not b.exists():
            different.append((rel, f"only in {'after' if not a.exists() else 'before'}"))
        elif a.read_bytes() == b.read_bytes():
            same.append(rel)
        else:
            na, nb = normalised(a), normalised(b)
            diff = "not comparable but for its bytes" if na is None else first_difference(na, nb)
            (different.append((rel, diff)) if diff else timings.append(rel))
    manifests = [rel for rel in files if rel.name.endswith(".manifest.json") and (before / rel).exists()
                 and (after / rel).exists()]
    count_mismatch = [rel for rel in manifests if counts(before / rel) != counts(after / rel)]
    print(f"{'files':<34}{len(files):>6}")
    print(f"{'byte-identical':<34}{len(same):>6}")
    print(f"{'same but timings':<34}{len(timings):>6}")
    print(f"{'different':<34}{len(different):>6}")
    print(f"{'manifests with the same counts':<34}{len(manifests) - len(count_mismatch):>6} of {len(manifests)}")
    # A stage's output is the file its manifest sits beside.
    data = [r for r in files if (before / r.parent / f"{r.name}.manifest.json").exists()]
    data_same = [r for r in data if r in same]
    print(f"{'stage outputs byte-identical':<34}{len(data_same):>6} of {len(data)}")
    for rel in timings:
        print(f"  timings only: {rel}")
    for rel, why in different:
        print(f"  DIFFERENT: {rel}: {why}")
    for rel in count_mismatch:
        print(f"  COUNTS: {rel}: {counts(before / rel)} vs {counts(after / rel)}")
    sys.exit(1 if different or count_mismatch else 0)


if __name__ == "__main__":
    main()
