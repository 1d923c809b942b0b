"""Layout and label checks: the label set, per-split class counts, empty splits.

The expected label set comes from params.yaml, else from the last accepted version, else from
what is on disk (then the only check left is that every split has the same classes).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from headstart.validation.config import ValidateConfig
from headstart.validation.findings import Finding
from headstart.validation.layout import Layout


def expected_labels(
    cfg: ValidateConfig, previous: dict[str, Any] | None, layout: Layout
) -> tuple[list[str], str]:
    """(labels, where they came from)."""
    if cfg.label_set:
        return sorted(cfg.label_set), "params (validate.label_set)"
    if previous and previous.get("label_set"):
        return sorted(previous["label_set"]), "previous accepted version"
    return sorted({c for classes in layout.class_dirs.values() for c in classes}), "observed folders"


def label_checks(
    cfg: ValidateConfig, layout: Layout, counts: dict[str, dict[str, int]], labels: list[str], source: str
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """Label set, class folders and per-split class counts (`class_counts`) against the expected labels."""
    findings: list[Finding] = []
    known = set(labels)
    if len(labels) < 2:
        findings.append(Finding("labels", f"{len(labels)} class{'es' if len(labels) != 1 else ''} (label set "
                                f"from {source}): a classifier needs at least 2 class folders per split"))
    expects = {"params (validate.label_set)": "params expect",
               "previous accepted version": "the last accepted version has"}.get(source)
    for split in layout.split_dirs:
        found = layout.class_dirs.get(split, [])
        if expects and set(found) != known:  # one line saying why, before the per-folder list (sorted first)
            findings.append(Finding("labels", f"found {len(found)} class{'es' if len(found) != 1 else ''}; "
                                    f"{expects} {len(labels)}; set `validate.label_set`", f"{split}/"))
        for name in found:
            if name not in known:
                findings.append(Finding("labels", f"unknown class folder {name!r} (label set from {source})",
                                        f"{split}/{name}/"))  # fmt: skip
    for split in layout.split_dirs:
        if not counts.get(split):
            findings.append(Finding("splits", "empty split: no images", split + "/"))
            continue
        for label in labels:
            n = counts[split].get(label, 0)
            if n == 0 or n < cfg.min_images_per_class:
                reason = (f"{n} images < min_images_per_class={cfg.min_images_per_class}" if n
                          else f"class {label!r} missing from split {split!r}")  # fmt: skip
                findings.append(Finding("class_counts", reason, f"{split}/{label}/"))
    numbers = {
        "labels": {"expected": labels, "source": source, "n_classes": len(labels)},
        "class_counts": {"min_images_per_class": cfg.min_images_per_class, "counts": counts},
        "splits": {
            "expected": list(cfg.splits),
            "found": layout.split_dirs,
            "images": {s: sum(c.values()) for s, c in counts.items()},
        },
    }
    return findings, numbers


def class_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {label: n}} over every file in the manifest, decodable or not."""
    if manifest.empty:
        return {}
    grouped = manifest.loc[:, ["split", "label"]].value_counts(sort=False)
    out: dict[str, dict[str, int]] = {}
    for (split, label), n in sorted(grouped.items()):
        out.setdefault(str(split), {})[str(label)] = int(n)
    return out
