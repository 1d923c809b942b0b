"""The manifest: one row per image, the table both the GX suite and the Python checks read.

Written next to the report as manifest.csv (relative paths, sorted), so a reviewer can open the
exact table that was validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from headstart.validation.layout import Entry

COLUMNS = (
    "path",
    "split",
    "label",
    "width",
    "height",
    "mode",
    "format",
    "bytes",
    "sha256",
    "dhash",
    "error_kind",
    "error",
)
_INTS = ("width", "height", "bytes")


def build_manifest(entries: Sequence[Entry], facts: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Join layout entries with their scan facts; `thumb` and `stats` ride along for the checks."""
    if len(entries) != len(facts):
        raise ValueError(f"{len(entries)} entries but {len(facts)} scan results")
    columns: dict[str, list[Any]] = {
        "path": [e.rel for e in entries],
        "split": [e.split for e in entries],
        "label": [e.label for e in entries],
    }
    for key in (*COLUMNS[3:], "thumb", "stats"):
        columns[key] = [f.get(key) for f in facts]
    frame = pd.DataFrame(columns, columns=[*COLUMNS, "thumb", "stats"])
    for col in _INTS:
        frame[col] = frame[col].astype("Int64")
    for col in ("path", "split", "label", "mode", "format", "sha256", "dhash", "error_kind", "error"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def public(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[:, list(COLUMNS)]


def decoded(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that decoded: the only ones with a thumbnail, hash and pixel statistics."""
    return frame[frame["error"].isna() & frame["thumb"].notna()]


def thumbs(frame: pd.DataFrame) -> np.ndarray:
    """(n, 64) float32 thumbnails in [0, 1]."""
    if frame.empty:
        return np.zeros((0, 64), dtype=np.float32)
    raw = b"".join(bytes.fromhex(t) for t in frame["thumb"])
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(frame), -1).astype(np.float32) / 255.0


def write_manifest(frame: pd.DataFrame, path: Path) -> Path:
    public(frame).to_csv(path, index=False, lineterminator="\n")
    return path


def integrity_numbers(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Observed ranges for the integrity checks' report rows."""
    ok = frame[frame["width"].notna()]
    kinds = frame["error_kind"].dropna().value_counts().sort_index()
    return {
        "decode": {
            "files": int(len(frame)),
            "failed": int(frame["error"].notna().sum()),
            "by_kind": {str(k): int(v) for k, v in kinds.items()},
        },
        "dimensions": {
            "width": [int(ok["width"].min()), int(ok["width"].max())] if len(ok) else None,
            "height": [int(ok["height"].min()), int(ok["height"].max())] if len(ok) else None,
        },
        "mode": {
            "modes": {str(k): int(v) for k, v in frame["mode"].dropna().value_counts().sort_index().items()}
        },
    }
