"""Distribution checks: class balance per split and pooled pixel statistics per split and channel.

Statistics are pooled from per-image means and mean squares with every image weighted equally
(training resizes them all to one resolution, so one huge image must not outweigh the rest);
no pixels are held in memory.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from headstart.validation.config import ValidateConfig
from headstart.validation.findings import Finding
from headstart.validation.manifest import decoded_mask

CHANNEL_NAMES = {"L": ("L",), "RGB": ("R", "G", "B")}


def pixel_stats(manifest: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {channel: {"mean", "std"}}} on a 0-1 scale, over decodable images."""
    ok = decoded_mask(manifest)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in manifest.loc[ok, "split"].unique():
        in_split = ok & (manifest["split"] == split).to_numpy()
        for channels in manifest.loc[in_split, "channels"].unique():
            rows = in_split & (manifest["channels"] == channels).to_numpy()
            n = int(rows.sum())
            for j, name in enumerate(CHANNEL_NAMES[str(channels)]):
                mean = float(manifest[f"mean{j}"].to_numpy()[rows].sum()) / n
                sq = float(manifest[f"msq{j}"].to_numpy()[rows].sum()) / n
                std = math.sqrt(max(0.0, sq - mean**2))
                out.setdefault(str(split), {})[name] = {"mean": round(mean, 6), "std": round(std, 6)}
    return {split: dict(sorted(channels.items())) for split, channels in sorted(out.items())}


def class_balance(
    cfg: ValidateConfig, counts: dict[str, dict[str, int]], labels: list[str]
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    findings, ratios = [], {}
    for split, per_class in sorted(counts.items()):
        present = {c: n for c, n in per_class.items() if c in labels and n > 0}
        if len(present) < 2:
            continue
        big, small = max(present, key=lambda c: (present[c], c)), min(present, key=lambda c: (present[c], c))
        ratio = present[big] / present[small]
        ratios[split] = round(ratio, 4)
        if ratio > cfg.max_class_ratio:
            reason = (
                f"class imbalance in {split}: {big!r} has {present[big]} images, "
                f"{small!r} has {present[small]} "
                f"(ratio {ratio:.1f} > max_class_ratio={cfg.max_class_ratio:g})"
            )
            findings.append(Finding("class_balance", reason, f"{split}/{small}/"))
    return findings, {"class_balance": {"ratio": ratios, "max_class_ratio": cfg.max_class_ratio}}


def pixel_checks(
    cfg: ValidateConfig, stats: dict[str, dict[str, dict[str, float]]]
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    findings = []
    bounds = {"mean": (cfg.pixel_mean_min, cfg.pixel_mean_max), "std": (cfg.pixel_std_min, cfg.pixel_std_max)}
    for split, channels in stats.items():
        for channel, values in channels.items():
            for key, (low, high) in bounds.items():
                if not low <= values[key] <= high:
                    reason = f"{split} channel {channel} intensity {key} {values[key]:.4f} outside [{low:g}, {high:g}]"
                    findings.append(Finding("pixel_stats", reason, split + "/"))
    return findings, {"pixel_stats": {"stats": stats, "bounds": {k: list(v) for k, v in bounds.items()}}}
