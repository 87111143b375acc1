"""The package's shape: modules import one another without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import digitrec

PACKAGE = Path(digitrec.__file__).parent


def imports() -> dict[str, set[str]]:
    """Each module's digitrec imports, at any depth (a function-level import that dodged a
    cycle is still one)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("digitrec", *path.relative_to(PACKAGE).with_suffix("").parts))
        name = name.removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("digitrec"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("digitrec.")}
        graph[name] = found - {name, "digitrec"}
    return graph


def test_no_import_cycles():
    graph = imports()

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)
