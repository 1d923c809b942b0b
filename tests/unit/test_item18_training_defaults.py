"""Item 18 of issue 14 (training part): one source of truth for training defaults, imports one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "headstart"


def _imports(module: Path) -> set[str]:
    """Every headstart module a file imports, at module level or inside functions and TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.startswith("headstart")}


def test_item18_checkpoint_does_not_import_engine():
    """The arrow runs engine -> checkpoint -> trainstate; checkpoint.py never reaches back into engine."""
    assert "headstart.checkpoint" in _imports(SRC / "engine.py")
    assert not {n for n in _imports(SRC / "checkpoint.py") if n.startswith("headstart.engine")}
    assert not {n for n in _imports(SRC / "trainstate.py") if n.startswith(("headstart.engine", "headstart.checkpoint"))}
