"""Registration on a packed dataset: the serving check's test images live only inside the shards,
so register streams their bytes out of them instead of opening data_dir/test/<class>/<file>."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from headstart.data import shards
from headstart.evaluation import scoring
from headstart.serving import verify
from headstart.steps import evaluate, register

from ..conftest import make_imagefolder
from ..helpers import params_cfg, random_model

LENIENT = params_cfg("gate", min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0,
                     max_class_recall_drop=0.99, max_negative_flip_rate=None)


def test_register_on_a_packed_root_serving_checks_images_read_from_the_shards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 2, "val": 2, "test": 4}, size=16)
    root = tmp_path / "shards"
    shards.pack(folder, root, target_shard_bytes=2048)  # several test shards
    monkeypatch.setattr(scoring, "scoring_device", lambda: torch.device("cpu"))
    cands = {"finetune": random_model(tmp_path / "ft", 1, "finetune"),
             "scratch": random_model(tmp_path / "sc", 2, "scratch")}
    tracking = params_cfg("tracking",
                          tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                          registered_model="packed-classifier")
    evaluate.run(params_cfg("evaluate", bootstrap_samples=50, tensor_cache_dir=None), root, cands,
                 tmp_path / "eval", tracking)
    result = register.run(params_cfg("register", serving_check_images=6), LENIENT, root, cands, tmp_path / "eval",
                          tmp_path / "decision", tracking)
    record = json.loads((tmp_path / "decision" / "decision.json").read_text())
    serving = next(c for c in record["checks"] if c["name"] == "serving_check")
    assert serving["passed"], serving
    assert result.version == "1" and result.promoted


def test_serving_images_of_a_packed_root_are_the_imagefolder_bytes(tmp_path: Path):
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 1, "test": 3}, size=16)
    root = tmp_path / "shards"
    shards.pack(folder, root, target_shard_bytes=1024)
    names = sorted(str(p.relative_to(folder)) for p in (folder / "test").rglob("*.png"))[::2]
    got = verify.serving_images(root, names, tmp_path / "staged")
    assert [p.read_bytes() for p in got] == [(folder / n).read_bytes() for n in names]
    assert verify.serving_images(folder, names, tmp_path / "unused") == [folder / n for n in names]
