"""Validation of a sharded dataset version: the index checked against the disk, then every shard
streamed in a worker process (one shard per task), with the same per-image facts as a folder.

A shard that does not match its index (size, sha256, sample counts, class counts), that cannot
be read to the end, or that holds a sample without an image or with an unknown class, becomes a
`shards` finding naming the shard and the sample; its check fails, so nothing trains. Samples
keep the path they had in the ImageFolder they were packed from (split/class/name), so both
forms give the same manifest, counts and fingerprint; the `shard` column says where each lives.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from headstart.data import shards
from headstart.errors import DataError
from headstart.validation.cache import ResultCache
from headstart.validation.findings import Finding
from headstart.validation.layout import Layout
from headstart.validation.manifest import concat, frame
from headstart.validation.report import THUMBS_PER_CLASS, thumb_uri
from headstart.validation.scan import LOOKUP, ScanStats, inspect_batch, plan_workers, run_tasks

INDEX = "index.json"
FRAME_ROWS = 4096


@dataclass(frozen=True)
class ShardTask:
    root: str
    split: str
    shard: shards.ShardInfo
    classes: tuple[str, ...]
    extensions: frozenset[str]
    thumbs: bool  # keep sample thumbnails for the report (the report's split only)


@dataclass
class ShardOutcome:
    frame: pd.DataFrame
    hits: int
    findings: list[Finding]
    thumbs: dict[str, list[tuple[str, str]]]


def index_layout(
    root: Path, splits: tuple[str, ...], extensions: frozenset[str]
) -> tuple[Layout, list[ShardTask]]:
    """The layout the index declares, findings where index and disk disagree, and the shards to read
    (with thumbnails from the first configured split that has samples, as for an ImageFolder)."""
    index = shards.read_index(root)
    layout = Layout()
    for split in sorted(index.splits):
        if split not in splits:
            layout.findings.append(
                Finding("splits", f"unexpected split in {INDEX} (splits: {list(splits)})", split + "/")
            )
    for split in splits:
        if split not in index.splits:
            layout.findings.append(Finding("splits", f"split missing from {INDEX}", split + "/"))
    listed = {s.file for split in index.splits.values() for s in split.shards}
    layout.findings += _unlisted_files(root, listed)
    known = set(index.classes)
    for split, info in sorted(index.splits.items()):
        if split not in splits:
            continue
        layout.split_dirs.append(split)
        layout.class_dirs[split] = [c for c in index.classes if info.class_counts.get(c, 0) > 0]
        totals: Counter[str] = Counter()
        for shard in info.shards:
            totals.update(shard.class_counts)
            odd = sorted(set(shard.class_counts) - known)
            if odd:
                layout.findings.append(
                    Finding("shards", f"{INDEX} counts classes not in its class list: {odd}", shard.file)
                )
        listed_n = sum(s.count for s in info.shards)
        if listed_n != info.count:
            reason = f"{INDEX} says split {split!r} has {info.count} samples; its shards list {listed_n}"
            layout.findings.append(Finding("shards", reason, INDEX))
        if {c: n for c, n in totals.items() if n} != {c: n for c, n in info.class_counts.items() if n}:
            reason = f"{INDEX}: class counts of split {split!r} differ from the sum over its shards"
            layout.findings.append(Finding("shards", reason, INDEX))
    tasks = []
    thumbs_split = next((s for s in splits if s in index.splits and index.splits[s].count), None)
    for split in layout.split_dirs:
        for shard in index.splits[split].shards:
            if not (root / shard.file).is_file():
                layout.findings.append(Finding("shards", f"listed in {INDEX} but missing on disk", shard.file))
                continue
            tasks.append(ShardTask(str(root), split, shard, index.classes, extensions, split == thumbs_split))
    return layout, tasks


def _unlisted_files(root: Path, listed: set[str]) -> list[Finding]:
    """Files under the root the index does not name: a shard left out of the index, or a stray."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if rel == INDEX or rel in listed:
                continue
            if name.endswith(".tar"):
                found.append(Finding("shards", f"shard file present but not listed in {INDEX}", rel))
            else:
                found.append(Finding("stray_files", "not a shard or the index", rel))
    return found


def scan_shard(task: ShardTask) -> ShardOutcome:
    """Verify one shard against the index, then stream it: facts per sample, counts checked."""
    from headstart.validation.scan import _worker_args

    max_pixels, cache = _worker_args
    file, findings = task.shard.file, []
    try:
        shards.verify_shard(Path(task.root), task.shard)
    except DataError as exc:
        findings.append(Finding("shards", str(exc), file))
    frames: list[pd.DataFrame] = []  # compact chunks: per-sample dicts live for FRAME_ROWS samples at most
    names: list[str] = []
    labels: list[str] = []
    facts: list[dict[str, Any]] = []
    # per class, the first paths in sort order (the ones an ImageFolder's report shows), 2 * THUMBS_PER_CLASS at most
    heaps: dict[str, list[tuple[str, bytes]]] = {}
    pending: list[shards.Sample] = []
    counts: Counter[str] = Counter()
    hits, read_all = 0, True

    def flush(last: bool = False) -> None:
        nonlocal hits
        rows, n = inspect_batch([s.data for s in pending], max_pixels, cache)
        hits += n
        for sample, row in zip(pending, rows, strict=True):
            label = task.classes[sample.label]
            names.append(f"{task.split}/{sample.name}")
            labels.append(label)
            if row.get("error"):
                row["error"] = f"{row['error']} (shard {file}, sample {sample.key})"
            facts.append(row)
            if task.thumbs and row.get("error") is None:
                kept = heaps.setdefault(label, [])
                kept.append((names[-1], sample.data))
                if len(kept) > 2 * THUMBS_PER_CLASS:
                    kept.sort()
                    del kept[THUMBS_PER_CLASS:]
        pending.clear()
        if last or len(names) >= FRAME_ROWS:
            frames.append(frame(names, [task.split] * len(names), labels, facts, [file] * len(names)))
            names.clear(), labels.clear(), facts.clear()

    try:
        for sample in shards.iter_shard(task.root, task.shard, len(task.classes)):
            counts[task.classes[sample.label]] += 1
            if task.extensions and f".{sample.ext}" not in task.extensions:
                findings.append(
                    Finding("stray_files", f"not an image file extension (shard {file}, sample {sample.key})",
                            f"{task.split}/{sample.name}")
                )  # fmt: skip
                continue
            pending.append(sample)
            if len(pending) >= LOOKUP:
                flush()
    except DataError as exc:  # iter_shard names the shard and the sample, and checks the count
        findings.append(Finding("shards", str(exc), file))
        read_all = False
    flush(last=True)
    n = sum(counts.values())
    if read_all and n != task.shard.count:
        findings.append(Finding("shards", f"holds {n} samples; {INDEX} says {task.shard.count}", file))
    declared = {c: k for c, k in task.shard.class_counts.items() if k}
    if dict(counts) != declared:
        diff = {c: (counts.get(c, 0), declared.get(c, 0)) for c in sorted(set(counts) | set(declared))
                if counts.get(c, 0) != declared.get(c, 0)}  # fmt: skip
        findings.append(Finding("shards", f"class counts (found, in {INDEX}) differ: {diff}", file))
    thumbs = {c: [(p, uri) for p, data in sorted(h)[:THUMBS_PER_CLASS] if (uri := thumb_uri(data))]
              for c, h in heaps.items()}  # fmt: skip
    return ShardOutcome(concat(frames, sort=False), hits, findings, thumbs)


def scan_shards(
    root: Path,
    splits: tuple[str, ...],
    extensions: frozenset[str],
    max_pixels: int,
    workers: int,
    cache: ResultCache | None,
    force_pool: bool = False,
) -> tuple[Layout, pd.DataFrame, ScanStats, dict[str, list[tuple[str, str]]]]:
    """Layout with its findings, the compact manifest, scan statistics and the report's sample thumbnails."""
    layout, tasks = index_layout(root, splits, extensions)
    total = sum(t.shard.count for t in tasks)
    n_workers = max(1, min(plan_workers(total, workers, force_pool), len(tasks)))
    if n_workers > 1:
        # the shard reader's library (webdataset) imports torch, ~200 MB: imported once here, the
        # forked workers share those pages instead of each importing its own copy
        import webdataset.tariterators  # noqa: F401
    frames, hits, thumbs = [], 0, {}
    for out in run_tasks(scan_shard, tasks, n_workers, max_pixels, cache, "shards", total, lambda r: len(r.frame)):
        frames.append(out.frame)
        hits += out.hits
        layout.findings += out.findings
        for label, items in out.thumbs.items():
            thumbs[label] = sorted(thumbs.get(label, []) + items)[:THUMBS_PER_CLASS]
    manifest = concat(frames)
    stats = ScanStats(len(manifest), len(manifest) - hits, hits, n_workers)
    return layout, manifest, stats, dict(sorted(thumbs.items()))
