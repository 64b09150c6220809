"""The import graph of lb's units (sub-packages and root modules): no cycle, counting the imports
made only for types and those inside functions, and nothing below the app reaching up to it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import lb

SOURCE = Path(lb.__file__).parent

# The top of the stack: what may import the app and the generation.
ABOVE_APP = {"app", "demo"}
ABOVE_GENERATION = ABOVE_APP | {"runtime"}


def _module(path: Path) -> tuple[str, str]:
    """(dotted module name, the package its relative imports start from) of `path`."""
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _imports(path: Path, package: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            if module == "lb":  # `from lb import x`: x is the unit
                yield from (f"lb.{alias.name}" for alias in node.names)


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "lb" and len(parts) > 1 else None


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        module, package = _module(path)
        unit = _unit(module)
        if unit is None:  # lb/__init__.py: the public names, re-exported from the top
            continue
        edges = graph.setdefault(unit, set())
        for imported in _imports(path, package):
            target = _unit(imported)
            if target is not None and target != unit:
                edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_lb_units() -> None:
    graph = unit_graph()
    assert {"app", "runtime", "generation", "pool", "backend", "config", "strategy"} <= set(graph)
    assert cycles(graph) == []


def test_nothing_below_the_app_imports_the_app_or_the_generation() -> None:
    graph = unit_graph()
    assert sorted(u for u, edges in graph.items() if "app" in edges) == sorted(ABOVE_APP - {"app"})
    importers = {u for u, edges in graph.items() if "generation" in edges}
    assert importers <= ABOVE_GENERATION


MAX_MODULE_LINES = 450  # a module a reader can hold in mind (STYLE.md); split one that grows past


def test_no_module_is_over_the_size_a_reader_can_hold() -> None:
    sizes = {
        str(path.relative_to(SOURCE)): len(path.read_text().splitlines())
        for path in SOURCE.rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}
