"""`headstart run`, the CLI loop, on an ImageFolder in the project's default form (a SQLite store under
mlflow/): it validates, trains both candidates, evaluates, registers and promotes, and `headstart status`
names the champion; and no secret value lands in params, MLflow tags/params/artifacts, logs or the compiled
pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import assert_loop_outputs

from ..conftest import make_imagefolder
from .conftest import tiny_params

pytestmark = pytest.mark.slow
PIN = "0123456789abcdef0123456789abcdef.dir"
# MLFLOW_TRACKING_USERNAME is left out on purpose: MLflow records the run's user as its owner,
# which is an identity, not a secret.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAHSFAKE7Q2W9E4R1T",
    "AWS_SECRET_ACCESS_KEY": "hs-fake-secret-3f9c2b7e-do-not-leak",
    "MLFLOW_TRACKING_PASSWORD": "hs-fake-password-a8e4c1",
    "MLFLOW_TRACKING_TOKEN": "hs-fake-token-77b2d9",
}


def test_cli_loop_promotes_and_carries_no_secret_values(tmp_path: Path, mlflow_store: str):
    from mlflow import MlflowClient

    make_imagefolder(tmp_path / "data")
    (tmp_path / "data.dvc").write_text(f"outs:\n- md5: {PIN}\n  path: data\n")  # the pin `dvc add` would write
    params = tiny_params()
    assert params["tracking"]["tracking_uri"] == "sqlite:///mlflow/mlflow.db"  # mlflow_store: pre-migrated
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, **SECRETS, "HEADSTART_NO_PROGRESS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = [sys.executable, "-m", "headstart.cli"]

    def headstart(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([*cli, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"headstart {' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
        return out

    run = headstart("run")
    assert "validation passed" in run.stdout + run.stderr
    assert "promoted to champion" in run.stdout + run.stderr
    out = tmp_path / "outputs"
    registration = json.loads((out / "decision/registration.json").read_text())
    assert registration["promoted"] is True
    status = headstart("status", "--json")
    champion = json.loads(status.stdout)["champion"]
    assert champion["version"] == str(registration["version"])
    assert champion["data"] == PIN  # the registered version points at the pinned data

    assert_loop_outputs(out, str(registration["version"]))
    client = MlflowClient(mlflow_store)
    for role in ("finetune", "scratch"):
        metrics = json.loads((out / role / "metrics.json").read_text())
        assert metrics["first_step_seconds"] > 0, role
        assert client.get_run(metrics["run_id"]).data.params["train_images"] == "36", role
        assert (out / role / "model" / "model.safetensors").is_file()

    spec = tmp_path / "pipeline.yaml"
    comp = headstart("pipeline", "compile", "--out", str(spec), "--params", "params.yaml")
    (tmp_path / "logs.txt").write_text(run.stdout + run.stderr + status.stdout + status.stderr + comp.stdout
                                       + comp.stderr)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert spec in files and (tmp_path / "mlflow" / "mlflow.db") in files
    assert any(p.name == "MLmodel" for p in files)
    for path in files:
        blob = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in blob, f"{name}'s value leaked into {path.relative_to(tmp_path)}"
