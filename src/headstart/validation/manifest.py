"""The manifest: one row per image, the table both the GX suite and the Python checks read.

Written next to the report as manifest.csv (relative paths, sorted), so a reviewer can open the
exact table that was validated. A sample from a shard has the path it had in the ImageFolder it
was packed from (split/class/name), so both forms give the same table, plus a `shard` column.
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
THUMB_COLUMNS = tuple(f"thumb{i}" for i in range(8))  # the 64 thumbnail bytes as eight uint64 columns
SHA_COLUMNS = tuple(f"sha{i}" for i in range(4))  # the digest's 32 bytes, big-endian: numeric order is hex order


STAT_COLUMNS = ("mean0", "mean1", "mean2", "msq0", "msq1", "msq2")
_STRS = ("path", "split", "label", "mode", "format", "error_kind", "error", "shard")
NO_DIGEST = np.void(bytes(32))  # digest_bytes' value for a file that could not be read
CSV_ROWS = 65536  # manifest.csv is written this many rows at a time, hex digests made per chunk


def build_manifest(entries: Sequence[Entry], facts: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Join layout entries with their scan facts into the compact table (see `frame`)."""
    if len(entries) != len(facts):
        raise ValueError(f"{len(entries)} entries but {len(facts)} scan results")
    return frame([e.rel for e in entries], [e.split for e in entries], [e.label for e in entries], facts)


def frame(
    paths: Sequence[str],
    splits: Sequence[str],
    labels: Sequence[str],
    facts: Sequence[dict[str, Any]],
    shards: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """One row per image with compact columns, so memory per image is a few hundred bytes, not kilobytes.

    Strings use pandas' string dtype (Arrow-backed), the 8x8 thumbnail is 64 raw bytes in eight
    uint64 columns (zeros when the image did not decode), the SHA-256 32 raw bytes in four (zeros
    when unreadable) and the dHash one nullable uint64: as hex strings they took 90 bytes an image
    more, and only manifest.csv shows them (`write_manifest`). The pixel statistics are six float columns
    (channels 1-2 NaN for grey images); `shard` names the shard a sample came from.
    Built per scan chunk and concatenated, so no per-image dict outlives its chunk.
    """
    columns: dict[str, Any] = {"path": list(paths), "split": list(splits), "label": list(labels)}
    for key in COLUMNS[3:]:
        if key != "sha256":
            columns[key] = [f.get(key) for f in facts]
    columns["dhash"] = pd.array([int(h, 16) if h else None for h in columns["dhash"]], dtype="UInt64")
    columns["shard"] = list(shards) if shards is not None else [None] * len(paths)
    raw = b"".join(bytes.fromhex(f["thumb"]) if f.get("thumb") else bytes(64) for f in facts)
    columns.update(zip(THUMB_COLUMNS, np.frombuffer(raw, dtype=np.uint64).reshape(len(facts), 8).T, strict=True))
    digests = b"".join(bytes.fromhex(f["sha256"]) if f.get("sha256") else bytes(32) for f in facts)
    raw_sha = np.frombuffer(digests, dtype=">u8").reshape(len(facts), 4).astype(np.uint64)
    columns.update(zip(SHA_COLUMNS, raw_sha.T, strict=True))
    columns["channels"] = [(f.get("stats") or {}).get("channels") for f in facts]
    stats = np.full((len(facts), 6), np.nan)
    for i, f in enumerate(facts):
        if f.get("stats"):
            n = len(f["stats"]["mean"])
            stats[i, :n], stats[i, 3 : 3 + n] = f["stats"]["mean"], f["stats"]["msq"]
    columns.update(zip(STAT_COLUMNS, stats.T, strict=True))
    out = pd.DataFrame(columns)
    for col in _STRS + ("channels",):
        out[col] = out[col].astype("str")
    for col in _INTS:
        out[col] = out[col].astype("Int64")
    return out


def concat(frames: list[pd.DataFrame], sort: bool = True) -> pd.DataFrame:
    """Chunks into one table sorted by path (the layout's order), whatever order workers finished in.

    Empties `frames` as it goes; `sort=False` when the chunks are already in path order.
    """
    if not frames:
        return frame([], [], [], [])
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frames.clear()
    return out.sort_values(["path", *SHA_COLUMNS], kind="stable", ignore_index=True) if sort else out


def sha_hex(frame: pd.DataFrame) -> list[str | None]:
    """The hex SHA-256 of each row, None where the file could not be read."""
    raw = digest_bytes(frame)
    hexed, unread = raw.tobytes().hex(), raw == NO_DIGEST
    return [None if unread[i] else hexed[64 * i : 64 * i + 64] for i in range(len(frame))]


def decoded_mask(frame: pd.DataFrame) -> np.ndarray:
    """Which rows decoded: the only ones with a thumbnail, hash and pixel statistics."""
    return (frame["error"].isna() & frame["dhash"].notna()).to_numpy(bool)


def thumb_bytes(frame: pd.DataFrame) -> np.ndarray:
    """(n, 64) uint8 8x8 thumbnails, zeros for rows that did not decode."""
    packed = np.ascontiguousarray(frame.loc[:, list(THUMB_COLUMNS)].to_numpy(np.uint64))
    return packed.view(np.uint8).reshape(len(frame), 64)


def digest_bytes(frame: pd.DataFrame) -> np.ndarray:
    """(n,) 32-byte void view of the SHA-256 digests (zeros where unreadable): sortable, comparable."""
    packed = np.ascontiguousarray(frame.loc[:, list(SHA_COLUMNS)].to_numpy(np.uint64).astype(">u8"))
    return packed.view(np.dtype((np.void, 32))).ravel()


def write_manifest(frame: pd.DataFrame, path: Path) -> Path:
    """manifest.csv: COLUMNS, digests and dHashes as hex; a sharded dataset adds each sample's shard."""
    columns = [*COLUMNS, "shard"] if frame["shard"].notna().any() else list(COLUMNS)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for start in range(0, max(len(frame), 1), CSV_ROWS):
            chunk = frame.iloc[start : start + CSV_ROWS]
            hexed = [None if pd.isna(h) else f"{h:016x}" for h in chunk["dhash"]]
            chunk = chunk.assign(sha256=sha_hex(chunk), dhash=hexed).loc[:, columns]
            chunk.to_csv(fh, header=start == 0, index=False, lineterminator="\n")
    return path


def integrity_numbers(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Observed ranges for the integrity checks' report rows."""
    width, height = frame["width"].dropna(), frame["height"].dropna()
    kinds = frame["error_kind"].dropna().value_counts().sort_index()
    return {
        "decode": {
            "files": int(len(frame)),
            "failed": int(frame["error"].notna().sum()),
            "by_kind": {str(k): int(v) for k, v in kinds.items()},
        },
        "dimensions": {
            "width": [int(width.min()), int(width.max())] if len(width) else None,
            "height": [int(height.min()), int(height.max())] if len(height) else None,
        },
        "mode": {
            "modes": {str(k): int(v) for k, v in frame["mode"].dropna().value_counts().sort_index().items()}
        },
    }
