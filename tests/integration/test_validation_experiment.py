"""Validate creates the experiment through `tracking.configure`, so against a tracking
server its artifacts go to the server's store, not to a file:// path inside the pod that ran first."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from headstart.steps.validate import run
from headstart.validation.tracking import load_accepted_from_mlflow
from tests.data.corpus import corpus_config, make_valid
from tests.helpers import params_cfg

from .servers import mlflow_server

SRC = Path(__file__).resolve().parents[2] / "src" / "headstart"


@pytest.mark.integration
def test_validate_creates_the_experiment_in_the_servers_artifact_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    served = tmp_path / "served"
    pod = tmp_path / "pod"
    pod.mkdir()
    monkeypatch.chdir(pod)  # a relative artifact_root would resolve here, inside "the pod"
    with mlflow_server(tmp_path / "server", artifacts=served.as_uri()) as (url, _):
        tracking = params_cfg("tracking",
                              tracking_uri=url, artifact_root="mlflow/artifacts", experiment="validate-first")
        result = run(corpus_config(tmp_path, state_dir=None), make_valid(tmp_path), tmp_path / "out", tracking)
        assert result.passed and result.mlflow_run_id

        experiment = mlflow.MlflowClient(url).get_experiment_by_name("validate-first")
        assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
        assert not (pod / "mlflow").exists()
        assert list(served.rglob("summary.json")), "the report did not reach the server's artifact store"
        # a later step (another pod) reads the accepted summary back through the server
        assert load_accepted_from_mlflow(tracking)["fingerprint"] == result.fingerprint


def test_one_place_creates_mlflow_experiments() -> None:
    callers = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "mlflow" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "create_experiment":
                callers.append(str(path.relative_to(SRC)))
    assert callers == ["tracking.py"]
