"""MLflow: the reports are logged as a run named "validate", and the accepted summary is found again."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.steps.validate import run
from tests.data.corpus import corpus_config, make_valid
from tests.helpers import params_cfg


def test_reports_logged_and_accepted_summary_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking = params_cfg(
        "tracking",
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
    assert "validation/data_docs" not in names  # ~3.5 MB of GX static files; they stay in the local report folder

    # no state folder (a fresh pod): drift is measured against the summary found in MLflow
    for path in sorted((data / "train/circle").iterdir())[:8]:
        path.unlink()
    second = run(corpus_config(tmp_path, state_dir=None), data, tmp_path / "out2", tracking)
    assert second.check("label_drift").status == "fail"
    assert client.get_run(second.mlflow_run_id).data.tags["headstart.validation.accepted"] == "false"


def test_the_manifest_is_logged_once_per_content_and_each_run_names_where_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-validating the same data logs a digest, not the ~10 MB manifest again; changed data logs the new one.
    Every validate run of one loop hangs under the loop's parent run."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HEADSTART_LOOP_ID", "loop-a")
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                          artifact_root=str(tmp_path / "artifacts"), experiment="t")
    data = make_valid(tmp_path)
    cfg = corpus_config(tmp_path, state_dir=None)
    ids = [run(cfg, data, tmp_path / f"out{i}", tracking).mlflow_run_id for i in range(2)]
    (data / "train/circle" / sorted(p.name for p in (data / "train/circle").iterdir())[0]).unlink()
    ids.append(run(cfg, data, tmp_path / "out2", tracking).mlflow_run_id)
    client = mlflow.MlflowClient(tracking.resolved_uri())

    def files(run_id: str) -> set[str]:
        return {f.path for f in client.list_artifacts(run_id, "validation")}

    assert "validation/manifest.csv" in files(ids[0]) and "validation/manifest.csv" not in files(ids[1])
    assert "validation/manifest.csv" in files(ids[2])  # the data changed
    held = [client.get_run(i).data.tags["headstart.validation.manifest_run"] for i in ids]
    assert held == [ids[0], ids[0], ids[2]]
    record = mlflow.artifacts.load_dict(f"runs:/{ids[1]}/validation/manifest.json")
    assert record["manifest"] == f"runs:/{ids[0]}/validation/manifest.csv"
    assert record["sha256"] == client.get_run(ids[0]).data.tags["headstart.validation.manifest_sha256"]
    parents = {client.get_run(i).data.tags.get("mlflow.parentRunId") for i in ids}
    assert len(parents) == 1 and None not in parents
    assert client.get_run(parents.pop()).data.tags["headstart.loop_id"] == "loop-a"
