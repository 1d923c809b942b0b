"""MLflow with its artifacts in S3: `mlflow server --artifacts-destination s3://...` on 127.0.0.1 with moto
as the endpoint. The loop (train, evaluate, register, promote) runs against it over HTTP; the clients hold
no S3 credentials at all, since the server proxies every artifact to S3."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from headstart import storage
from headstart.config import load_params
from headstart.registry import model_registry as registry
from headstart.steps import evaluate, register, train
from tests.helpers import params_cfg

from ..conftest import make_imagefolder
from .servers import mlflow_server, moto_server, s3_env

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LENIENT = params_cfg("gate", min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0,
                     max_class_recall_drop=0.99, max_negative_flip_rate=None)
BUCKET = "mlflow-artifacts"


def test_loop_registers_against_mlflow_storing_artifacts_in_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = make_imagefolder(tmp_path / "data")
    with moto_server(tmp_path / "moto") as s3:
        creds = s3_env(s3)
        for key, value in creds.items():
            monkeypatch.setenv(key, value)
        s3_client = storage._client()
        s3_client.create_bucket(Bucket=BUCKET)
        for key in (*creds, "AWS_ENDPOINT_URL", "AWS_PROFILE"):
            monkeypatch.delenv(key, raising=False)  # only the server may talk to S3
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with mlflow_server(tmp_path / "server", extra_env=creds, artifacts=f"s3://{BUCKET}/mlflow") as (uri, _):
            tracking = params_cfg("tracking", tracking_uri=uri, registered_model="s3-classifier")
            candidates = {}
            for role in ("finetune", "scratch"):
                cfg = train.config_from_params(load_params(ROOT / "params.yaml"), role, backbone="small_cnn",
                                               weights="none", channels=1, image_size=32, epochs=1,
                                               images_per_class=None, val_images_per_class=None,
                                               checkpoint_dir=None, tta="none")
                candidates[role] = Path(train.run(cfg, data, tmp_path / role, tracking).model_dir)
            evaluate.run(params_cfg("evaluate", bootstrap_samples=100), data, candidates, tmp_path / "eval",
                         tracking)
            result = register.run(params_cfg("register", serving_check_images=4), LENIENT, data, candidates,
                                  tmp_path / "eval", tmp_path / "decision", tracking)
            assert result.promoted and registry.champion(tracking).version == result.version

            import mlflow

            served = mlflow.pyfunc.load_model(f"models:/{tracking.registered_model}@champion")
            images = sorted((data / "test").rglob("*.png"))[:6]
            labels = served.predict(pd.DataFrame({"image": [p.read_bytes() for p in images]}))["label"].tolist()
            assert len(labels) == 6 and set(labels) <= {"circle", "square", "stripes"}
            assert not (tmp_path / "server" / "artifacts").exists()  # nothing went to the local default

        keys = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
    assert keys and all(k.startswith("mlflow/") for k in keys)
    names = {os.path.basename(k) for k in keys}
    # the registered pyfunc (safetensors weights, no pickle), the decision record, training's artifacts
    assert {"MLmodel", "model.safetensors", "decision.json", "decision.md", "learning_curve.png",
            "history.json"} <= names, sorted(names)
    assert not any(n.endswith((".pkl", ".pickle")) for n in names), sorted(names)
