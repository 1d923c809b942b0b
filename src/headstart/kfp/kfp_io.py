"""What the KFP components call besides the steps: parameters in, UI artifacts out.

Components stay wiring only; the small mappings between KFP's simple-typed inputs, the step
configs and the Kubeflow UI's artifact types (Metrics, ClassificationMetrics, HTML) live here,
where they are tested. Nothing here imports kfp: artifacts are duck-typed.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from headstart.config import apply_override, check_params
from headstart.tracking import LOOP_ENV


class ArtifactLike(Protocol):
    """A KFP artifact as a component body sees it: where its file is, its URI, its metadata."""

    path: str
    uri: str
    metadata: dict[str, Any]


class MetricsLike(Protocol):
    metadata: dict[str, Any]

    def log_metric(self, metric: str, value: float) -> None: ...


class ConfusionLike(Protocol):
    metadata: dict[str, Any]

    def log_confusion_matrix(self, categories: list[str], matrix: list[list[int]]) -> None: ...


CONFUSION_FULL_MAX = 50  # classes; past it a ClassificationMetrics artifact carries only the most confused
CONFUSION_TOP = 20  # ... this many classes (at 1,000 the full matrix is ~11 MB, past gRPC's 4 MB default)
NO_CHAMPION = "no champion yet"


def _set(params: dict[str, Any], dotted: str, value: Any) -> None:
    node = params
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def params(
    params_json: str, overrides: list[str] | None = None, knobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """params.yaml as compiled in, then the run's parameters (`knobs`), then `key=value` overrides, checked:
    a typo in `overrides` fails the first task (validate), before the training pods start."""
    merged: dict[str, Any] = json.loads(params_json)
    for key, value in (knobs or {}).items():
        _set(merged, key, value)
    for item in overrides or []:
        apply_override(merged, str(item))
    check_params(merged, [str(o) for o in overrides or []], "the pipeline's compiled params.yaml",
                 set_label="the run's overrides parameter")
    return merged


def checkpoint_dir(root: str, model_path: str) -> str:
    """The run's workspace when there is one (it outlives a retried pod), else beside the task's output."""
    return str(Path(root) / "checkpoints") if root else str(Path(model_path).parent / "checkpoints")


def validate_params(params_json: str, overrides: list[str]) -> dict[str, Any]:
    """No local cache or state folder: a pod's disk is gone after the task; the last accepted dataset
    summary (the drift baseline) is read from MLflow instead, where every passing validation logs it."""
    knobs = {"validate.cache_dir": None, "validate.state_dir": None}
    return params(params_json, overrides, knobs)


def train_params(
    params_json: str, overrides: list[str], role: str, *, backbone: str, weights: str, image_size: int, epochs: int,
    images_per_class: int, lr_head: float, lr_backbone: float, checkpoints: str,
) -> dict[str, Any]:
    """One candidate's settings: the run's knobs go to train.<role>; `weights` "" keeps params.yaml's."""
    knobs: dict[str, Any] = {
        "backbone": backbone,
        "image_size": image_size,
        "epochs": epochs,
        "images_per_class": images_per_class if images_per_class > 0 else None,
        "lr_head": lr_head,
        "lr_backbone": lr_backbone,
        "checkpoint_dir": checkpoints,
    }
    if weights:
        knobs["weights"] = weights
    return params(params_json, overrides, {f"train.{role}.{k}": v for k, v in knobs.items()})


def gate_params(
    params_json: str, overrides: list[str], *, min_accuracy: float, min_gain_over_baseline: float,
    max_regression: float, max_class_recall_drop: float, registered_model: str,
) -> dict[str, Any]:
    knobs = {
        "gate.min_accuracy": min_accuracy,
        "gate.min_gain_over_baseline": min_gain_over_baseline,
        "gate.max_regression": max_regression,
        "gate.max_class_recall_drop": max_class_recall_drop,
        "tracking.registered_model": registered_model,
    }
    return params(params_json, overrides, knobs)


def use_loop(dataset_metadata: dict[str, Any]) -> str:
    """Group this task's MLflow runs under its loop's parent run: HEADSTART_LOOP_ID (headstart.tracking's
    parent-run key) becomes the data version the fetch task resolved, `<rev>-<data md5>` from the Dataset's
    metadata, the key `dvc repro` uses too (git commit, data.dvc md5). A pod has no checkout, so without it
    every run of an image would share one parent. Not the pipeline run's id: as an input it would enter the
    cache key of validate and the trainings, and a weekly run on unchanged data would retrain. Returns the
    id set; "" (the default left) when the metadata lacks the version."""
    rev, md5 = str(dataset_metadata.get("rev") or ""), str(dataset_metadata.get("md5") or "")
    if not (rev and md5):
        return ""
    os.environ[LOOP_ENV] = f"{rev}-{md5}"
    return os.environ[LOOP_ENV]


def log_metrics(artifact: MetricsLike, values: dict[str, Any]) -> None:
    """Numbers only (the UI's scalar metrics table); None and text are left out."""
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            artifact.log_metric(key, float(value))


def model_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """evaluate's per-model summary, flattened: accuracy, macro_f1, ece, n_test, recall.<class>."""
    flat = {k: v for k, v in summary.items() if k != "per_class"}
    flat.update({f"recall.{cls}": m["recall"] for cls, m in summary.get("per_class", {}).items()})
    return flat


def log_model_metrics(artifact: MetricsLike, models: dict[str, Any], name: str,
                      champion_version: str | None = None) -> None:
    """One model's metrics; for a model that was not scored, a note saying why instead of an empty artifact
    (a Metrics artifact holds numbers for the UI's table, so the text goes in its metadata)."""
    if name in models:
        log_metrics(artifact, model_metrics(models[name]))
    elif name == "champion" and champion_version:
        artifact.metadata["note"] = f"champion v{champion_version} was trained on other classes and not scored"
    else:
        artifact.metadata["note"] = NO_CHAMPION if name == "champion" else f"{name} was not evaluated"


def confused_classes(matrix: np.ndarray, k: int = CONFUSION_TOP) -> np.ndarray:
    """The `k` classes with the most off-diagonal mass (errors as the true class plus as the prediction), in
    class order: the part of a large matrix worth showing."""
    off = matrix.astype(np.int64, copy=True)
    np.fill_diagonal(off, 0)
    mass = off.sum(axis=0) + off.sum(axis=1)
    return np.sort(np.argsort(-mass, kind="stable")[:k])


def validation_metrics(report: dict[str, Any]) -> dict[str, float]:
    """validate's report.json body, reduced to the numbers the UI can table: verdict and counts."""
    flat: dict[str, float] = {
        "passed": float(bool(report.get("passed"))),
        "images": report.get("n_images", 0),
        "failed_checks": report.get("n_failed", 0),
        "warnings": report.get("n_warned", 0),
    }
    for split, classes in sorted(report.get("counts", {}).items()):
        flat[f"images.{split}"] = float(sum(classes.values()))
    return flat


def log_confusion(artifact: ConfusionLike, eval_dir: Path, name: str) -> bool:
    """Recompute `name`'s confusion matrix from predictions.npz; False, with a note, when that model was not
    evaluated. Past CONFUSION_FULL_MAX classes only the CONFUSION_TOP most confused classes go to the metadata
    store (the metadata says so); the full matrix stays in the evaluation's confusion_<name>.npz."""
    from headstart.evaluation.stats import confusion

    data = np.load(eval_dir / "predictions.npz")
    meta = json.loads((eval_dir / "metrics.json").read_text())
    if f"pred_{name}" not in data:
        log_model_metrics(artifact, {}, name, meta.get("champion_version"))
        return False
    classes = list(meta["classes"])
    matrix = confusion(data["y_true"], data[f"pred_{name}"], len(classes))
    if len(classes) > CONFUSION_FULL_MAX:
        keep = confused_classes(matrix)
        artifact.metadata["note"] = (
            f"the {len(keep)} most confused of {len(classes)} classes (by errors as true or predicted class); "
            f"the full matrix: confusion_{name}.npz in the evaluation artifact")
        matrix, classes = matrix[np.ix_(keep, keep)], [classes[i] for i in keep]
    artifact.log_confusion_matrix(classes, matrix.astype(int).tolist())
    return True


def _img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )


def page(title: str, body: str) -> str:
    """A self-contained HTML page: the Kubeflow UI shows it in a sandboxed iframe, so nothing external."""
    style = (
        "body{font-family:system-ui,sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child"
        "{text-align:left}img{max-width:100%}figure{display:inline-block;margin:.5em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )


def write_png_html(out: str, png: Path, title: str) -> None:
    body = f"<h1>{html.escape(title)}</h1>" + (_img(png, title) if png.is_file() else "<p>no plot</p>")
    Path(out).write_text(page(title, body))


def copy_text(out: str, source: Path) -> None:
    Path(out).write_text(source.read_text())
