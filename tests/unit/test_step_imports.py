"""Step modules wire the library; what one step needs from another's work lives in a library module both
import (headstart.evaluation.eval_folder between evaluate and register), so arrows do not run sideways between steps."""

from __future__ import annotations

import ast
from pathlib import Path

STEPS = Path(__file__).resolve().parents[2] / "src" / "headstart" / "steps"
# a step calling another step's `run` is wiring: register promotes through headstart.steps.promote.
ALLOWED = {("register", "promote")}


def _steps_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "headstart.steps":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("headstart.steps."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("headstart.steps.")}
    return found - {path.stem}


def test_no_step_imports_another_step_except_to_call_its_run():
    arrows = {(p.stem, other) for p in STEPS.glob("*.py") if p.stem != "__init__" for other in _steps_imported(p)}
    assert arrows <= ALLOWED, f"sideways imports between steps: {sorted(arrows - ALLOWED)}"


def test_register_does_not_import_evaluate():
    """The walk itself: register read evaluate's folder through steps.evaluate until eval_folder held it."""
    assert _steps_imported(STEPS / "register.py") == {"promote"}
