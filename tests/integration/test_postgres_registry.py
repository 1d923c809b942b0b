"""The registry against the production form: `mlflow server` on PostgreSQL with basic auth, as the pipeline's
non-admin user. PostgreSQL enforces the 5000-character tag column that SQLite ignores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from headstart import cli
from headstart.registry import lifecycle
from headstart.registry import model_registry as registry
from headstart.steps import promote
from tests.helpers import params_cfg

from .conftest import AuthServer
from .servers import free_port

MOVES, VERSIONS = 100, 5


def _login(server: AuthServer, user: str, monkeypatch: pytest.MonkeyPatch) -> AuthServer:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in server.env(user).items():
        monkeypatch.setenv(key, value)
    return server


@pytest.fixture
def as_pipeline(pg_auth_mlflow: AuthServer, monkeypatch: pytest.MonkeyPatch) -> AuthServer:
    return _login(pg_auth_mlflow, "pipeline", monkeypatch)


@pytest.mark.integration
def test_history_outlives_100_promotions_on_postgres(pg_auth_mlflow: AuthServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """The history was one JSON tag; PostgreSQL refused it after ~31 moves, and from then
    on every register, promote and rollback failed. (As the admin: a non-admin user's permission checks
    make each request ~3x slower, and test_registry_lock covers the pipeline user.)"""
    server = _login(pg_auth_mlflow, "admin", monkeypatch)
    tracking = params_cfg("tracking", tracking_uri=server.url, registered_model="hundred", experiment="history")
    c = registry.client(tracking)
    c.create_registered_model("hundred")
    for _ in range(VERSIONS):
        c.create_model_version("hundred", "s3://bucket/hundred/model", tags={registry.REGISTRATION_TAG: "complete"})
    moves = [str(i % VERSIONS + 1) for i in range(MOVES)]  # v1..v5, v1..v5, ...: each move changes the champion
    for start in range(0, MOVES, 10):  # ten moves per lock: the lock has tests of its own
        with registry.lock(tracking):
            for i in range(start, start + 10):
                registry.move_champion(tracking, moves[i], "promote", f"move {i + 1}: v{moves[i]} won " + "x" * 80)

    items = registry.history(tracking)
    assert [h["version"] for h in items] == moves
    assert all(len(value) < 5000 for value in c.get_registered_model("hundred").tags.values())

    assert lifecycle.rollback(tracking, "the last one misbehaves") == (moves[-1], moves[-2])
    assert lifecycle.rollback(tracking, "so does the one before") == (moves[-2], moves[-3])
    info = lifecycle.status(tracking)
    assert info["registered"] and info["champion"]["version"] == moves[-3]
    assert len(info["history"]) == registry.HISTORY_KEEP  # the oldest moves were pruned, not the newest
    assert [(h["action"], h["version"]) for h in info["history"][-2:]] == [
        ("rollback", moves[-2]), ("rollback", moves[-3])]

    # and a further registration goes through: a new version, completed, promoted by the gate's record
    version = registry.create_version(tracking, "s3://bucket/hundred/next", {"headstart.winner": "finetune"})
    registry.mark_complete(tracking, version)
    record = tmp_path / "decision.json"
    record.write_text(json.dumps({"version": version, "decision": "promoted", "champion_version": moves[-3],
                                  "summary": "promoted: better"}))
    assert promote.run(record, tracking).promoted
    assert registry.champion(tracking).version == version
    assert registry.history(tracking)[-1]["version"] == version


def _status(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        cli.main(["status", *args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return stop.value.code, out.out + out.err


@pytest.mark.integration
def test_status_says_not_registered_on_a_reachable_server(as_pipeline: AuthServer, capsys, monkeypatch):
    """A model that does not exist on a server that answers is "not registered"."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the project's params.yaml
    monkeypatch.setenv("MLFLOW_TRACKING_URI", as_pipeline.url)
    code, text = _status(capsys)  # params.yaml's registered_model, which nothing registered on this server
    assert code == 0, text
    assert f"headstart-classifier is not registered at {as_pipeline.url}" in " ".join(text.split())
    code, text = _status(capsys, "--json")
    assert code == 0 and json.loads(text)["registered"] is False


@pytest.mark.timeout(90)
def test_status_on_a_closed_port_fails_fast_naming_the_server(capsys, monkeypatch):
    """No server at the URI is an error that names it, quickly (MLflow's own retries
    used to spend minutes first), never "nothing registered"."""
    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(var, raising=False)  # as people run it
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    code, text = _status(capsys)
    assert time.monotonic() - started < 30
    assert code != 0
    flat = " ".join(text.split())
    assert f"cannot reach the MLflow tracking server at {uri}" in flat and "Traceback" not in text
    assert "no champion" not in flat and "not registered" not in flat
