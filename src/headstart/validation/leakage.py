"""Duplicates: identical bytes within and across splits, and near-duplicates across splits.

A near-duplicate is a resized or re-encoded copy. The 64-bit dHash alone cannot tell small
images apart (on Fashion-MNIST one dHash value is shared by over a thousand different images),
so a pair counts only when the 8x8 area-averaged thumbnails also match (RMS difference at most
`near_duplicate_max_rms`): resolution-independent, so a 2x copy matches exactly, while two
different photos of similar items do not. Candidates come from a k-d tree, not all pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from headstart.validation.config import ValidateConfig
from headstart.validation.decode import hamming
from headstart.validation.findings import Finding
from headstart.validation.manifest import decoded, thumbs

NEIGHBOURS = 4


def _split_rank(cfg: ValidateConfig, split: str) -> int:
    return cfg.splits.index(split) if split in cfg.splits else len(cfg.splits)


def exact_duplicates(
    cfg: ValidateConfig, manifest: pd.DataFrame
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    findings: list[Finding] = []
    rows = manifest[manifest["sha256"].notna() & (manifest["bytes"].fillna(0) > 0)]
    dups = rows[rows["sha256"].duplicated(keep=False)]
    groups: dict[str, list[tuple[int, str, str]]] = {}
    for sha, split, path in zip(dups["sha256"], dups["split"], dups["path"], strict=True):
        groups.setdefault(sha, []).append((_split_rank(cfg, split), path, split))
    within: dict[str, int] = {}
    leaked = 0
    for group in groups.values():
        group.sort()  # the copy in the earliest split (train first) is the original
        first_path, first_split = group[0][1], group[0][2]
        seen: dict[str, str] = {}
        for _, path, split in group:
            if split != first_split:
                leaked += 1
                findings.append(Finding("duplicates_across_splits", f"same bytes as {first_path}", path))
            if split in seen:
                within[split] = within.get(split, 0) + 1
                findings.append(Finding("duplicates_within_split", f"same bytes as {seen[split]}", path))
            else:
                seen[split] = path
    sizes = rows.groupby("split").size().to_dict()
    fractions = {s: round(within.get(s, 0) / n, 6) for s, n in sorted(sizes.items())}
    limit = cfg.duplicate_within_split_max_fraction
    over = {s for s, frac in fractions.items() if frac > limit}
    findings = [f for f in findings if f.check != "duplicates_within_split" or f.file.split("/")[0] in over]
    numbers = {
        "duplicates_across_splits": {"files": leaked},
        "duplicates_within_split": {"redundant_copies": within, "fraction": fractions, "max_fraction": limit},
    }
    return findings, numbers


def match_near_duplicates(
    ref: np.ndarray,
    ref_hashes: Sequence[int],
    query: np.ndarray,
    query_hashes: Sequence[int],
    max_rms: float,
    max_hamming: int,
    ref_keys: Sequence[str] | None = None,
    query_keys: Sequence[str] | None = None,
) -> list[tuple[int, int, float, int]]:
    """(query index, ref index, thumbnail RMS, dHash distance) for each query image that copies a ref.

    Thumbnails are (n, 64) arrays in [0, 1] (`decode.shrink(gray, 8, 8)`), hashes `decode.dhash`
    ints; pairs with equal keys (same bytes) are skipped. Works on raw arrays too, so an importer
    can keep copies out of different splits before writing a file.
    """
    if len(ref) == 0 or len(query) == 0:
        return []
    k = min(NEIGHBOURS, len(ref))
    radius = max_rms * 8 * (1 + 1e-9) + 1e-12  # L2 over 64 cells = 8 x RMS
    dist, idx = cKDTree(ref).query(query, k=k, distance_upper_bound=radius)
    dist, idx = dist.reshape(len(query), k), idx.reshape(len(query), k)
    matches = []
    for qi in np.flatnonzero(np.isfinite(dist[:, 0])):
        for d, j in zip(dist[qi], idx[qi], strict=True):
            if not np.isfinite(d):
                break
            bits = hamming(query_hashes[qi], ref_hashes[j])
            same = ref_keys is not None and query_keys is not None and ref_keys[j] == query_keys[qi]
            if not same and bits <= max_hamming:
                matches.append((int(qi), int(j), float(d) / 8, bits))
                break
    return matches


def near_duplicates(
    cfg: ValidateConfig, manifest: pd.DataFrame
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """For each pair of splits (earlier, later): files in the later one that copy one in the earlier."""
    rows = decoded(manifest)
    order = sorted(rows["split"].unique(), key=lambda s: (_split_rank(cfg, s), s))
    parts = {s: rows[rows["split"] == s] for s in order}
    hashes = {s: [int(h, 16) for h in part["dhash"]] for s, part in parts.items()}
    findings: list[Finding] = []
    for i, earlier in enumerate(order):
        ref = parts[earlier]
        for later in order[i + 1 :]:
            query = parts[later]
            matches = match_near_duplicates(
                thumbs(ref), hashes[earlier], thumbs(query), hashes[later],
                cfg.near_duplicate_max_rms, cfg.near_duplicate_max_hamming,
                list(ref["sha256"]), list(query["sha256"]),
            )  # fmt: skip
            for qi, ri, rms, bits in matches:
                original = ref["path"].iat[ri]
                reason = f"near-duplicate of {original} (thumbnail RMS {rms:.4f}, dHash distance {bits})"
                findings.append(Finding("near_duplicates_across_splits", reason, query["path"].iat[qi]))
    numbers = {
        "max_rms": cfg.near_duplicate_max_rms,
        "max_hamming": cfg.near_duplicate_max_hamming,
        "files": len({f.file for f in findings}),
    }
    return findings, {"near_duplicates_across_splits": numbers}
