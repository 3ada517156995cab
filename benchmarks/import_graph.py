"""The package's import graph and where its lines are: modules, edges, import cycles, lines per package.

    PYTHONPATH=src python3 benchmarks/import_graph.py            # a Markdown summary
    PYTHONPATH=src python3 benchmarks/import_graph.py --edges    # and every package-to-package edge

Counts every ``import`` statement of the package's own modules, inside functions too (grimp, which import-linter
uses).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import grimp

import hamburger

SRC = Path(hamburger.__file__).parent


def package_of(module: str) -> str:
    """``hamburger.seg.train`` -> ``seg``; a top-level module is the core (``functional``, ``ham``, ...) or ``cli``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # hamburger/__init__.py: the public names, re-exported
    if (SRC / parts[1]).is_dir():
        return parts[1]
    return "cli" if parts[1] == "cli" else "core"


def lines_of(module: str) -> int:
    rel = Path(*module.split(".")[1:])
    path = SRC / rel / "__init__.py" if (SRC / rel).is_dir() else SRC / rel.with_suffix(".py")
    return len(path.read_text().splitlines())


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (import cycles)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="list the package-to-package edges")
    args = parser.parse_args()
    graph = grimp.build_graph("hamburger", cache_dir=None)
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    n_edges = sum(len(v) for v in edges.values())
    cycles = strongly_connected(modules, edges)
    lines = Counter()
    for m in modules:
        lines[package_of(m)] += lines_of(m)
    total = sum(lines.values())
    print(f"modules {len(modules)}, import edges {n_edges}, import cycles {len(cycles)}, lines {total}")
    for comp in cycles:
        print("  cycle:", " <-> ".join(comp))
    print("\n| package | lines | share |\n|---|---:|---:|")
    for pkg, n in lines.most_common():
        print(f"| {pkg} | {n} | {100 * n / total:.0f}% |")
    if args.edges:
        pairs = Counter((package_of(a), package_of(b)) for a, bs in edges.items() for b in bs)
        pairs = {k: n for k, n in pairs.items() if k[0] != k[1]}
        print("\n| from | to | imports |\n|---|---|---:|")
        for (a, b), n in sorted(pairs.items()):
            print(f"| {a} | {b} | {n} |")


if __name__ == "__main__":
    main()
