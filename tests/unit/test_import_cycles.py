"""No import cycle among headstart's modules at import time.

Module-level imports only: those inside functions are deliberately lazy (start-up time: validation does not
load torch) and run after every module has finished importing, and TYPE_CHECKING blocks never run.
`from headstart.x import y` imports the module headstart.x.y when y is a submodule, else headstart.x."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "headstart"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module, lazy: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported (`lazy`: also those inside functions)."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                out.append(node)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)  # the body never runs; an else branch does
            elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or lazy:
                # if/try/with/class bodies run at import time; a function's only when `lazy`
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []) or []:
                        visit([child] if isinstance(child, ast.stmt) else child.body)

    visit(tree.body)
    return out


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8")), lazy):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]  # headstart.x.y.z (an attribute): its module
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path a -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_path_through(graph, set(c)) for c in components]


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it, for the message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return [start]


def test_no_module_level_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_checker_sees_a_cycle_and_names_it():
    graph = {"headstart.a": {"headstart.b"}, "headstart.b": {"headstart.c"}, "headstart.c": {"headstart.a"},
             "headstart.d": {"headstart.a"}}
    assert cycles(graph) == [["headstart.a", "headstart.b", "headstart.c", "headstart.a"]]


def test_from_package_import_submodule_is_an_edge_to_the_submodule():
    graph = import_graph()
    assert "headstart.data.shards" in graph["headstart.data.stream"]  # `from headstart.data import shards as ...`
    assert "headstart.data.stream" not in graph["headstart.data.folder"]  # inside a method: lazy
    assert "headstart.steps.evaluate" not in graph["headstart.evaluation.scoring"]  # under TYPE_CHECKING
