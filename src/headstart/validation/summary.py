"""The dataset summary: what drift is measured against, and what DVC tracks as summary.json.

Deterministic by construction (sorted keys, rounded floats, relative paths, no clock), so an
unchanged dataset gives a byte-identical file and DVC sees nothing new.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from headstart.validation.manifest import sha_hex

SCHEMA = 1


def fingerprint(manifest: pd.DataFrame) -> str:
    """SHA-256 over sorted `path<TAB>sha256` lines: changes when any file is added, removed or edited."""
    shas = ("nan" if s is None else s for s in sha_hex(manifest))  # "nan": what an unreadable file always gave
    lines = sorted(f"{p}\t{s}" for p, s in zip(manifest["path"], shas, strict=True))
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def summarize(
    manifest: pd.DataFrame,
    labels: list[str],
    counts: dict[str, dict[str, int]],
    stats: dict[str, dict[str, dict[str, float]]],
    checks: dict[str, str],
) -> dict[str, Any]:
    splits = sorted(set(counts) | set(stats))
    summary = {
        "schema": SCHEMA,
        "fingerprint": fingerprint(manifest),
        "n_images": int(len(manifest)),
        "label_set": sorted(labels),
        "splits": {
            s: {
                "n_images": sum(counts.get(s, {}).values()),
                "class_counts": dict(sorted(counts.get(s, {}).items())),
                "pixel_stats": stats.get(s, {}),
            }
            for s in splits
        },
    }
    return with_checks(summary, checks)


def with_checks(summary: dict[str, Any], checks: dict[str, str]) -> dict[str, Any]:
    """`summary` with the checks' verdicts, without a second pass over every path for the fingerprint."""
    return summary | {"passed": all(status != "fail" for status in checks.values()), "checks": checks}


def write_json(path: Path, data: Any) -> Path:
    """Write atomically, so a crash never leaves half a state file for the next run to trust."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
