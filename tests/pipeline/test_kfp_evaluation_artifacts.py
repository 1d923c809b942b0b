"""The evaluate task's Kubeflow UI artifacts: bounded at 1,000 classes, and never empty on a first run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from kfp.dsl import ClassificationMetrics, Metrics

from headstart.kfp import kfp_io


def _eval_dir(root: Path, n_classes: int, champion_version: str | None, per_class: int = 10) -> Path:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), per_class)
    wrong = rng.random(y.size) < 0.3
    pred = np.where(wrong, rng.integers(0, n_classes, y.size), y)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "predictions.npz", y_true=y, pred_finetune=pred)
    classes = [f"n{k:08d}_some_synset_name" for k in range(n_classes)]
    (root / "metrics.json").write_text(json.dumps({"classes": classes, "champion_version": champion_version}))
    return root


def test_at_1000_classes_the_confusion_artifact_carries_only_the_most_confused_classes(tmp_path):
    out = _eval_dir(tmp_path / "e", 1000, None)
    artifact = ClassificationMetrics(name="finetune_confusion")
    assert kfp_io.log_confusion(artifact, out, "finetune")
    sent = len(json.dumps(artifact.metadata))
    assert sent < 100_000, f"{sent} bytes to the metadata store"  # all 1,000 classes: ~11 MB at ImageNet's test set
    assert len(artifact.metadata["confusionMatrix"]["annotationSpecs"]) == 20
    assert "20 most confused of 1000 classes" in artifact.metadata["note"]


def test_at_10_classes_the_confusion_artifact_is_whole(tmp_path):
    out = _eval_dir(tmp_path / "e", 10, None)
    artifact = ClassificationMetrics(name="finetune_confusion")
    assert kfp_io.log_confusion(artifact, out, "finetune")
    assert len(artifact.metadata["confusionMatrix"]["annotationSpecs"]) == 10
    assert "note" not in artifact.metadata


def test_on_a_first_run_the_champion_outputs_say_no_champion_yet(tmp_path):
    out = _eval_dir(tmp_path / "e", 10, None)
    confusion, metrics = ClassificationMetrics(name="champion_confusion"), Metrics(name="champion_metrics")
    assert not kfp_io.log_confusion(confusion, out, "champion")
    assert confusion.metadata == {"note": "no champion yet"}
    kfp_io.log_model_metrics(metrics, {"finetune": {"accuracy": 0.9}}, "champion", None)
    assert metrics.metadata == {"note": "no champion yet"}


def test_a_champion_on_other_classes_is_named_not_taken_for_a_first_run(tmp_path):
    out = _eval_dir(tmp_path / "e", 10, "4")
    confusion = ClassificationMetrics(name="champion_confusion")
    assert not kfp_io.log_confusion(confusion, out, "champion")
    assert confusion.metadata["note"] == "champion v4 was trained on other classes and not scored"
