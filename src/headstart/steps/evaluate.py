"""Evaluate both candidates, and the current champion when there is one, on the same test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from headstart.config import Frozen, TrackingConfig, from_section
from headstart.errors import DataError
from headstart.evaluation import eval_folder, model_metrics
from headstart.evaluation.eval_folder import EvaluateResult
from headstart.evaluation.scoring import Scored, predict_folder
from headstart.models import modelio

__all__ = ["EvaluateConfig", "EvaluateResult", "Scored", "config_from_params", "predict_folder", "run"]


class EvaluateConfig(Frozen):
    """The `evaluate` section of params.yaml, which holds each knob's one default (none here)."""

    ci_level: float = Field(gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(ge=1)
    seed: int
    batch_size: int = Field(ge=1)
    tensor_cache_dir: str | None  # decoded test split, reused across runs
    tensor_cache_budget_gib: float = Field(gt=0)  # that folder's size; past it the least recently used go
    prediction_store: str | None  # folder or s3:// URI; None: score every time
    data_loading: Literal["auto", "memory", "stream"]  # auto: stream a split past memory_budget_gib decoded
    loader_workers: int | None = Field(ge=0)  # streaming readers; None: one per CPU the pod may use less one, max 8
    memory_budget_gib: float = Field(gt=0)  # auto streams a test split whose decoded size passes this


def config_from_params(params: dict[str, Any], **changes: Any) -> EvaluateConfig:
    """The `evaluate` section; `changes`, for tests and benchmarks, apply last."""
    return from_section(EvaluateConfig, params, "evaluate", **changes)


def run(
    cfg: EvaluateConfig,
    data_dir: Path,
    candidates: dict[str, Path],
    out_dir: Path,
    tracking: TrackingConfig | None = None,
) -> EvaluateResult:
    """Write predictions.npz, metrics.json, confusion PNGs, example thumbnails, the candidates' training
    histories and report.html to `out_dir` (headstart.evaluation.eval_folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprints: dict[tuple[str, ...], str] = {}
    scored: dict[str, Scored] = {}
    tta: dict[str, str] = {}
    y_true: np.ndarray | None = None
    paths: list[str] = []
    classes: list[str] = []
    for name, folder in candidates.items():
        s = predict_folder(folder, data_dir, cfg.batch_size, cfg=cfg, fingerprints=fingerprints)
        card = modelio.load_card(folder)
        classes_ = list(card.classes)
        if y_true is not None and (s.paths != paths or classes_ != classes):
            raise DataError(f"{folder}: model was trained on other classes than {classes}; cannot compare")
        y_true, paths, classes, scored[name], tta[name] = s.y_true, s.paths, classes_, s, card.tta
    assert y_true is not None
    champion_version, champion_classes = None, None
    if tracking is not None:  # the champion is always scored: register's gate compares against it
        from headstart.registry import model_registry as registry

        found = registry.champion_model_dir(tracking, out_dir / "champion_model")
        if found is not None:
            champ_dir, champion_version = found
            champ_card = modelio.load_card(champ_dir)
            champion_classes = list(champ_card.classes)  # recorded either way: the gate names a change
            if champion_classes == classes:
                scored["champion"] = predict_folder(champ_dir, data_dir, cfg.batch_size, cfg=cfg,
                                                    fingerprints=fingerprints)
                tta["champion"] = champ_card.tta
    preds = {name: s.y_pred for name, s in scored.items()}
    models = {name: {**model_metrics.summarise(y_true, s.y_pred, s.conf, classes), "tta": tta[name],
                     **model_metrics.provenance(s)} for name, s in scored.items()}
    files = eval_folder.write_predictions(out_dir, data_dir, y_true, paths, classes, preds,
                                          {k: s.conf for k, s in scored.items()}, tuple(candidates))
    comparison = model_metrics.paired_comparison(preds, y_true, cfg.ci_level, cfg.bootstrap_samples, cfg.seed)
    eval_folder.copy_histories(candidates, out_dir)
    result = EvaluateResult(models=models, comparison=comparison, champion_version=champion_version,
                            classes=classes, files=files, champion_classes=champion_classes)
    eval_folder.write_metrics(out_dir, result, cfg.prediction_store)
    if tracking is not None:
        eval_folder.log(tracking, result, out_dir)
    return result
