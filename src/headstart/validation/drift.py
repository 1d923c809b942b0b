"""Drift against the last accepted version: label mix (PSI) and intensity statistics per split.

PSI rather than a chi-square p-value because its size does not grow with the number of images:
70,000 images make any tiny shift "significant", while PSI 0.1 means the same shift at any scale.
"""

from __future__ import annotations

import math
from typing import Any

from headstart.validation.config import ValidateConfig
from headstart.validation.findings import Finding

EPS = 1e-4


def psi(current: dict[str, int], previous: dict[str, int]) -> float:
    """Population stability index of two count tables (0 = identical)."""
    labels = sorted(set(current) | set(previous))
    n_cur, n_prev = sum(current.values()) or 1, sum(previous.values()) or 1
    total = 0.0
    for label in labels:
        p = max(current.get(label, 0) / n_cur, EPS)
        q = max(previous.get(label, 0) / n_prev, EPS)
        total += (p - q) * math.log(p / q)
    return total


def drift_checks(
    cfg: ValidateConfig, summary: dict[str, Any], previous: dict[str, Any] | None
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    if previous is None:
        note = {"previous": None, "note": "no previous accepted version; nothing to compare"}
        return [], {"label_drift": note, "pixel_drift": note}
    findings: list[Finding] = []
    psis: dict[str, float] = {}
    shifts: dict[str, dict[str, dict[str, float]]] = {}
    for split, now in sorted(summary["splits"].items()):
        before = previous.get("splits", {}).get(split)
        if not before or not now["class_counts"]:
            continue
        value = psi(now["class_counts"], before["class_counts"])
        psis[split] = round(value, 6)
        if value > cfg.drift_label_psi_max:
            reason = (
                f"label distribution of {split} drifted: PSI {value:.3f} > drift_label_psi_max="
                f"{cfg.drift_label_psi_max:g} (now {now['class_counts']}, was {before['class_counts']})"
            )
            findings.append(Finding("label_drift", reason, split + "/"))
        limits = {"mean": cfg.drift_pixel_mean_max, "std": cfg.drift_pixel_std_max}
        for channel, values in now["pixel_stats"].items():
            old = before.get("pixel_stats", {}).get(channel)
            if not old:
                continue
            for key, limit in limits.items():
                delta = abs(values[key] - old[key])
                shifts.setdefault(split, {}).setdefault(channel, {})[key] = round(delta, 6)
                if delta > limit:
                    reason = (
                        f"{split} channel {channel} intensity {key} moved "
                        f"{old[key]:.4f} -> {values[key]:.4f} "
                        f"(|change| {delta:.4f} > drift_pixel_{key}_max={limit:g})"
                    )
                    findings.append(Finding("pixel_drift", reason, split + "/"))
    previous_id = previous.get("fingerprint")
    return findings, {
        "label_drift": {"previous": previous_id, "psi": psis, "max_psi": cfg.drift_label_psi_max},
        "pixel_drift": {
            "previous": previous_id,
            "abs_change": shifts,
            "max_mean_change": cfg.drift_pixel_mean_max,
            "max_std_change": cfg.drift_pixel_std_max,
        },
    }
