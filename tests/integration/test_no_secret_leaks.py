"""No secret value ever lands in params, MLflow tags/params/artifacts, logs or the compiled pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import make_imagefolder
from .test_dvc_repro import tiny_params

pytestmark = pytest.mark.slow
# MLFLOW_TRACKING_USERNAME is left out on purpose: MLflow records the run's user as its owner,
# which is an identity, not a secret.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAHSFAKE7Q2W9E4R1T",
    "AWS_SECRET_ACCESS_KEY": "hs-fake-secret-3f9c2b7e-do-not-leak",
    "MLFLOW_TRACKING_PASSWORD": "hs-fake-password-a8e4c1",
    "MLFLOW_TRACKING_TOKEN": "hs-fake-token-77b2d9",
}


def test_loop_and_compiled_pipeline_carry_no_secret_values(tmp_path: Path):
    make_imagefolder(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = {**os.environ, **SECRETS, "HEADSTART_NO_PROGRESS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = [sys.executable, "-m", "headstart.cli"]
    run = subprocess.run([*cli, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    spec = tmp_path / "pipeline.yaml"
    comp = subprocess.run([*cli, "pipeline", "compile", "--out", str(spec), "--params", "params.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert comp.returncode == 0, comp.stderr[-3000:]
    (tmp_path / "logs.txt").write_text(run.stdout + run.stderr + comp.stdout + comp.stderr)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert spec in files and (tmp_path / "mlflow" / "mlflow.db") in files
    assert any(p.name == "MLmodel" for p in files)
    for path in files:
        blob = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in blob, f"{name}'s value leaked into {path.relative_to(tmp_path)}"
