"""Hash and decode every file, in worker processes, skipping files whose hash is cached.

Workers read each file once, hash it, and decode it only when the hash is unknown, so a warm
run costs a read and a SHA-256 per file. Small datasets stay in-process: a pool costs more
than it saves below a few thousand files.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from headstart.validation.cache import ResultCache
from headstart.validation.decode import inspect_bytes, sha256

PARALLEL_MIN_FILES = 2000
_worker_args: tuple[int, frozenset[str]] = (0, frozenset())


@dataclass(frozen=True)
class ScanStats:
    files: int
    decoded: int
    cache_hits: int
    workers: int


def inspect_path(path: str, max_pixels: int, known: frozenset[str]) -> dict[str, Any]:
    """Facts for one file; only sha256 and size when its hash is in `known`."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return {
            "sha256": None,
            "bytes": None,
            "error_kind": "unreadable",
            "error": f"cannot read: {exc.strerror}",
        }
    digest = sha256(data)
    if digest in known:
        return {"sha256": digest, "bytes": len(data), "cached": True}
    return {"sha256": digest, "bytes": len(data), **inspect_bytes(data, max_pixels)}


def _init_worker(max_pixels: int, known: frozenset[str]) -> None:
    global _worker_args
    _worker_args = (max_pixels, known)


def _worker_chunk(paths: Sequence[str]) -> list[dict[str, Any]]:
    max_pixels, known = _worker_args
    return [inspect_path(p, max_pixels, known) for p in paths]


def resolve_workers(requested: int) -> int:
    return requested or max(1, min(os.cpu_count() or 1, 16))


def scan_files(
    paths: Sequence[str], max_pixels: int, workers: int, cache: ResultCache | None, force_pool: bool = False
) -> tuple[list[dict[str, Any]], ScanStats]:
    """Facts per path, in input order. Fresh results are written back to the cache."""
    known = cache.keys() if cache else frozenset()
    cached: dict[str, dict[str, Any]] = {}
    n_workers = resolve_workers(workers)
    use_pool = n_workers > 1 and (force_pool or len(paths) >= PARALLEL_MIN_FILES)
    if use_pool:
        size = max(32, min(1024, len(paths) // (n_workers * 8) + 1))
        chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
        # fork where there is one: workers inherit modules and the known-hash set for free, and the
        # caller's script is not re-imported (spawn/forkserver break unguarded scripts). Workers touch
        # only files, PIL, numpy and hashlib, never locks a parent's MLflow or GX threads could hold.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(
            n_workers, ctx, initializer=_init_worker, initargs=(max_pixels, known)
        ) as ex:
            parts = ex.map(_worker_chunk, chunks)
            cached = cache.load() if cache and known else {}  # parsed while the workers read and hash
            results = [row for part in parts for row in part]
    else:
        results = [inspect_path(p, max_pixels, known) for p in paths]
        cached = cache.load() if cache and known else {}
    hits, fresh = 0, {}
    for row in results:
        if row.pop("cached", False):
            hits += 1
            row.update(cached[row["sha256"]])
        elif row["sha256"] is not None:
            fresh[row["sha256"]] = {k: v for k, v in row.items() if k not in ("sha256", "bytes")}
    if cache:
        cache.store(fresh.items())
    return results, ScanStats(len(paths), len(paths) - hits, hits, n_workers if use_pool else 1)
