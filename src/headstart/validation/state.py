"""The last accepted dataset summary: stored on every passing validation, read for drift.

Kept in `state_dir` next to the project; `tracking.py` also attaches it to the MLflow run, so a
fresh container (a Kubeflow pod) with no state folder can find it through the tracking server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.validation.summary import write_json

STATE_FILE = "accepted_summary.json"


def load_accepted(state_dir: Path | None) -> dict[str, Any] | None:
    if state_dir is None or not (state_dir / STATE_FILE).is_file():
        return None
    path = state_dir / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable accepted summary ({exc}); delete it to start drift tracking afresh"
        ) from exc


def save_accepted(state_dir: Path, summary: dict[str, Any]) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    return write_json(state_dir / STATE_FILE, summary)
