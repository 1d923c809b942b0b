"""The mappings the components use: run parameters into step configs, step results into UI artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from headstart.config import tracking_from_params
from headstart.errors import ConfigError
from headstart.kfp import kfp_io
from headstart.steps import train

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
RECIPE = PARAMS["train"]
BASE = {  # params.yaml (every knob is set there, nowhere else), with a few changes
    **PARAMS,
    "train": {
        "shared": {**RECIPE["shared"], "epochs": 8, "images_per_class": 100},
        "finetune": {**RECIPE["finetune"], "weights": "imagenet"},
        "scratch": {**RECIPE["scratch"], "weights": "none"},
    },
    "tracking": {**PARAMS["tracking"], "registered_model": "m"},
}


class Recorder:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.confusion: tuple[list[str], list[list[int]]] | None = None
        self.metadata: dict[str, object] = {}

    def log_metric(self, key: str, value: float) -> None:
        self.metrics[key] = value

    def log_confusion_matrix(self, categories: list[str], matrix: list[list[int]]) -> None:
        self.confusion = (categories, matrix)


def test_params_apply_knobs_then_overrides():
    merged = kfp_io.params(
        json.dumps(BASE),
        ["train.shared.epochs=2", "gate.min_accuracy=0.5"],
        {"train.shared.epochs": 5, "tracking.registered_model": "x"},
    )
    assert merged["train"]["shared"]["epochs"] == 2
    assert merged["gate"]["min_accuracy"] == 0.5
    assert merged["tracking"]["registered_model"] == "x"


def test_bad_override_is_a_config_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        kfp_io.params(json.dumps(BASE), ["epochs"])


@pytest.mark.parametrize("role, weights", [("finetune", "imagenet"), ("scratch", "none")])
def test_train_params_set_both_roles_and_keep_scratch_random(role, weights):
    p = kfp_io.train_params(
        json.dumps(BASE),
        [],
        role,
        backbone="small_cnn",
        weights="" if role == "scratch" else "imagenet",
        image_size=32,
        epochs=1,
        images_per_class=0,
        lr_head=0.01,
        lr_backbone=0.02,
        checkpoints="/ws/checkpoints",
    )
    cfg = train.config_from_params(p, role)
    assert (cfg.backbone, cfg.image_size, cfg.epochs, cfg.images_per_class) == ("small_cnn", 32, 1, None)
    assert (cfg.lr_head, cfg.lr_backbone, cfg.checkpoint_dir) == (0.01, 0.02, "/ws/checkpoints")
    assert cfg.weights == weights


def test_checkpoint_dir_prefers_the_workspace():
    assert kfp_io.checkpoint_dir("/kfp-workspace", "/out/train/model") == "/kfp-workspace/checkpoints"
    assert kfp_io.checkpoint_dir("", "/out/train/model") == "/out/train/checkpoints"


def test_validate_params_keep_no_local_state():
    p = kfp_io.validate_params(json.dumps({"validate": {"state_dir": ".x", "cache_dir": ".y"}}), [])
    assert p["validate"]["state_dir"] is None and p["validate"]["cache_dir"] is None


def test_gate_params():
    p = kfp_io.gate_params(
        json.dumps(BASE),
        [],
        min_accuracy=0.9,
        min_gain_over_baseline=0.01,
        max_regression=0.0,
        max_class_recall_drop=0.1,
        registered_model="clf",
    )
    assert p["gate"] == {
        **PARAMS["gate"],
        "min_accuracy": 0.9,
        "min_gain_over_baseline": 0.01,
        "max_regression": 0.0,
        "max_class_recall_drop": 0.1,
    }
    assert tracking_from_params(p).registered_model == "clf"


def test_log_metrics_keeps_numbers_only():
    rec = Recorder()
    kfp_io.log_metrics(rec, {"a": 1, "b": 0.5, "c": "text", "d": None, "e": True})
    assert rec.metrics == {"a": 1.0, "b": 0.5}


def test_model_metrics_flatten_per_class_recall():
    flat = kfp_io.model_metrics({"accuracy": 0.9, "n_test": 10, "per_class": {
        "cat": {"precision": 0.7, "recall": 0.8, "f1": 0.75, "support": 5}}})
    assert flat == {"accuracy": 0.9, "n_test": 10, "recall.cat": 0.8}


def test_validation_metrics():
    flat = kfp_io.validation_metrics(
        {
            "passed": True,
            "n_images": 6,
            "n_failed": 0,
            "n_warned": 1,
            "counts": {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}},
        }
    )
    assert flat == {
        "passed": 1.0,
        "images": 6,
        "failed_checks": 0,
        "warnings": 1,
        "images.test": 2.0,
        "images.train": 4.0,
    }


def test_confusion_matrix_from_predictions(tmp_path):
    np.savez(
        tmp_path / "predictions.npz", y_true=np.array([0, 0, 1, 2]), pred_finetune=np.array([0, 1, 1, 2])
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    rec = Recorder()
    assert kfp_io.log_confusion(rec, tmp_path, "finetune")
    assert rec.confusion == (["a", "b", "c"], [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    assert not kfp_io.log_confusion(Recorder(), tmp_path, "champion")


def test_the_datasets_data_version_becomes_the_tasks_loop_and_without_it_the_default_stays(
        monkeypatch: pytest.MonkeyPatch):
    from headstart import tracking

    monkeypatch.setenv(tracking.LOOP_ENV, "before")  # restored after the test, whatever use_loop sets
    assert kfp_io.use_loop({}) == "" and kfp_io.use_loop({"rev": "c0ffee"}) == ""  # no md5: no data version
    assert tracking.loop_id() == "before"
    assert kfp_io.use_loop({"rev": "c0ffee", "md5": "9a1b.dir", "source": "x"}) == "c0ffee-9a1b.dir"
    assert tracking.loop_id() == "c0ffee-9a1b.dir"
