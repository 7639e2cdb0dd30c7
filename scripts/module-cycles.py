#!/usr/bin/env python3
"""Lists the import cycles between sibling modules, at every level of each crate: the top-level modules of
src/, and the modules inside each module folder (e.g. curation/src/cluster/).

    scripts/module-cycles.py [CRATE_SRC ...]   # default: every crate's src/ in the workspace, and whet's

A module depends on a sibling when its code names it: `crate::<path>::<sibling>`, or `super::<sibling>` from
the right depth. Tests (`#[cfg(test)] mod tests` at the end of a file) and comments are left out. Prints every
cycle (a strongly connected group of more than one module) and exits 1 if there is one.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}")


def code_of(text: str) -> str:
    """The file without its tests and comments (doc links name modules without depending on them)."""
    at = text.find("#[cfg(test)]\nmod tests")
    text = text if at < 0 else text[:at]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def child_of(folder: Path, file: Path) -> str:
    """The module directly inside `folder` that `file` belongs to ("" for the folder's own mod.rs/lib.rs)."""
    first = file.relative_to(folder).parts[0]
    return "" if first in ("lib.rs", "main.rs", "mod.rs") else first.removesuffix(".rs")


def graph(src: Path, folder: Path):
    """Edges between the modules directly inside `folder` (a crate's src/, or a module's folder)."""
    path = "::".join(folder.relative_to(src).parts)
    prefix = r"\bcrate::" + (path + "::" if path else "")
    use = re.compile(prefix + r"([a-z_][a-z0-9_]*)")
    group = re.compile(prefix + r"\{([^}]*)\}")
    children = {child_of(folder, f) for f in folder.rglob("*.rs")} - {""}
    edges = {}
    for file in folder.rglob("*.rs"):
        if (src / "bin") in file.parents and folder == src:
            continue  # the binaries are crates of their own
        me = child_of(folder, file)
        if not me:
            continue
        text = code_of(file.read_text())
        names = set(use.findall(text))
        for g in group.findall(text):
            names |= {x.strip().split("::")[0] for x in g.split(",") if x.strip()}
        depth = len(file.relative_to(folder).parts)  # 1: folder/a.rs; 2: folder/a/b.rs (or a/mod.rs)
        ups = "super::" * (depth if file.name != "mod.rs" else depth - 1)
        if ups:
            names |= set(re.findall(r"\b" + ups + r"([a-z_][a-z0-9_]*)", text))
        edges.setdefault(me, set()).update(n for n in names if n != me and n in children)
    return edges


def module_folders(src: Path):
    """`src` and every module folder below it (a folder holding mod.rs), but other crates' roots."""
    yield src
    for mod in sorted(src.rglob("mod.rs")):
        if not (src / "bin") in mod.parents:
            yield mod.parent


def cycles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def main():
    crates = [Path(a) for a in sys.argv[1:]] or sorted(p.parent for p in ROOT.glob("*/src/lib.rs")) + [
        ROOT / "src",
        ROOT / "src/bin/whet",
    ]
    found = False
    for src in crates:
        folders = list(module_folders(src))
        total = [0, 0]
        for folder in folders:
            edges = graph(src, folder)
            total[0] += len(edges)
            total[1] += sum(len(v) for v in edges.values())
            for part in cycles(edges):
                found = True
                print(f"  cycle in {shown(folder)}: " + " ↔ ".join(part))
                for a in part:
                    print(f"    {a} → {', '.join(sorted(b for b in edges[a] if b in part))}")
        print(f"{shown(src)}: {len(folders)} module folder(s), {total[0]} modules, {total[1]} edges")
    print("cycles found" if found else "no cycle")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
