"""The import graph of ganstack/ and the default plugins, read from the source (no module is imported).

Every ``import`` counts, at module level or inside a function (a lazy import is still a dependency);
imports under ``if TYPE_CHECKING:`` do not (they never run). Used by tests/test_import_graph.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"ganstack": ROOT / "ganstack", "ganstack_defaults": ROOT / "plugins" / "ganstack_defaults"}


def module_files() -> dict[str, Path]:
    """Every module of the two packages by dotted name (a package by its own name, for its __init__)."""
    found: dict[str, Path] = {}
    for top, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each import statement that runs."""
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found.append((base, [alias.name for alias in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {internal module it imports: first line}."""
    files = module_files()
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target, names, line in _imports(tree, module, path.name == "__init__.py"):
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in files] or [target]
            for t in targets:
                if t in files and t != module:
                    edges.setdefault(t, line)
        graph[module] = edges
    return graph


def _internal(found: list[tuple[str, list[str], int]]) -> set[str]:
    files = module_files()
    return {t for target, names, _line in found for t in [f"{target}.{n}" for n in names] + [target] if t in files}


def module_imports(path: Path) -> set[str]:
    """The internal modules ``path`` imports outside its functions (what importing it runs)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return _internal([i for node in top for i in _imports(node, "", False)])


def function_imports(path: Path, function: str) -> set[str]:
    """The internal modules a top-level function of ``path`` imports in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return _internal(_imports(node, "", False))
    raise KeyError(function)


def reachable(graph: dict[str, dict[str, int]], start: set[str]) -> dict[str, list[str]]:
    """Every module reachable from ``start``, with one import chain that reaches it."""
    chains = {m: [m] for m in start}
    todo = list(start)
    while todo:
        module = todo.pop()
        for target in graph.get(module, {}):
            if target not in chains:
                chains[target] = [*chains[module], target]
                todo.append(target)
    return chains


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found
