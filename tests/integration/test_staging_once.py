"""Multi-node staging on S3 (moto): a run stages its dataset once for both candidates and leaves nothing
under staging_uri once it is over; a candidate task staging its own copy deletes it (and its outputs) too.
The PyTorchJob is replaced by a stand-in that checks the staged data is there and uploads the outputs, as
rank 0 would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from headstart import storage
from headstart.cluster import bundle, pytorchjob
from headstart.config import load_params
from headstart.data import shards
from headstart.kfp import bodies

from ..conftest import make_imagefolder
from .conftest import fresh_bucket

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Art:
    def __init__(self, path: Path, uri: str = "") -> None:
        self.path, self.uri, self.metadata, self.logged = str(path), uri or str(path), {}, {}

    def log_metric(self, key: str, value: float) -> None:
        self.logged[key] = value


def _keys(bucket: str) -> list[str]:
    pages = storage._client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[pytorchjob.JobRequest]:
    """Stand-ins for the Kubernetes side; records each job's request and counts the dataset uploads."""
    launched: list[pytorchjob.JobRequest] = []

    def launch(req: pytorchjob.JobRequest, settings: Any, api: Any, timeout_s: float, **kw: Any) -> str:
        fetched = Path(tmp_path / "pod" / req.name)
        (bundle.get_folder if req.sharded else bundle.get)(req.data_uri(), fetched)  # what the pods run
        assert (fetched / "index.json").is_file() or (fetched / "train").is_dir()
        out = tmp_path / "out" / req.name
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"val_accuracy": 0.5, "run_id": "r1"}))
        bundle.put(out, req.outputs_uri())
        launched.append(req)
        return "PyTorchJob succeeded"

    monkeypatch.setattr(pytorchjob, "launch", launch)
    monkeypatch.setattr(pytorchjob, "api_client", lambda: None)
    monkeypatch.setattr(pytorchjob, "owner_reference", lambda env, ns, api: None)
    return launched


def _train(role: str, dataset: Art, staging: str, tmp_path: Path, **kw: Any) -> Art:
    model = Art(tmp_path / f"model-{role}")
    bodies.train_distributed(
        role=role, dataset=dataset, params_json=json.dumps(load_params(ROOT / "params.yaml")), overrides=[],
        backbone="small_cnn", weights="", image_size=32, epochs=1, images_per_class=0, lr_head=0.01,
        lr_backbone=0.01, nodes=2, gpus_per_node=1, staging_uri=staging, job_image="img", namespace="ns",
        timeout_s=5, model=model, metrics=Art(tmp_path / f"metrics-{role}"),
        learning_curve=Art(tmp_path / f"curve-{role}"), **kw)
    return model


def _uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    for name in ("put", "put_folder"):
        original = getattr(bundle, name)
        monkeypatch.setattr(bundle, name, lambda folder, uri, _o=original: (sent.append(uri), _o(folder, uri))[1])
    return sent


@pytest.mark.parametrize("packed", [True, False])
def test_a_run_stages_its_dataset_once_and_leaves_nothing_behind(moto: str, tmp_path: Path, monkeypatch, jobs,
                                                                 packed: bool):
    bucket = fresh_bucket(moto, monkeypatch, "stage")
    data = make_imagefolder(tmp_path / "data", per_class={"train": 3, "val": 1, "test": 1}, size=16)
    if packed:
        shards.pack(data, tmp_path / "packed")
        data = tmp_path / "packed"
    dataset, staging = Art(data, uri=f"minio://mlpipeline/v2/artifacts/run-1/fetch/{tmp_path.name}"), \
        f"s3://{bucket}/staging"
    sent = _uploads(monkeypatch)
    staged = bodies.stage_data(dataset=dataset, staging_uri=staging)
    assert bodies.stage_data(dataset=dataset, staging_uri=staging) == staged  # found there: sent once
    for role in ("finetune", "scratch"):
        model = _train(role, dataset, staging, tmp_path, staged_data=staged)
        assert json.loads((Path(model.path) / "metrics.json").read_text())["run_id"] == "r1"
    data_uploads = [u for u in sent if not u.endswith("outputs.tar.gz")]
    assert data_uploads == [staged] and staged.endswith("/data/" if packed else "/data.tar.gz")
    assert [j.data_uri() for j in jobs] == [staged, staged] and all(j.sharded == packed for j in jobs)
    assert _keys(bucket) and all(k.startswith("staging/data-") for k in _keys(bucket))  # outputs gone already
    bodies.unstage_data(staged_data=staged)
    assert _keys(bucket) == []
    bodies.unstage_data(staged_data="")  # stage_data failed: nothing to do, and never the working directory


def test_a_candidate_that_stages_its_own_copy_deletes_it_and_its_outputs(moto: str, tmp_path: Path, monkeypatch,
                                                                        jobs):
    bucket = fresh_bucket(moto, monkeypatch, "own")
    data = make_imagefolder(tmp_path / "data", per_class={"train": 3, "val": 1, "test": 1}, size=16)
    _train("finetune", Art(data), f"s3://{bucket}/staging", tmp_path)
    assert len(jobs) == 1 and jobs[0].data_uri() == f"{jobs[0].staging_uri}/data.tar.gz"
    assert _keys(bucket) == []  # neither data.tar.gz nor outputs.tar.gz outlive the task
