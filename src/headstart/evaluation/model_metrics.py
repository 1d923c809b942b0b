"""What metrics.json says about each evaluated model (accuracy, macro-F1, calibration, per-class numbers,
where its predictions came from) and about the two candidates as a pair (McNemar, paired bootstrap)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.evaluation import stats

if TYPE_CHECKING:
    from headstart.evaluation.scoring import Scored


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


def paired_comparison(preds: dict[str, np.ndarray], y_true: np.ndarray, ci_level: float, bootstrap_samples: int,
                      seed: int) -> dict[str, Any]:
    """finetune vs scratch on the same images: McNemar exact test and a paired bootstrap CI (evaluate.ci_level,
    evaluate.bootstrap_samples, evaluate.seed)."""
    if "finetune" not in preds or "scratch" not in preds:
        return {}
    a, b = preds["finetune"] == y_true, preds["scratch"] == y_true
    mc = stats.mcnemar_exact(a, b)
    ci = stats.paired_bootstrap_diff(a, b, level=ci_level, n_boot=bootstrap_samples, seed=seed)
    return {"pair": "finetune - scratch", "accuracy_diff": ci.diff, "ci_low": ci.low, "ci_high": ci.high,
            "ci_level": ci.level, "mcnemar_p": mc.p_value, "finetune_only_right": mc.b10,
            "scratch_only_right": mc.b01}
