"""The whole pipeline under kfp.local on a tiny dataset: MLflow registration and the UI artifacts.

kfp.local writes <root>/<run>/<task>/<output> plus each task's executor_output.json, where the
Metrics and ClassificationMetrics values live, so the test reads what the Kubeflow UI would show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from headstart.errors import ValidationFailed
from tests.conftest import make_imagefolder
from tests.pipeline.conftest import ROOT

pytestmark = pytest.mark.slow

TINY = [
    "train.shared.val_images_per_class=null",
    "train.shared.batch_size=16",
    "train.shared.patience=1",
    "train.finetune.probe_epochs=0",
    "evaluate.bootstrap_samples=200",
    "gate.bootstrap_samples=200",
    "register.serving_check_images=6",
    "validate.workers=1",
    "validate.label_set=null",
    "validate.min_images_per_class=1",
]
ARGS = {
    "backbone": "small_cnn",
    "weights": "none",
    "image_size": 32,
    "epochs": 1,
    "images_per_class": 0,
    "min_accuracy": 0.0,
    "min_gain_over_baseline": -1.0,
    "registered_model": "tiny-clf",
}


def outputs(run_dir: Path, task: str) -> dict[str, Any]:
    """The artifacts a task reported (uri, metadata) by output name."""
    data = json.loads((run_dir / task / "executor_output.json").read_text())
    return {name: arts["artifacts"][0] for name, arts in data.get("artifacts", {}).items()}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from headstart.pipeline import run_local

    tmp = tmp_path_factory.mktemp("e2e")
    data = make_imagefolder(tmp / "data")
    (tmp / "data.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  path: data\n")  # the pin fetch reports
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mp.chdir(tmp)  # relative paths in params.yaml (caches, artifact root) land in tmp
    try:
        overrides = [f"data.dir={data}", f"tracking.artifact_root={tmp}/artifacts", *TINY]
        run = run_local(tmp / "root", params_file=ROOT / "params.yaml", overrides=overrides, arguments=ARGS)
        yield run, tmp
    finally:
        mp.undo()


def test_registers_and_promotes_in_mlflow(local_run):
    from mlflow import MlflowClient

    run, tmp = local_run
    assert run.decision is not None and run.decision["decision"] == "promoted", run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    champion = client.get_model_version_by_alias("tiny-clf", "champion")
    assert str(champion.version) == str(run.decision["version"])
    assert champion.tags["decision"] == "promoted"
    assert champion.tags["data.dvc_md5"] == "0123abcd.dir"


def test_checkpoints_went_to_the_run_workspace(local_run):
    """Not params.yaml's .headstart/checkpoints nor the task outputs; kfp.local removes the workspace
    after the run, as KFP deletes the run's volume."""
    run, tmp = local_run
    assert not (tmp / ".headstart" / "checkpoints").exists()
    assert not list(run.run_dir.rglob("epoch-*.pt"))
    assert not (run.run_dir.parent / "workspace").exists()


def test_every_task_ran_and_the_rejection_branch_did_not(local_run):
    run, _ = local_run
    ran = set(run.artifacts)
    assert {
        "resolve-data-rev",
        "fetch-data",
        "validate-data",
        "train-candidate",
        "train-candidate-2",
        "evaluate-candidates",
        "register-and-gate",
        "act-on-decision",
    } <= ran
    assert "act-on-decision-2" not in ran and "data-rejected" not in ran


def test_ui_artifacts(local_run):
    run, _ = local_run
    d = run.run_dir
    report = outputs(d, "validate-data")
    assert "<html" in Path(report["report"]["uri"]).read_text().lower()
    assert report["summary"]["metadata"]["passed"] == 1.0

    for task in ("train-candidate", "train-candidate-2"):
        out = outputs(d, task)
        assert (Path(out["model"]["uri"]) / "model" / "model.safetensors").is_file()
        assert "best_val_accuracy" in out["metrics"]["metadata"]
        assert "data:image/png;base64" in Path(out["learning_curve"]["uri"]).read_text()

    ev = outputs(d, "evaluate-candidates")
    for name in ("finetune", "scratch"):
        metrics = ev[f"{name}_metrics"]["metadata"]
        assert 0.0 <= metrics["accuracy"] <= 1.0 and "recall.circle" in metrics
        matrix = ev[f"{name}_confusion"]["metadata"]["confusionMatrix"]
        assert [a["displayName"] for a in matrix["annotationSpecs"]] == ["circle", "square", "stripes"]
        assert sum(sum(row["row"]) for row in matrix["rows"]) == 18
    assert "mcnemar_p" in ev["comparison"]["metadata"]
    html = Path(ev["report"]["uri"]).read_text()
    assert "<table>" in html and "data:image/png;base64" in html

    record = Path(outputs(d, "register-and-gate")["decision_record"]["uri"]).read_text()
    assert record.strip() and "promot" in record.lower()


def test_invalid_data_stops_before_training(tmp_path, monkeypatch):
    from headstart.pipeline import run_local

    data = make_imagefolder(tmp_path / "data", per_class={"train": 4, "val": 2, "test": 2})
    (data / "train" / "circle" / "broken.png").write_bytes(b"not a png")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationFailed, match="No training was started"):
        run_local(
            tmp_path / "root",
            params_file=ROOT / "params.yaml",
            overrides=[f"data.dir={data}", f"tracking.artifact_root={tmp_path}/a", *TINY],
            arguments=ARGS,
        )
    (run_dir,) = [p for p in (tmp_path / "root").iterdir() if p.name.startswith("headstart-retraining")]
    assert (run_dir / "validate-data").is_dir() and not (run_dir / "train-candidate").exists()
