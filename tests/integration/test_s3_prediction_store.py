"""The prediction store at an s3:// URI on a real moto server: a second evaluate reuses the entries written
there, a corrupt object is ignored and replaced, an object planted by another writer of the
bucket is not used, and without the pipeline's MLflow secret the shared store is not used at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from headstart import storage
from headstart.evaluation import predictions, scoring
from headstart.steps import evaluate

from ..conftest import make_imagefolder
from ..helpers import params_cfg, random_model
from .conftest import fresh_bucket

pytestmark = pytest.mark.integration


def test_predictions_kept_in_s3_are_reused_and_a_corrupt_object_is_rescored(moto: str, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    bucket = fresh_bucket(moto, monkeypatch, "preds")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "the pipeline's secret")
    store = f"s3://{bucket}/cache/predictions"
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 2, "test": 3}, size=16)
    cands = {"finetune": random_model(tmp_path / "ft", 1, "finetune"),
             "scratch": random_model(tmp_path / "sc", 2, "scratch")}
    cfg = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, prediction_store=store)
    scored: list[int] = []
    real = scoring.predict_logits

    def spy(model, preset, x, *args, **kwargs):
        scored.append(len(x))
        return real(model, preset, x, *args, **kwargs)

    monkeypatch.setattr(scoring, "predict_logits", spy)

    def how(out: Path) -> set[str]:
        return {m["predictions"] for m in json.loads((out / "metrics.json").read_text())["models"].values()}

    evaluate.run(cfg, data, cands, tmp_path / "e1")
    names = storage.list_names(store)
    assert scored == [9, 9] and len(names) == 2 and all(n.endswith(".npz") for n in names)
    scored.clear()
    evaluate.run(cfg, data, cands, tmp_path / "e2")
    assert scored == [] and how(tmp_path / "e2") == {"reused from the store"}
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 64)
    storage.upload(junk, storage.join(store, names[0]))
    evaluate.run(cfg, data, cands, tmp_path / "e3")
    assert scored == [9] and how(tmp_path / "e3") == {"reused from the store", "scored"}


def test_an_object_planted_in_a_shared_s3_store_is_not_used(moto: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    """Another writer of the bucket plants the champion's entry with the right key and winning labels."""
    bucket = fresh_bucket(moto, monkeypatch, "planted")
    store = f"s3://{bucket}/cache/predictions"
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 2, "test": 3}, size=16)
    cands = {"finetune": random_model(tmp_path / "ft", 1, "finetune"),
             "scratch": random_model(tmp_path / "sc", 2, "scratch")}
    cfg = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, prediction_store=store)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "the pipeline's secret")
    first = evaluate.run(cfg, data, cands, tmp_path / "e1")
    key = predictions.PredictionKey(**first.models["finetune"]["prediction_key"])
    local = tmp_path / "entry.npz"
    local.write_bytes(storage.read_bytes(predictions.entry_uri(store, key))[0])
    with np.load(local) as stored:
        planted = dict(stored)
    truth = np.load(tmp_path / "e1" / "predictions.npz")["y_true"]
    planted["labels"] = truth.astype(np.int32)
    np.savez(local, **planted)
    storage.upload(local, predictions.entry_uri(store, key))
    second = evaluate.run(cfg, data, cands, tmp_path / "e2")
    assert second.models["finetune"]["predictions"] == "scored"
    assert second.models["finetune"]["accuracy"] == first.models["finetune"]["accuracy"] < 1.0

    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")  # no secret: a shared store is neither read nor written
    unsigned = evaluate.run(cfg, data, cands, tmp_path / "e3")
    assert {m["predictions"] for m in unsigned.models.values()} == {"scored"} and len(storage.list_names(store)) == 2
