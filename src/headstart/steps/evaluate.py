"""Evaluate both candidates, and the current champion when there is one, on the same test split."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart import modelio, plots, stats
from headstart.config import Frozen, TrackingConfig, build, section
from headstart.data.imagefolder import load_split
from headstart.engine import predict_logits
from headstart.errors import DataError


class EvaluateConfig(Frozen):
    ci_level: float = 0.95
    bootstrap_samples: int = 2000
    seed: int = 0
    batch_size: int = 256
    include_champion: bool = True
    tensor_cache_dir: str | None = ".headstart/cache/tensors"  # decoded test split, reused across runs


def config_from_params(params: dict[str, Any]) -> EvaluateConfig:
    return build(EvaluateConfig, section(params, "evaluate"), "evaluate")


@dataclass
class EvaluateResult:
    models: dict[str, dict[str, Any]]
    comparison: dict[str, Any]
    champion_version: str | None
    classes: list[str]
    files: dict[str, str] = field(default_factory=dict)
    champion_classes: list[str] | None = None  # differs from `classes` when the champion was not scored


def predict_folder(
    model_dir: Path, data_dir: Path, batch_size: int, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predictions of a saved model on the test split, decoded with the model's own preset."""
    model, card = modelio.load(model_dir)
    test = load_split(data_dir, "test", card.preset, card.classes, cache_dir=cache_dir)
    logits = predict_logits(model, card.preset, test.x, batch_size, tta=card.tta)
    return test.y.numpy(), logits.argmax(1).numpy(), list(test.paths)


def summarise(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    n = len(classes)
    recall = stats.per_class_recall(y_true, y_pred, n)
    return {
        "accuracy": stats.accuracy(y_true, y_pred),
        "macro_f1": stats.macro_f1(y_true, y_pred, n),
        "per_class_recall": {c: float(r) for c, r in zip(classes, recall, strict=True)},
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
    """Write predictions.npz, metrics.json, confusion PNGs and report.md to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None
    preds: dict[str, np.ndarray] = {}
    tta: dict[str, str] = {}
    y_true: np.ndarray | None = None
    paths: list[str] = []
    classes: list[str] = []
    for name, folder in candidates.items():
        y, p, paths_ = predict_folder(folder, data_dir, cfg.batch_size, cache)
        card = modelio.load_card(folder)
        classes_ = list(card.classes)
        if y_true is not None and (paths_ != paths or classes_ != classes):
            raise DataError(f"{folder}: model was trained on other classes than {classes}; cannot compare")
        y_true, paths, classes, preds[name], tta[name] = y, paths_, classes_, p, card.tta
    assert y_true is not None
    champion_version, champion_classes = None, None
    if cfg.include_champion and tracking is not None:
        from headstart import registry

        found = registry.champion_model_dir(tracking, out_dir / "champion_model")
        if found is not None:
            champ_dir, champion_version = found
            champ_card = modelio.load_card(champ_dir)
            champion_classes = list(champ_card.classes)  # recorded either way: the gate names a change
            if champion_classes == classes:
                preds["champion"] = predict_folder(champ_dir, data_dir, cfg.batch_size, cache)[1]
                tta["champion"] = champ_card.tta
    models = {name: {**summarise(y_true, p, classes), "tta": tta[name]} for name, p in preds.items()}
    files: dict[str, str] = {}
    for name, p in preds.items():
        png = plots.confusion_matrix_png(confusion(y_true, p, len(classes)), classes,
                                         out_dir / f"confusion_{name}.png", f"{name}: confusion matrix")
        files[f"confusion_{name}"] = str(png)
    comparison = paired_comparison(preds, y_true, cfg)
    np.savez_compressed(out_dir / "predictions.npz", y_true=y_true, paths=np.array(paths),
                        **{f"pred_{k}": v for k, v in preds.items()})
    result = EvaluateResult(models=models, comparison=comparison, champion_version=champion_version,
                            classes=classes, files=files, champion_classes=champion_classes)
    payload = {"models": models, "comparison": comparison, "champion_version": champion_version,
               "classes": classes, "champion_classes": champion_classes}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    (out_dir / "report.md").write_text(report_markdown(result))
    (out_dir / "report.html").write_text(report_html(result, out_dir))
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
        for name in ("metrics.json", "report.md", "report.html", *(Path(f).name for f in result.files.values())):
            mlflow.log_artifact(str(out_dir / name))


def report_html(result: EvaluateResult, out_dir: Path) -> str:
    """Self-contained HTML (inline CSS and images) for the Kubeflow UI's HTML viewer."""
    import base64
    import html

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{m['accuracy']:.4f}</td><td>{m['macro_f1']:.4f}</td></tr>"
        for n, m in result.models.items()
    )
    imgs = "".join(
        f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(f).read_bytes()).decode()}"/><figcaption>{html.escape(k)}</figcaption></figure>'
        for k, f in result.files.items()
    )
    c = result.comparison
    paired = (f"<p>finetune &minus; scratch: {c['accuracy_diff']:+.4f}, {c['ci_level']:.0%} CI "
              f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], McNemar p = {c['mcnemar_p']:.3g}</p>") if c else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Headstart evaluation</title><style>"
            "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 10px}figure{display:inline-block;margin:8px}img{max-width:420px}</style></head><body>"
            f"<h1>Evaluation on the test split</h1><table><tr><th>model</th><th>accuracy</th><th>macro-F1</th>"
            f"</tr>{rows}</table>{paired}{imgs}</body></html>\n")


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


def report_markdown(result: EvaluateResult) -> str:
    lines = ["# Evaluation on the test split", "", "| model | accuracy | macro-F1 | test images |",
             "|---|---:|---:|---:|"]
    for name, m in result.models.items():
        label = f"{name} (v{result.champion_version})" if name == "champion" else name
        label += " (flip TTA)" if m.get("tta") == "flip" else ""
        lines.append(f"| {label} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['n_test']} |")
    if result.champion_version is not None and "champion" not in result.models:
        lines += ["", f"Champion v{result.champion_version} was not scored: it was trained on other classes "
                  f"({', '.join(result.champion_classes or [])}); the gate's `label_set` check names the change."]
    c = result.comparison
    if c:
        lines += ["", f"Paired comparison ({c['pair']}): difference {c['accuracy_diff']:+.4f}, "
                  f"{c['ci_level']:.0%} bootstrap CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], "
                  f"McNemar exact p = {c['mcnemar_p']:.3g}."]
    lines += ["", "## Per-class recall", "", "| class | " + " | ".join(result.models) + " |",
              "|---|" + "---:|" * len(result.models)]
    for cls in result.classes:
        row = " | ".join(f"{m['per_class_recall'][cls]:.3f}" for m in result.models.values())
        lines.append(f"| {cls} | {row} |")
    return "\n".join(lines) + "\n"


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

