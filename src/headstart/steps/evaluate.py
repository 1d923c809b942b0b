"""Evaluate both candidates, and the current champion when there is one, on the same test split."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from headstart import examples, modelio, plots, report, stats
from headstart.config import Frozen, TrackingConfig, from_section
from headstart.errors import DataError
from headstart.scoring import Scored, predict_folder


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


@dataclass
class EvaluateResult:
    models: dict[str, dict[str, Any]]
    comparison: dict[str, Any]
    champion_version: str | None
    classes: list[str]
    files: dict[str, str] = field(default_factory=dict)
    champion_classes: list[str] | None = None  # differs from `classes` when the champion was not scored


def provenance(s: Scored) -> dict[str, Any]:
    """Where a model's predictions came from, for metrics.json, the report and the serving check."""
    return {"predictions": "reused from the store" if s.reused else "scored", "predicted_on": s.device,
            "scoring_seconds": round(s.seconds, 3), "prediction_key": s.key.to_dict() if s.key else None}


def summarise(y_true: np.ndarray, y_pred: np.ndarray, conf: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE (15 bins) and, per class, precision, recall, F1 and support."""
    n = len(classes)
    prf = stats.per_class_prf(y_true, y_pred, n)
    per_class = {c: {k: (int(v[i]) if k == "support" else float(v[i])) for k, v in prf.items()}
                 for i, c in enumerate(classes)}
    return {
        "accuracy": stats.accuracy(y_true, y_pred),
        "macro_f1": stats.macro_f1(y_true, y_pred, n),
        "ece": stats.expected_calibration_error(conf, y_pred == y_true),
        "per_class": per_class,
        "n_test": int(len(y_true)),
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def run(
    cfg: EvaluateConfig,
    data_dir: Path,
    candidates: dict[str, Path],
    out_dir: Path,
    tracking: TrackingConfig | None = None,
) -> EvaluateResult:
    """Write predictions.npz, metrics.json, confusion PNGs, example thumbnails, the candidates' training
    histories and report.html to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None
    fingerprints: dict[tuple[str, ...], str] = {}
    scored: dict[str, Scored] = {}
    tta: dict[str, str] = {}
    y_true: np.ndarray | None = None
    paths: list[str] = []
    classes: list[str] = []
    for name, folder in candidates.items():
        s = predict_folder(folder, data_dir, cfg.batch_size, cache, cfg, fingerprints)
        card = modelio.load_card(folder)
        classes_ = list(card.classes)
        if y_true is not None and (s.paths != paths or classes_ != classes):
            raise DataError(f"{folder}: model was trained on other classes than {classes}; cannot compare")
        y_true, paths, classes, scored[name], tta[name] = s.y_true, s.paths, classes_, s, card.tta
    assert y_true is not None
    champion_version, champion_classes = None, None
    if tracking is not None:  # the champion is always scored: register's gate compares against it
        from headstart import registry

        found = registry.champion_model_dir(tracking, out_dir / "champion_model")
        if found is not None:
            champ_dir, champion_version = found
            champ_card = modelio.load_card(champ_dir)
            champion_classes = list(champ_card.classes)  # recorded either way: the gate names a change
            if champion_classes == classes:
                scored["champion"] = predict_folder(champ_dir, data_dir, cfg.batch_size, cache, cfg, fingerprints)
                tta["champion"] = champ_card.tta
    preds = {name: s.y_pred for name, s in scored.items()}
    models = {name: {**summarise(y_true, s.y_pred, s.conf, classes), "tta": tta[name], **provenance(s)}
              for name, s in scored.items()}
    files: dict[str, str] = {}
    for name, p in preds.items():
        png = plots.confusion_matrix_png(confusion(y_true, p, len(classes)), classes,
                                         out_dir / f"confusion_{name}.png", f"{name}: confusion matrix")
        files[f"confusion_{name}"] = str(png)
    comparison = paired_comparison(preds, y_true, cfg)
    np.savez_compressed(out_dir / "predictions.npz", y_true=y_true, paths=np.array(paths),
                        **{f"pred_{k}": v for k, v in preds.items()},
                        **{f"conf_{k}": s.conf for k, s in scored.items()})
    chosen = examples.choose(y_true, preds, {k: s.conf for k, s in scored.items()}, tuple(candidates))
    examples.write(data_dir, paths, chosen, out_dir / "examples")
    for name, folder in candidates.items():  # the learning curves: train writes history.json beside model/
        if (folder.parent / "history.json").is_file():
            shutil.copyfile(folder.parent / "history.json", out_dir / f"history_{name}.json")
    result = EvaluateResult(models=models, comparison=comparison, champion_version=champion_version,
                            classes=classes, files=files, champion_classes=champion_classes)
    payload = {"models": models, "comparison": comparison, "champion_version": champion_version,
               "classes": classes, "champion_classes": champion_classes, "prediction_store": cfg.prediction_store}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    report.write(out_dir, out_dir / "report.html")
    if tracking is not None:
        _log(tracking, result, out_dir)
    return result


def _log(tracking: TrackingConfig, result: EvaluateResult, out_dir: Path) -> None:
    """One MLflow run per evaluation: every model's test metrics, the paired comparison, the plots."""
    import mlflow

    from headstart import tracking as trk

    with trk.run(tracking, "evaluate", {"headstart.step": "evaluate",
                                        "headstart.champion_version": str(result.champion_version)}):
        for name, m in result.models.items():
            mlflow.log_metrics({f"{name}_test_accuracy": m["accuracy"], f"{name}_test_macro_f1": m["macro_f1"]})
        numeric = {f"diff_{k}": float(v) for k, v in result.comparison.items() if isinstance(v, int | float)}
        if numeric:
            mlflow.log_metrics(numeric)
        for name in ("metrics.json", "report.html", *(Path(f).name for f in result.files.values())):
            mlflow.log_artifact(str(out_dir / name))
        for png in result.files.values():  # the full confusion matrices, as data (plots.confusion_matrix_png)
            if Path(png).with_suffix(".npz").is_file():
                mlflow.log_artifact(str(Path(png).with_suffix(".npz")))


def paired_comparison(preds: dict[str, np.ndarray], y_true: np.ndarray, cfg: EvaluateConfig) -> dict[str, Any]:
    """finetune vs scratch on the same images: McNemar exact test and a paired bootstrap CI."""
    if "finetune" not in preds or "scratch" not in preds:
        return {}
    a, b = preds["finetune"] == y_true, preds["scratch"] == y_true
    mc = stats.mcnemar_exact(a, b)
    ci = stats.paired_bootstrap_diff(a, b, level=cfg.ci_level, n_boot=cfg.bootstrap_samples, seed=cfg.seed)
    return {"pair": "finetune - scratch", "accuracy_diff": ci.diff, "ci_low": ci.low, "ci_high": ci.high,
            "ci_level": ci.level, "mcnemar_p": mc.p_value, "finetune_only_right": mc.b10,
            "scratch_only_right": mc.b01}


def eval_for_gate(out_dir: Path, name: str, version: str | None = None):
    """Load one model's predictions back as a gate.ModelEval."""
    from headstart.gate import ModelEval

    data = np.load(out_dir / "predictions.npz")
    meta = json.loads((out_dir / "metrics.json").read_text())
    if f"pred_{name}" not in data:
        return None
    return ModelEval(name=name, y_true=data["y_true"], y_pred=data[f"pred_{name}"],
                     class_names=tuple(meta["classes"]), version=version)


def champion_for_gate(out_dir: Path, version: str | None):
    """The evaluated champion as the gate sees it: its predictions, or, when it was trained on other
    classes and could not be scored, only its classes (so the gate names the change instead of
    taking the run for a first one)."""
    from headstart.gate import IncomparableChampion

    if version is None:
        return None
    scored = eval_for_gate(out_dir, "champion", version)
    if scored is not None:
        return scored
    classes = json.loads((out_dir / "metrics.json").read_text()).get("champion_classes")
    if not classes:
        raise DataError(f"{out_dir / 'metrics.json'}: champion v{version} has neither predictions nor its "
                        "classes recorded (an evaluation from an older Headstart); re-run evaluate")
    return IncomparableChampion(class_names=tuple(classes), version=version)

