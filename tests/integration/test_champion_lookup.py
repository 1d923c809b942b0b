"""The `champion` stage runs on every `dvc repro`: it reads the champion without importing MLflow (a
SQLite store's alias table, or one REST call), and that answer is the one MLflow's own client gives."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from headstart.config import TrackingConfig
from headstart.registry import champion_ref
from headstart.registry import model_registry as registry
from headstart.registry.champion_ref import quick_champion, write
from tests.helpers import params_cfg


def _register(tracking: TrackingConfig, source: str, alias: bool) -> str:
    """A registered version (its source a URI nothing reads), with the champion alias on it or not."""
    c = registry.client(tracking)
    try:
        c.get_registered_model(tracking.registered_model)
    except Exception:  # noqa: BLE001 - not there yet
        c.create_registered_model(tracking.registered_model)
    version = str(c.create_model_version(tracking.registered_model, f"s3://models/{source}").version)
    if alias:
        c.set_registered_model_alias(tracking.registered_model, registry.CHAMPION, version)
    return version


def _mlflow_answer(tracking: TrackingConfig) -> str | None:
    current = registry.champion(tracking)
    return current.version if current else None


def test_sqlite_store_answers_like_mlflow_and_a_missing_store_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "store" / "mlflow.db"
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{db}", artifact_root=str(tmp_path / "art"),
                          registered_model="lookup-model")
    assert quick_champion(tracking) == (True, None)
    assert not (tmp_path / "store").exists()  # a lookup never creates the store

    _register(tracking, "m1", alias=False)
    assert quick_champion(tracking) == (True, None) and _mlflow_answer(tracking) is None
    v2 = _register(tracking, "m2", alias=True)
    assert quick_champion(tracking) == (True, v2) == (True, _mlflow_answer(tracking))
    other = tracking.model_copy(update={"registered_model": "another-model"})
    assert quick_champion(other) == (True, None) and _mlflow_answer(other) is None
    assert (champion_ref.CHAMPION, champion_ref.NOT_FOUND) == (registry.CHAMPION, registry._NOT_FOUND)  # one rule


def test_the_champion_stage_does_not_import_mlflow_when_the_store_answers(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{db}", artifact_root=str(tmp_path / "art"),
                          registered_model="lookup-model")
    version = _register(tracking, "m1", alias=True)
    code = ("import sys, json; from pathlib import Path; from headstart.config import TrackingConfig; "
            "from headstart.registry.champion_ref import write; "
            f"ref, _ = write(TrackingConfig(**{tracking.model_dump()!r}), "
            f"Path({str(tmp_path / 'champion.json')!r}), Path({str(tmp_path / 'none.json')!r})); "
            "print(json.dumps([ref['champion_version'], 'mlflow' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f'["{version}", false]'


@pytest.mark.integration
def test_tracking_server_with_basic_auth_answers_like_mlflow(pg_auth_mlflow, monkeypatch, tmp_path: Path) -> None:
    for key, value in pg_auth_mlflow.env("admin").items():
        monkeypatch.setenv(key, value)
    tracking = params_cfg("tracking",
                          tracking_uri=pg_auth_mlflow.url, registered_model=f"lookup-{uuid.uuid4().hex[:8]}")
    # before the model exists basic auth may answer 403, which the plain request leaves to MLflow
    ref, _ = write(tracking, tmp_path / "champion.json", tmp_path / "none.json")
    assert ref["champion_version"] is None
    _register(tracking, "m1", alias=False)
    assert quick_champion(tracking) == (True, None)
    version = _register(tracking, "m2", alias=True)
    assert quick_champion(tracking) == (True, version) == (True, _mlflow_answer(tracking))
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password")
    assert quick_champion(tracking) == (False, None)  # 401: MLflow's client gives the proper error
