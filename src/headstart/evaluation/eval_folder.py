"""An evaluation folder: what evaluate writes into it (predictions.npz, metrics.json, confusion matrices,
example thumbnails, the candidates' training histories, report.html, the MLflow run) and what register
reads back out of it for the gate. One module knows its layout, so the two steps never import each other."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.config import TrackingConfig
from headstart.errors import DataError, RegistryError
from headstart.evaluation import examples, plots, report, stats
from headstart.evaluation.gate import IncomparableChampion, ModelEval


@dataclass
class EvaluateResult:
    models: dict[str, dict[str, Any]]
    comparison: dict[str, Any]
    champion_version: str | None
    classes: list[str]
    files: dict[str, str] = field(default_factory=dict)
    champion_classes: list[str] | None = None  # differs from `classes` when the champion was not scored


# --- written by evaluate ------------------------------------------------------------


def write_predictions(out_dir: Path, data_dir: Path, y_true: np.ndarray, paths: list[str], classes: list[str],
                      preds: dict[str, np.ndarray], confs: dict[str, np.ndarray],
                      candidates: tuple[str, ...]) -> dict[str, str]:
    """Every model's confusion matrix (PNG and .npz), predictions.npz and the example thumbnails; returns the
    PNGs by name (`confusion_<model>`)."""
    files: dict[str, str] = {}
    for name, p in preds.items():
        png = plots.confusion_matrix_png(stats.confusion(y_true, p, len(classes)), classes,
                                         out_dir / f"confusion_{name}.png", f"{name}: confusion matrix")
        files[f"confusion_{name}"] = str(png)
    np.savez_compressed(out_dir / "predictions.npz", y_true=y_true, paths=np.array(paths),
                        **{f"pred_{k}": v for k, v in preds.items()}, **{f"conf_{k}": v for k, v in confs.items()})
    chosen = examples.choose(y_true, preds, confs, candidates)
    examples.write(data_dir, paths, chosen, out_dir / "examples")
    return files


def copy_histories(candidates: dict[str, Path], out_dir: Path) -> None:
    """The learning curves for the report: train writes history.json beside model/."""
    for name, folder in candidates.items():
        if (folder.parent / "history.json").is_file():
            shutil.copyfile(folder.parent / "history.json", out_dir / f"history_{name}.json")


def write_metrics(out_dir: Path, result: EvaluateResult, prediction_store: str | None) -> None:
    """metrics.json, then report.html, which is rendered from the folder."""
    payload = {k: v for k, v in asdict(result).items() if k != "files"} | {"prediction_store": prediction_store}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    report.write(out_dir, out_dir / "report.html")


def log(tracking: TrackingConfig, result: EvaluateResult, out_dir: Path) -> None:
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


# --- read back by register ----------------------------------------------------------


def metrics(eval_dir: Path) -> dict[str, Any]:
    return json.loads((eval_dir / "metrics.json").read_text())


def eval_for_gate(out_dir: Path, name: str, version: str | None = None) -> ModelEval | None:
    """Load one model's predictions back as a gate.ModelEval; None when that model was not evaluated."""
    data = np.load(out_dir / "predictions.npz")
    if f"pred_{name}" not in data:
        return None
    return ModelEval(name=name, y_true=data["y_true"], y_pred=data[f"pred_{name}"],
                     class_names=tuple(metrics(out_dir)["classes"]), version=version)


def candidates_for_gate(eval_dir: Path) -> tuple[ModelEval, ModelEval]:
    """The fine-tuned and the scratch candidate, as the gate sees them."""
    finetune, scratch = eval_for_gate(eval_dir, "finetune"), eval_for_gate(eval_dir, "scratch")
    if finetune is None or scratch is None:
        raise RegistryError(f"{eval_dir}: evaluation lacks the finetune or scratch predictions; re-run evaluate")
    return finetune, scratch


def require_champion(evaluated: str | None, current: str | None) -> None:
    """The gate compares against the champion the evaluation scored: one that moved since makes it stale."""
    if current != evaluated:
        raise RegistryError(
            f"the champion changed since evaluation (evaluated v{evaluated}, now v{current}); re-run evaluate "
            "so the gate compares against it"
        )


def champion_for_gate(out_dir: Path, version: str | None) -> ModelEval | IncomparableChampion | None:
    """The evaluated champion as the gate sees it: its predictions, or, when it was trained on other
    classes and could not be scored, only its classes (so the gate names the change instead of
    taking the run for a first one)."""
    if version is None:
        return None
    scored = eval_for_gate(out_dir, "champion", version)
    if scored is not None:
        return scored
    classes = metrics(out_dir).get("champion_classes")
    if not classes:
        raise DataError(f"{out_dir / 'metrics.json'}: champion v{version} has neither predictions nor its "
                        "classes recorded (an evaluation from an older Headstart); re-run evaluate")
    return IncomparableChampion(class_names=tuple(classes), version=version)
