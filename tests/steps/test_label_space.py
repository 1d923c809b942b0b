"""Every evaluation path checks the label space: a model's labels are indices into its class list, so scoring
it on a dataset with another class list (same count, shifted names) would compare one class's images with
another's predictions. In memory, streaming (either form), or read back from the prediction store: each is
refused with a DataError that names the model and both class lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from headstart.data import shards
from headstart.data.dataset import open_dataset
from headstart.errors import DataError
from headstart.evaluation import predictions, scoring
from headstart.steps import evaluate

from ..conftest import CLASSES, make_imagefolder
from ..helpers import params_cfg, random_model

OTHER = ("square", "stripes", "zigzag")  # as many classes as the model's, shifted by one: every label in range


@pytest.fixture
def mismatched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert OTHER != CLASSES and len(OTHER) == len(CLASSES)
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 2, "val": 2, "test": 3}, classes=OTHER,
                              size=16)
    packed = tmp_path / "shards"
    shards.pack(folder, packed)
    model = random_model(tmp_path / "ft", 1, "finetune")  # classes CLASSES
    monkeypatch.setattr(scoring, "scoring_device", lambda: torch.device("cpu"))
    base = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, prediction_store=None, batch_size=4)
    return tmp_path, folder, packed, model, base


def _refused(cfg: evaluate.EvaluateConfig, data: Path, model: Path, out: Path) -> str:
    with pytest.raises(DataError) as err:
        evaluate.run(cfg, data, {"finetune": model}, out)
    message = str(err.value)
    assert str(list(CLASSES)) in message and str(list(OTHER)) in message, message
    assert str(model) in message, message
    assert not (out / "metrics.json").exists()
    return message


@pytest.mark.parametrize("form", ["imagefolder", "packed"])
def test_streaming_a_split_with_other_classes_is_refused(mismatched, form: str):
    root, folder, packed, model, base = mismatched
    data = folder if form == "imagefolder" else packed
    _refused(base.model_copy(update={"data_loading": "stream", "loader_workers": 0}), data, model, root / "out")


def test_auto_streaming_under_a_tiny_budget_on_other_classes_is_refused(mismatched):
    root, folder, _, model, base = mismatched
    cfg = base.model_copy(update={"loader_workers": 0, "memory_budget_gib": 1e-9})  # auto: every split streams
    _refused(cfg, folder, model, root / "out")


def test_a_prediction_store_hit_on_other_classes_is_refused(mismatched, monkeypatch: pytest.MonkeyPatch):
    root, _, packed, model, base = mismatched
    monkeypatch.delenv(predictions.SECRET_VAR, raising=False)  # a local store: unkeyed checksums
    store = str(root / "store")
    # an entry for exactly this model and split, as an earlier (unchecked) scoring would have kept it
    key = predictions.PredictionKey(model=predictions.model_digest(model),
                                    data=open_dataset(packed).fingerprint("test", CLASSES, None),
                                    tta="none", device=predictions.CPU_FP32)
    n = 3 * len(OTHER)
    assert predictions.save(store, key, np.arange(n) % len(CLASSES), np.ones(n, np.float32)) is not None

    def never(*args, **kwargs):
        raise AssertionError("scored: the store's entry was not used")

    monkeypatch.setattr(scoring, "predict_logits", never)  # only the store hit can answer
    cfg = base.model_copy(update={"prediction_store": store, "data_loading": "memory"})
    _refused(cfg, packed, model, root / "out")


@pytest.mark.parametrize("form", ["imagefolder", "packed"])
def test_in_memory_scoring_on_other_classes_stays_refused(mismatched, form: str):
    root, folder, packed, model, base = mismatched
    data = folder if form == "imagefolder" else packed
    _refused(base.model_copy(update={"data_loading": "memory"}), data, model, root / "out")
