"""The champion as a file, so DVC re-runs evaluate and register when the champion moves.

The champion lives in MLflow, and DVC only sees files. The `champion` stage of dvc.yaml runs on every
`dvc repro` and rewrites `outputs/champion.json`; evaluate and register depend on it, and DVC re-runs them
only when its content changes. A move made by this loop's own register (it promoted the candidate it
evaluated) leaves the file as it was: evaluate's output already led to that champion, and re-running
would only register the same model again. Any other move (`headstart promote` or `rollback`, another
pipeline, another machine) changes it. The content names no tracking URI, so two spellings of one
server are one champion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headstart.config import TrackingConfig


def left_by_register(registration: dict[str, Any] | None, model: str) -> tuple[bool, str | None]:
    """(known, version): the champion the last register left behind, from its registration.json; the
    version it promoted, else the one it was gated against (which it checked was the champion)."""
    if not registration or registration.get("model_name") != model:
        return False, None
    if registration.get("promoted"):
        return True, str(registration["version"])
    champion = (registration.get("decision") or {}).get("champion_version")
    return True, None if champion is None else str(champion)


def reference(model: str, current: str | None, registration: dict[str, Any] | None,
              previous: dict[str, Any] | None) -> dict[str, Any]:
    """The content of the champion file: `previous` kept while the champion is where this loop's last
    register left it, else the current champion (None before the first promotion)."""
    known, left = left_by_register(registration, model)
    if previous is not None and previous.get("registered_model") == model and known and current == left:
        return previous
    return {"registered_model": model, "champion_version": current}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or half-written: no shortcut, the current champion is written
    return value if isinstance(value, dict) else None


def write(tracking: TrackingConfig, out: Path, registration: Path) -> tuple[dict[str, Any], bool]:
    """Look the champion up and write the file; it is rewritten only when its content changes, which
    the second value says."""
    from headstart import registry

    current = registry.champion(tracking)
    previous = _read(out)
    ref = reference(tracking.registered_model, current.version if current else None, _read(registration),
                    previous)
    if ref != previous:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(ref, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(out)
    return ref, ref != previous
