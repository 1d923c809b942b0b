"""The CLI as people meet it: --help everywhere, and user mistakes as one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEADSTART = [sys.executable, "-m", "headstart.cli"]
COMMANDS = ["validate", "train", "evaluate", "register", "summary", "run", "promote", "rollback", "status",
            "data import-fashion-mnist"]


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in `cwd` with its params.yaml store: mlflow.set_tracking_uri in an earlier test of this
    session writes MLFLOW_TRACKING_URI into os.environ, which would point the child at that test's store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(HEADSTART + args, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_top_level_help_lists_every_command():
    out = _run(["--help"])
    assert out.returncode == 0
    for cmd in ("validate", "train", "evaluate", "register", "promote", "rollback", "status", "data"):
        assert cmd in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_explains_itself(command: str):
    out = _run([*command.split(), "--help"])
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout and len(out.stdout.splitlines()) > 5


def _project(tmp_path: Path) -> Path:
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    return tmp_path


def test_missing_dataset_is_a_clear_error(tmp_path: Path):
    out = _run(["train", "finetune", "--data", "nope"], cwd=_project(tmp_path))
    assert out.returncode == 2
    assert "nope/train" in out.stderr and "Traceback" not in out.stderr + out.stdout


def test_bad_override_names_the_parameter(tmp_path: Path):
    out = _run(["train", "scratch", "--set", "train.shared.epochs=many"], cwd=_project(tmp_path))
    assert out.returncode == 2
    assert "train.shared.epochs" in out.stderr and "Traceback" not in out.stderr  # where the user wrote it


def test_unknown_role_and_missing_params_file(tmp_path: Path):
    out = _run(["train", "pretrain"], cwd=_project(tmp_path))
    assert out.returncode == 2 and "choose finetune or scratch" in out.stderr
    out = _run(["status", "--params", "missing.yaml"], cwd=tmp_path)
    assert out.returncode == 2 and "missing.yaml: params file not found" in out.stderr


def test_promote_requires_a_reason(tmp_path: Path):
    out = _run(["promote", "--version", "1", "--reason", " "], cwd=_project(tmp_path))
    assert out.returncode == 2 and "--reason is required" in out.stderr


def test_status_on_an_empty_store(tmp_path: Path):
    """An existing store with nothing registered (a missing one is an error: tests/unit/test_cli_user_errors.py)."""
    from mlflow import MlflowClient

    (tmp_path / "mlflow").mkdir()
    MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db").search_experiments()  # params.yaml's store, migrated
    out = _run(["status", "--json"], cwd=_project(tmp_path))
    assert out.returncode == 0, out.stderr
    assert '"champion": null' in out.stdout
