"""Duplicates: identical bytes within and across splits, and near-duplicates across splits.

A near-duplicate is a resized or re-encoded copy. The 64-bit dHash alone cannot tell small
images apart (on Fashion-MNIST one dHash value is shared by over a thousand different images),
so a pair counts only when the 8x8 area-averaged thumbnails also match (RMS difference at most
`near_duplicate_max_rms`): resolution-independent, so a 2x copy matches exactly, while two
different photos of similar items do not. Candidates come from a k-d tree, not all pairs: for
validation a `ThumbIndex`, whose tree is over 16 block means instead of the 64 cells.
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
from headstart.validation.manifest import NO_DIGEST, decoded_mask, digest_bytes, thumb_bytes

NEIGHBOURS = 4
QUERY_CHUNK = 8192
# (64, 16): each column averages one 2x2 block of the 8x8 cells, scaled to unit norm. The columns are
# orthonormal, so projecting never lengthens a distance: a radius search among the projections finds
# every true neighbour (and some more, which the full distance then drops).
BLOCKS = np.zeros((64, 16))
BLOCKS[np.arange(64), [(c // 8 // 2) * 4 + c % 8 // 2 for c in range(64)]] = 0.5


class ThumbIndex:
    """A k-d tree over the thumbnails' 16 block means, answering `query` as a cKDTree over all 64 cells would.

    Built on uint8 thumbnails (64 bytes an image; the float cells of a candidate are made when it is
    checked), so it holds ~200 bytes an image against ~600 for a tree over the float64 cells, and the
    search prunes: in 64 dimensions the tree visited most of its nodes for each query (33 s for 101,000
    queries against 120,000 images, growing with the product of the two). Ties in distance come out in
    index order.
    """

    def __init__(self, cells: np.ndarray) -> None:
        self.cells = cells
        self.n = len(cells)
        means = np.empty((self.n, BLOCKS.shape[1]))
        for start in range(0, self.n, QUERY_CHUNK):  # a chunk of float cells at a time, never the whole split
            rows = np.arange(start, min(start + QUERY_CHUNK, self.n))
            means[rows] = self._float(rows) @ BLOCKS
        self.tree = cKDTree(means)

    def _float(self, rows: np.ndarray) -> np.ndarray:
        return (self.cells[rows].astype(np.float32) / 255.0).astype(np.float64)  # as validation has always had them

    def query(self, query: np.ndarray, k: int, distance_upper_bound: float) -> tuple[np.ndarray, np.ndarray]:
        full = np.asarray(query, dtype=np.float64)
        dist, idx = np.full((len(full), k), np.inf), np.full((len(full), k), self.n)
        reach = distance_upper_bound * (1 + 1e-6)  # rounding in the projection must not lose a neighbour
        for qi, found in enumerate(self.tree.query_ball_point(full @ BLOCKS, reach)):
            if not found:
                continue
            rows = np.asarray(found)
            d = np.sqrt(((self._float(rows) - full[qi]) ** 2).sum(axis=1))
            near = d < distance_upper_bound
            rows, d = rows[near], d[near]
            best = np.lexsort((rows, d))[:k]
            dist[qi, : len(best)], idx[qi, : len(best)] = d[best], rows[best]
        return dist, idx


def _split_rank(cfg: ValidateConfig, split: str) -> int:
    return cfg.splits.index(split) if split in cfg.splits else len(cfg.splits)


def exact_duplicates(
    cfg: ValidateConfig, manifest: pd.DataFrame
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    findings: list[Finding] = []
    digests = digest_bytes(manifest)  # numpy sort of raw digests: no Python string per row
    ok = (digests != NO_DIGEST) & (manifest["bytes"].fillna(0) > 0).to_numpy(bool)
    _, inverse, counts = np.unique(digests[ok], return_inverse=True, return_counts=True)
    repeated = np.zeros(len(manifest), dtype=bool)
    repeated[np.flatnonzero(ok)] = counts[inverse.ravel()] > 1
    dups = manifest.loc[repeated, ["split", "path"]]
    groups: dict[bytes, list[tuple[int, str, str]]] = {}
    for sha, split, path in zip(digests[repeated], dups["split"], dups["path"], strict=True):
        groups.setdefault(sha.tobytes(), []).append((_split_rank(cfg, split), path, split))
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
    sizes = manifest.loc[ok, "split"].value_counts().to_dict()
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
    ref: np.ndarray | ThumbIndex,
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
    ints; pairs with equal keys (same bytes) are skipped.
    `ref` may be a ThumbIndex already built on the ref thumbnails. Works on raw arrays too, so an
    importer can keep copies out of different splits before writing a file.
    """
    n_ref = ref.n if isinstance(ref, ThumbIndex) else len(ref)
    if n_ref == 0 or len(query) == 0:
        return []
    k = min(NEIGHBOURS, n_ref)
    radius = max_rms * 8 * (1 + 1e-9) + 1e-12  # L2 over 64 cells = 8 x RMS
    tree = ref if isinstance(ref, ThumbIndex) else cKDTree(ref)
    dist, idx = tree.query(query, k=k, distance_upper_bound=radius)
    dist, idx = dist.reshape(len(query), k), idx.reshape(len(query), k)
    matches = []
    for qi in np.flatnonzero(np.isfinite(dist[:, 0])):
        for d, j in zip(dist[qi], idx[qi], strict=True):
            if not np.isfinite(d):
                break
            bits = hamming(int(query_hashes[qi]), int(ref_hashes[j]))
            same = ref_keys is not None and query_keys is not None and ref_keys[j] == query_keys[qi]
            if not same and bits <= max_hamming:
                matches.append((int(qi), int(j), float(d) / 8, bits))
                break
    return matches


def near_duplicates(
    cfg: ValidateConfig, manifest: pd.DataFrame
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """For each pair of splits (earlier, later): files in the later one that copy one in the earlier.

    Works on row positions and one uint8 thumbnail array; the index over a split holds its uint8
    thumbnails and a tree over their block means; queries go a chunk at a time.
    """
    ok = decoded_mask(manifest)
    split_col = manifest["split"]
    order = sorted(split_col[ok].unique(), key=lambda s: (_split_rank(cfg, s), s))
    rows = {s: np.flatnonzero(ok & (split_col == s).to_numpy()) for s in order}
    cells = thumb_bytes(manifest)
    dhashes = manifest["dhash"].to_numpy(np.uint64, na_value=0)
    shas, paths = digest_bytes(manifest), manifest["path"].array
    hashes = {s: dhashes[idx] for s, idx in rows.items()}
    findings: list[Finding] = []
    for i, earlier in enumerate(order[:-1]):
        ref_rows = rows[earlier]
        tree, ref_keys = ThumbIndex(cells[ref_rows]), shas[ref_rows]
        for later in order[i + 1 :]:
            query_rows = rows[later]
            for start in range(0, len(query_rows), QUERY_CHUNK):
                part = query_rows[start : start + QUERY_CHUNK]
                matches = match_near_duplicates(
                    tree, hashes[earlier], cells[part].astype(np.float32) / 255.0,
                    hashes[later][start : start + QUERY_CHUNK], cfg.near_duplicate_max_rms,
                    cfg.near_duplicate_max_hamming, ref_keys, shas[part],
                )  # fmt: skip
                for qi, ri, rms, bits in matches:
                    original = paths[ref_rows[ri]]
                    reason = f"near-duplicate of {original} (thumbnail RMS {rms:.4f}, dHash distance {bits})"
                    findings.append(Finding("near_duplicates_across_splits", reason, paths[part[qi]]))
    numbers = {
        "max_rms": cfg.near_duplicate_max_rms,
        "max_hamming": cfg.near_duplicate_max_hamming,
        "files": len({f.file for f in findings}),
    }
    return findings, {"near_duplicates_across_splits": numbers}
