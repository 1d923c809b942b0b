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
import os
from pathlib import Path
from typing import Any

from headstart.config import TrackingConfig
from headstart.registry.lock import NOT_FOUND

# the alias, as model_registry names it: this module must not import that one (importing it imports mlflow);
# tests/integration/test_champion_lookup.py checks that both, and their not-found codes (lock.NOT_FOUND), agree
CHAMPION = "champion"


def reference(model: str, current: str | None, registration: dict[str, Any] | None,
              previous: dict[str, Any] | None) -> dict[str, Any]:
    """The content of the champion file: `previous` kept while the champion is where this loop's last
    register left it (from its registration.json: the version it promoted, else the one it was gated
    against, which it checked was the champion), else the current champion (None before the first promotion)."""
    registration = registration or {}
    if previous is not None and previous.get("registered_model") == model == registration.get("model_name"):
        left = (str(registration["version"]) if registration.get("promoted")
                else (registration.get("decision") or {}).get("champion_version"))
        if current == (None if left is None else str(left)):
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
    found, version = quick_champion(tracking)
    if not found:
        from headstart.registry import model_registry as registry

        current = registry.champion(tracking)
        version = current.version if current else None
    previous = _read(out)
    ref = reference(tracking.registered_model, version, _read(registration), previous)
    if ref != previous:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(ref, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(out)
    return ref, ref != previous


def quick_champion(tracking: TrackingConfig) -> tuple[bool, str | None]:
    """(answered, version): the champion's version read without importing MLflow (2.6 s of a no-op
    `dvc repro`, which runs this stage every time), straight from a SQLite store's alias table or one
    REST call to a tracking server. (False, None) whenever the answer is not certain (another store, an
    error, auth or TLS set-up the plain request does not reproduce): the caller then asks MLflow itself,
    which also gives the proper error."""
    uri = tracking.resolved_uri()
    try:
        if uri.startswith("sqlite:///"):
            return True, _sqlite_alias(Path(uri.removeprefix("sqlite:///")), tracking.registered_model)
        if uri.startswith(("http://", "https://")) and not any(
                os.environ.get(k) for k in ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                                            "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_WORKSPACE")):
            return _rest_alias(uri, tracking.registered_model)
    except Exception:  # noqa: BLE001 - any doubt goes to MLflow's own client, which raises properly
        return False, None
    return False, None


def _sqlite_alias(db: Path, model: str) -> str | None:
    """The alias row, read only: a store that does not exist yet has no champion (and is not created)."""
    import sqlite3

    if not db.is_file():
        return None
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "registered_model_aliases" not in tables:
            return None
        columns = {r[1] for r in conn.execute("PRAGMA table_info(registered_model_aliases)")}
        query = "SELECT version FROM registered_model_aliases WHERE name=? AND alias=?"
        args: tuple[str, ...] = (model, CHAMPION)
        if "workspace" in columns:
            query, args = query + " AND workspace=?", (*args, "default")
        row = conn.execute(query, args).fetchone()
    return None if row is None else str(row[0])


def _rest_alias(uri: str, model: str) -> tuple[bool, str | None]:
    """GET registered-models/alias with the same credentials MLflow would send; a missing alias (the error
    codes registry.champion takes for one): no champion."""
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"name": model, "alias": CHAMPION})
    req = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}")  # noqa: S310 - http(s) only
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        req.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    elif user and password:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - http(s) only, checked above
            return True, str(json.loads(resp.read())["model_version"]["version"])
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 404) and json.loads(exc.read() or b"{}").get("error_code") in NOT_FOUND:
            return True, None
        return False, None  # 403 for a model that does not exist yet under basic auth, 5xx: MLflow decides
