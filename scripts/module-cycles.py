#!/usr/bin/env python3
"""Lists the import cycles between the top-level modules of each crate (a module's file, or its folder).

    scripts/module-cycles.py [CRATE_SRC ...]   # default: every crate's src/ in the workspace

A module depends on another when its code names `crate::<other>` (or `super::<other>` from a file directly
below the crate root); tests (`#[cfg(test)] mod tests` at the end of a file) and comments are left out. Prints each crate's
edges and every cycle (strongly connected component of more than one module); exits 1 if there is one.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}")


def top_module(src: Path, file: Path) -> str:
    rel = file.relative_to(src)
    return rel.parts[0].removesuffix(".rs") if rel.parts[0] not in ("lib.rs", "main.rs") else ""


def code_of(text: str) -> str:
    """The file without its tests and comments (doc links name modules without depending on them)."""
    at = text.find("#[cfg(test)]\nmod tests")
    text = text if at < 0 else text[:at]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def graph(src: Path):
    edges = {}
    for file in src.rglob("*.rs"):
        me = top_module(src, file)
        if not me:
            continue
        text = code_of(file.read_text())
        names = set(USE.findall(text))
        for group in GROUP.findall(text):
            names |= {g.strip().split("::")[0] for g in group.split(",") if g.strip()}
        if file.parent == src:  # super:: from a top-level file is the crate root
            names |= set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
        names = {n for n in names if (src / f"{n}.rs").exists() or (src / n).is_dir()}
        edges.setdefault(me, set()).update(n for n in names if n != me)
    return edges


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


def main():
    crates = [Path(a) for a in sys.argv[1:]] or sorted(p.parent for p in ROOT.glob("*/src/lib.rs")) + [
        ROOT / "src",
        ROOT / "src/bin/whet",
    ]
    found = False
    for src in crates:
        edges = graph(src)
        found_here = cycles(edges)
        print(f"{src.relative_to(ROOT) if src.is_relative_to(ROOT) else src}: {len(edges)} modules, "
              f"{sum(len(v) for v in edges.values())} edges, {len(found_here)} cycle(s)")
        for part in found_here:
            found = True
            print("  cycle: " + " ↔ ".join(part))
            for a in part:
                print(f"    {a} → {', '.join(sorted(b for b in edges[a] if b in part))}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
