"""MLflow: the reports are logged as a run named "validate", and the accepted summary is found again."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.config import TrackingConfig
from headstart.steps.validate import run
from tests.data.corpus import corpus_config, make_valid


def test_reports_logged_and_accepted_summary_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking = TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
        experiment="t",
    )
    data = make_valid(tmp_path)
    first = run(corpus_config(tmp_path, state_dir=None), data, tmp_path / "out", tracking)
    assert first.passed and first.mlflow_run_id

    client = mlflow.MlflowClient(tracking.resolved_uri())
    logged = client.get_run(first.mlflow_run_id)
    assert logged.info.run_name == "validate"
    assert logged.data.tags["headstart.validation.accepted"] == "true"
    names = {f.path for f in client.list_artifacts(first.mlflow_run_id, "validation")}
    assert {"validation/report.html", "validation/report.json", "validation/summary.json"} <= names
    assert "validation/data_docs" in names

    # no state folder (a fresh pod): drift is measured against the summary found in MLflow
    for path in sorted((data / "train/circle").iterdir())[:8]:
        path.unlink()
    second = run(corpus_config(tmp_path, state_dir=None), data, tmp_path / "out2", tracking)
    assert second.check("label_drift").status == "fail"
    assert client.get_run(second.mlflow_run_id).data.tags["headstart.validation.accepted"] == "false"
