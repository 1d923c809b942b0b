"""The suite's own layout: shared helpers live in tests/helpers.py or conftest.py fixtures, so no test module
imports another (a test module is collected once, with its fixtures; importing it elsewhere runs it twice and
ties one test file's internals to another's)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(tree: ast.Module) -> list[str]:
    """Every module an import names (`from a.b import c` names a.b and a.b.c: c may be a module)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [base, *(f"{base}.{alias.name}" if node.module else base + alias.name for alias in node.names)]
    return found


def test_test_modules_in_imports_are_found() -> None:
    tree = ast.parse("from .test_a import x\nfrom ..steps import test_b\nimport tests.unit.test_c\n"
                     "from tests.helpers import y\nfrom ..conftest import z\n")
    names = [m.rstrip(".").rsplit(".", 1)[-1] for m in _imported_modules(tree)]
    assert {n for n in names if n.startswith("test_")} == {"test_a", "test_b", "test_c"}


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for module in _imported_modules(ast.parse(path.read_text(), filename=str(path))):
            if module.rstrip(".").rsplit(".", 1)[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(TESTS.parent)} imports {module}")
    assert not offenders, "move what is shared into tests/helpers.py or a conftest.py fixture:\n" + "\n".join(offenders)


def test_free_port_is_defined_once() -> None:
    defined = [str(p.relative_to(TESTS.parent)) for p in sorted(TESTS.rglob("*.py"))
               if any(isinstance(n, ast.FunctionDef) and n.name == "free_port"
                      for n in ast.walk(ast.parse(p.read_text())))]
    assert defined == ["tests/integration/servers.py"]
