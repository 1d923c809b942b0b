"""Hash and decode every file, in worker processes, skipping files whose hash is cached.

Workers read each file once, hash it, and decode it only when the hash is unknown, so a warm
run costs a read and a SHA-256 per file. Each worker asks the cache for its own batch's hashes
and writes its fresh results back, so the parent never holds the cache, and what comes back to
the parent is a compact table chunk (manifest.frame), never a dict per image. Small datasets
stay in-process: a pool costs more than it saves below a few thousand files.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd

from headstart.progress import progress_enabled
from headstart.runtime import cpu_count
from headstart.validation.cache import ResultCache
from headstart.validation.decode import inspect_bytes, sha256
from headstart.validation.layout import Entry
from headstart.validation.manifest import build_manifest, concat

PARALLEL_MIN_FILES = 2000
LOOKUP = 64  # files per cache query: one round trip per batch, a few MB of bytes held at most
_worker_args: tuple[int, ResultCache | None] = (0, None)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ScanStats:
    files: int
    decoded: int
    cache_hits: int
    workers: int


def _read(path: str) -> bytes | dict[str, Any]:
    """The file's bytes, or the facts of a file that cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        return {"sha256": None, "bytes": None, "error_kind": "unreadable", "error": f"cannot read: {exc.strerror}"}


def inspect_batch(
    items: Sequence[bytes | dict[str, Any]], max_pixels: int, cache: ResultCache | None
) -> tuple[list[dict[str, Any]], int]:
    """(facts per item, cache hits). An item is a file's bytes, or facts already known (unreadable).

    One cache query for the whole batch; fresh results are written back in one transaction.
    """
    shas = [sha256(item) if isinstance(item, bytes) else None for item in items]
    known = cache.load(s for s in shas if s) if cache else {}
    out, fresh, hits = [], {}, 0
    for item, digest in zip(items, shas, strict=True):
        if not isinstance(item, bytes) or digest is None:
            out.append(dict(item))  # type: ignore[arg-type]
            continue
        if digest in known:
            hits += 1
            facts = known[digest]
        else:
            facts = fresh.get(digest) or inspect_bytes(item, max_pixels)
            fresh[digest] = facts
        out.append({"sha256": digest, "bytes": len(item), **facts})
    if cache and fresh:
        cache.store(fresh.items())
    return out, hits


def facts_for_paths(paths: Sequence[str], max_pixels: int, cache: ResultCache | None) -> tuple[list[dict], int]:
    """Facts per path in order, reading LOOKUP files at a time."""
    out: list[dict[str, Any]] = []
    hits = 0
    for i in range(0, len(paths), LOOKUP):
        facts, n = inspect_batch([_read(p) for p in paths[i : i + LOOKUP]], max_pixels, cache)
        out += facts
        hits += n
    return out, hits


def _init_worker(max_pixels: int, cache: ResultCache | None) -> None:
    global _worker_args
    _worker_args = (max_pixels, cache)


def _facts_chunk(task: tuple[int, Sequence[str]]) -> tuple[int, list[dict[str, Any]], int]:
    return task[0], *facts_for_paths(task[1], *_worker_args)


def _frame_chunk(task: tuple[int, Sequence[Entry]]) -> tuple[int, pd.DataFrame, int]:
    facts, hits = facts_for_paths([e.path for e in task[1]], *_worker_args)
    return task[0], build_manifest(task[1], facts), hits


def plan_workers(n_items: int, workers: int, force_pool: bool) -> int:
    """`workers`, or one per CPU the pod may use (its cgroup quota, not the node's cores), at most 16;
    1 (in-process) below PARALLEL_MIN_FILES items unless `force_pool`."""
    n_workers = workers or max(1, min(cpu_count(), 16))
    return n_workers if n_workers > 1 and (force_pool or n_items >= PARALLEL_MIN_FILES) else 1


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    n_workers: int,
    max_pixels: int,
    cache: ResultCache | None,
    desc: str,
    total: int,
    size: Callable[[R], int],
) -> Iterator[R]:
    """fn over tasks, in a process pool when n_workers > 1, results as they finish (any order)."""
    from tqdm import tqdm

    bar = tqdm(total=total or len(tasks), desc=desc, unit="img", disable=not progress_enabled())
    with ExitStack() as stack:
        if n_workers <= 1:
            _init_worker(max_pixels, cache)
            results: Iterable[R] = map(fn, tasks)
        else:
            # fork where there is one: workers inherit modules for free, and the caller's script is not
            # re-imported (spawn/forkserver break unguarded scripts). Workers touch only files, PIL, numpy,
            # hashlib and their own SQLite connection, never locks a parent's MLflow or GX threads could hold.
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            ex = stack.enter_context(
                ProcessPoolExecutor(n_workers, ctx, initializer=_init_worker, initargs=(max_pixels, cache))
            )
            results = (future.result() for future in as_completed([ex.submit(fn, task) for task in tasks]))
        for res in results:
            bar.update(size(res))
            yield res
    bar.close()


def _scan(
    fn: Callable[[tuple[int, Sequence[T]]], tuple[int, R, int]],
    items: Sequence[T],
    max_pixels: int,
    workers: int,
    cache: ResultCache | None,
    force_pool: bool,
) -> tuple[list[R], ScanStats]:
    """fn over chunks of items; the parts it returns (with the chunk's index and cache hits) in input order."""
    n_workers = plan_workers(len(items), workers, force_pool)
    size = max(32, min(1024, len(items) // (n_workers * 8) + 1))
    tasks = list(enumerate(items[i : i + size] for i in range(0, len(items), size)))
    parts: dict[int, R] = {}
    hits = 0
    for idx, part, n in run_tasks(
        fn, tasks, n_workers, max_pixels, cache, "hash+decode", len(items), lambda r: len(r[1])  # type: ignore[arg-type]
    ):
        parts[idx] = part
        hits += n
    return [parts.pop(i) for i in sorted(parts)], ScanStats(len(items), len(items) - hits, hits, n_workers)


def scan_files(
    paths: Sequence[str], max_pixels: int, workers: int, cache: ResultCache | None, force_pool: bool = False
) -> tuple[list[dict[str, Any]], ScanStats]:
    """Facts per path, in input order, as dicts (for tools and tests; the step uses scan_entries)."""
    parts, stats = _scan(_facts_chunk, paths, max_pixels, workers, cache, force_pool)
    return [row for part in parts for row in part], stats


def scan_entries(
    entries: Sequence[Entry], max_pixels: int, workers: int, cache: ResultCache | None, force_pool: bool = False
) -> tuple[pd.DataFrame, ScanStats]:
    """The compact manifest of an ImageFolder's entries, sorted by path."""
    parts, stats = _scan(_frame_chunk, entries, max_pixels, workers, cache, force_pool)
    return concat(parts, sort=False), stats  # chunks of the sorted layout: already in path order
