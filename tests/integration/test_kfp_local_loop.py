"""The whole pipeline under kfp.local as a cluster runs it: the packed dataset fetched by git tag from its DVC
remote on S3 (moto), training and evaluation streaming from the shards, registration in `mlflow server`; and
what the Kubeflow UI would show (the artifacts and the values in each task's executor_output.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import MIN_ACCURACY
from tests.pipeline.conftest import ARGS, TINY, outputs

from .conftest import FAST_BACKBONE, ROOT, STREAM, TAG, PackedRemote, SharedMlflow, fresh_name
from .servers import s3_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]
TASKS = {"resolve-data-rev", "fetch-data", "validate-data", "train-candidate", "train-candidate-2",
         "evaluate-candidates", "register-and-gate", "act-on-decision"}


@pytest.fixture(scope="module")
def kfp_run(packed_remote: PackedRemote, shared_mlflow: SharedMlflow, tmp_path_factory: pytest.TempPathFactory):
    """One run; the environment holds what the pods' secrets give them (S3 keys and endpoint, the tracking
    URI), and the packed project has no DVC cache, as a pod has none."""
    from headstart.kfp.local import run_local

    tmp = tmp_path_factory.mktemp("kfp-loop")
    model = fresh_name("kfp")
    mp = pytest.MonkeyPatch()
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "MLFLOW_REGISTRY_URI"):
        mp.delenv(var, raising=False)
    env = s3_env(packed_remote.endpoint)
    env["AWS_ENDPOINT_URL"] = env.pop("AWS_ENDPOINT_URL_S3")  # the name the pipeline's S3 secret carries
    for key, value in {**env, "MLFLOW_TRACKING_URI": shared_mlflow.url}.items():
        mp.setenv(key, value)
    mp.chdir(tmp)  # relative paths in params.yaml (caches, checkpoints) land in tmp
    try:
        overrides = [f"tracking.experiment={fresh_name('kfp')}", *TINY, *STREAM, FAST_BACKBONE]
        arguments = {**ARGS, "registered_model": model, "data_repo": str(packed_remote.project), "data_rev": TAG,
                     "dvc_remote": packed_remote.remote}
        run = run_local(tmp / "root", params_file=ROOT / "params.yaml", overrides=overrides, arguments=arguments)
        yield run, tmp, model
    finally:
        mp.undo()


def test_fetches_the_tagged_shards_and_promotes_in_mlflow(kfp_run, packed_remote: PackedRemote,
                                                          shared_mlflow: SharedMlflow):
    from mlflow import MlflowClient

    run, _, model = kfp_run
    assert run.decision is not None and run.decision["decision"] == "promoted", run
    champion = MlflowClient(tracking_uri=shared_mlflow.url).get_model_version_by_alias(model, "champion")
    assert str(champion.version) == str(run.decision["version"])
    assert champion.tags["decision"] == "promoted"
    assert champion.tags["data.dvc_md5"] == packed_remote.md5 and champion.tags["git.commit"] == packed_remote.rev

    fetched = Path(outputs(run.run_dir, "fetch-data")["dataset"]["uri"])
    assert json.loads((fetched / "index.json").read_text()) == packed_remote.index
    assert sorted(p.name for p in fetched.rglob("*.tar")) == sorted(
        Path(s["file"]).name for split in packed_remote.index["splits"].values() for s in split["shards"])


def test_every_task_ran_and_the_rejection_branch_did_not(kfp_run):
    run, _, _ = kfp_run
    ran = set(run.artifacts)
    assert ran >= TASKS
    assert "act-on-decision-2" not in ran and "data-rejected" not in ran


def test_checkpoints_went_to_the_run_workspace(kfp_run):
    """Not params.yaml's .headstart/checkpoints nor the task outputs; kfp.local removes the workspace
    after the run, as KFP deletes the run's volume."""
    run, tmp, _ = kfp_run
    assert not (tmp / ".headstart" / "checkpoints").exists()
    assert not list(run.run_dir.rglob("epoch-*.pt"))
    assert not (run.run_dir.parent / "workspace").exists()


def test_ui_artifacts(kfp_run, packed_remote: PackedRemote):
    run, _, model = kfp_run
    d = run.run_dir
    report = outputs(d, "validate-data")
    assert "<html" in Path(report["report"]["uri"]).read_text().lower()
    assert report["summary"]["metadata"]["passed"] == 1.0

    for task in ("train-candidate", "train-candidate-2"):
        out = outputs(d, task)
        assert (Path(out["model"]["uri"]) / "model" / "model.safetensors").is_file(), task
        assert "best_val_accuracy" in out["metrics"]["metadata"]
        assert "data:image/png;base64" in Path(out["learning_curve"]["uri"]).read_text()

    ev = outputs(d, "evaluate-candidates")
    test_images = packed_remote.index["splits"]["test"]["count"]
    for name in ("finetune", "scratch"):
        metrics = ev[f"{name}_metrics"]["metadata"]
        assert metrics["accuracy"] >= MIN_ACCURACY and "recall.circle" in metrics, (name, metrics)
        matrix = ev[f"{name}_confusion"]["metadata"]["confusionMatrix"]
        assert [a["displayName"] for a in matrix["annotationSpecs"]] == ["circle", "square", "stripes"]
        assert sum(sum(row["row"]) for row in matrix["rows"]) == test_images
    assert "mcnemar_p" in ev["comparison"]["metadata"]
    html = Path(ev["report"]["uri"]).read_text()
    assert "<table>" in html and "data:image/png;base64" in html

    record = Path(outputs(d, "register-and-gate")["decision_record"]["uri"]).read_text()
    assert record.splitlines()[0] == f"# `{model}` v{run.decision['version']}: promoted", record[:300]
    assert f"data.dvc md5 `{packed_remote.md5}`" in record
