"""Read an ImageFolder split (root/<split>/<class>/<file>) into labelled uint8 tensors.

Importing it does not import torch (validation lists folders with it; torch is loaded by `load_split`)."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import PIL
from tqdm import tqdm

from headstart.data.suffixes import IMAGE_SUFFIXES
from headstart.errors import DataError
from headstart.progress import progress_enabled

if TYPE_CHECKING:
    import torch

    from headstart.data.shards import Root
    from headstart.presets import Preset

CACHE_MAX_BYTES = 2 << 30  # larger decoded splits are not written to the tensor cache (a disk-size limit)
STALE_TMP_SECONDS = 3600  # a cache temporary this old was left by a killed write: removed at the next write


@dataclass(frozen=True)
class Split:
    """A decoded split: x uint8 (N, H, W, C), y int64 (N,), and where each row came from."""

    x: torch.Tensor
    y: torch.Tensor
    paths: tuple[str, ...]
    classes: tuple[str, ...]


def list_classes(data_dir: Path, split: str = "train") -> tuple[str, ...]:
    """The class names, sorted: the class folders of an ImageFolder's split (a packed dataset's are in its
    index: headstart.data.dataset.open_dataset reads either)."""
    folder = data_dir / split
    if not folder.is_dir():
        raise DataError(f"{folder}: split folder not found; expected {data_dir}/<split>/<class>/<image>")
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{folder}: need at least 2 class folders, found {len(classes)}")
    return classes


def require_classes(data_dir: Path | Root, split: str, classes: tuple[str, ...], whose: str,
                    found: tuple[str, ...] | None = None) -> None:
    """Refuse `split` unless it holds exactly `classes`, in order. Labels are indices into a class list, so
    another list (('ant', 'cat', 'dog') against ('cat', 'dog', 'fox')) would silently score one class's
    images as another's. `whose` names who expects `classes`: the model at fault. `found`: the split's classes
    when the caller has them (a packed dataset's index); else its class folders."""
    found = list_classes(Path(data_dir), split) if found is None else found
    if tuple(found) != tuple(classes):
        raise DataError(f"{whose} has classes {list(classes)}, but {data_dir} ({split} split) has classes "
                        f"{list(found)}; use the dataset it was trained on, or train on this one")


def list_split(data_dir: Path, split: str, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """All image files of a split with their class index, in a stable order."""
    items: list[tuple[Path, int]] = []
    for idx, name in enumerate(classes):
        folder = data_dir / split / name
        if not folder.is_dir():
            raise DataError(f"{folder}: class {name!r} missing from split {split!r}")
        items.extend((p, idx) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not items:
        raise DataError(f"{data_dir / split}: no images found")
    return items


def per_class_subset(items: list[tuple[Path, int]], per_class: int | None, seed: int) -> list[tuple[Path, int]]:
    """Deterministic stratified subset: the first `per_class` of each class by seeded hash order."""
    if per_class is None:
        return items
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for it in items:  # one pass: grouping per class by scanning all items once per class was O(items x classes)
        by_class.setdefault(it[1], []).append(it)
    chosen: list[tuple[Path, int]] = []
    for cls in sorted(by_class):
        members = sorted(by_class[cls], key=lambda it: hashlib.sha256(f"{seed}:{it[0].name}".encode()).digest())
        chosen.extend(members[:per_class])
    return sorted(chosen, key=lambda it: (it[1], it[0].name))


def load_split(
    data_dir: Path, split: str, preset: Preset, classes: tuple[str, ...],
    per_class: int | None = None, seed: int = 0,
    cache_dir: Path | None = None, cache_max_bytes: int = CACHE_MAX_BYTES, cache_budget_bytes: int | None = None,
) -> Split:
    """Decode a (sub)split once into memory; small images make this far cheaper than per-epoch decoding.

    With `cache_dir`, the decoded uint8 array is also kept there as an .npy file keyed by a hash of the
    files' bytes, their paths and labels, and the preset's decode settings: a later run on the same
    content reads it back instead of decoding (any changed file, label or preset is a new key). Splits
    whose array would exceed `cache_max_bytes` are not cached. With `cache_budget_bytes`, a write then
    deletes the least recently used arrays until the folder's arrays fit it (`prune_cache`).
    An ImageFolder's only: headstart.data.dataset.open_dataset(root).load reads either form.
    """
    import torch

    items = per_class_subset(list_split(data_dir, split, classes), per_class, seed)
    rel = tuple(str(p.relative_to(data_dir)) for p, _ in items)

    x = decode_cached(split, (len(items), preset.image_size, preset.image_size, preset.channels), cache_dir,
                      lambda: content_key(items, rel, preset, cache_dir),
                      lambda: ((i, preset.decode(path)) for i, (path, _) in enumerate(items)), cache_budget_bytes,
                      cache_max_bytes)
    return Split(x=torch.from_numpy(x), y=torch.tensor([c for _, c in items], dtype=torch.int64), paths=rel,
                 classes=classes)


def decode_cached(
    split: str, shape: tuple[int, ...], cache_dir: Path | None, key: Callable[[], str],
    images: Callable[[], Iterator[tuple[int, np.ndarray]]], budget_bytes: int | None, max_bytes: int = CACHE_MAX_BYTES,
) -> np.ndarray:
    """The uint8 array of `shape` whose rows `images` decodes (row, image), read instead from
    `<cache_dir>/<key()>.npy` where a load wrote it; a fresh one is written there unless it passes `max_bytes`
    (both forms' `load` share this)."""
    cache_file = None
    if cache_dir is not None and math.prod(shape) <= max_bytes:
        cache_file = Path(cache_dir) / f"{key()}.npy"
        with contextlib.suppress(OSError, ValueError):  # absent or unreadable: decode again and rewrite it
            cached = np.load(cache_file, allow_pickle=False)
            if cached.shape == shape and cached.dtype == np.uint8:
                with contextlib.suppress(OSError):
                    os.utime(cache_file)  # used now: the mtime orders the LRU pruning (atime: noatime, relatime)
                return cached
    arrays = np.empty(shape, dtype=np.uint8)
    with tqdm(total=shape[0], desc=f"decoding {split}", unit="img", disable=not progress_enabled(), leave=False) as bar:
        for row, image in images():
            arrays[row] = image
            bar.update(1)
    if cache_file is not None:
        write_atomic(cache_file, lambda fh: np.save(fh, arrays, allow_pickle=False))
        if budget_bytes is not None:
            prune_cache(cache_file.parent, budget_bytes, keep=cache_file)
    return arrays


def content_key(
    items: list[tuple[Path, int]], rel: tuple[str, ...], preset: Preset, cache_dir: Path | None = None,
) -> str:
    """Hash of every file's content, relative path and label, plus what decoding depends on.

    Each file's own digest is remembered in `cache_dir` (digests.sqlite, keyed by path, size, mtime and
    inode), so the steps of one run (train x2, evaluate per model) read each file's bytes once instead of
    at every load_split; any rewrite of a file changes its mtime or size and so is hashed again (the
    assumption make, rsync and DVC make too)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"v2|{PIL.__version__}|{preset.image_size}|{preset.channels}".encode())
    for (_, label), name, file_digest in zip(items, rel, file_digests([p for p, _ in items], cache_dir), strict=True):
        digest.update(f"|{name}|{label}|{file_digest}".encode())
    return digest.hexdigest()


def file_digests(paths: list[Path], cache_dir: Path | None) -> list[str]:
    """blake2b of each file's bytes, from the digest store where the file is unchanged since."""
    stats = [os.stat(p) for p in paths]
    # the absolute path without resolving links (no syscall per component): the inode tells files apart
    keys = [(os.path.abspath(p), st.st_size, st.st_mtime_ns, st.st_ino) for p, st in zip(paths, stats, strict=True)]
    known: dict[tuple, str] = {}
    db = None
    if cache_dir is not None:
        with contextlib.suppress(OSError, sqlite3.Error):
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(Path(cache_dir) / "digests.sqlite", timeout=30)
            db.execute("CREATE TABLE IF NOT EXISTS digest (path TEXT PRIMARY KEY, size INT, mtime_ns INT, ino INT, "
                       "hex TEXT)")
            for start in range(0, len(keys), 500):  # only this run's files, in batches (SQLite's variable limit)
                chunk = [k[0] for k in keys[start : start + 500]]
                marks = ",".join("?" * len(chunk))  # placeholders only: the paths are bound parameters
                rows = db.execute(f"SELECT path, size, mtime_ns, ino, hex FROM digest WHERE path IN ({marks})",  # noqa: S608
                                  chunk)
                known.update({tuple(r[:4]): r[4] for r in rows})
    out, fresh = [], []
    for path, key in zip(paths, keys, strict=True):
        hexed = known.get(key)
        if hexed is None:
            hexed = hashlib.blake2b(Path(path).read_bytes(), digest_size=20).hexdigest()
            fresh.append((*key, hexed))
        out.append(hexed)
    if db is not None:
        with contextlib.suppress(sqlite3.Error), db:
            db.executemany("INSERT OR REPLACE INTO digest VALUES (?, ?, ?, ?, ?)", fresh)
        db.close()
    return out


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """A cache file, written whole by `write` then renamed into place, and best effort: a read-only or full disk
    only loses the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            write(tmp)
        os.replace(tmp.name, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp.name)


def prune_cache(folder: Path, budget_bytes: int, keep: Path | None = None) -> None:
    """Delete the least recently used decoded arrays (`*.npy`, by mtime: a hit touches its file) until those
    left fit `budget_bytes`, never `keep` (the one just written), and every temporary older than
    STALE_TMP_SECONDS (a killed write's; a live writer's is younger). Best effort: another process may be
    pruning the same folder."""
    now, arrays = time.time(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # no cache folder (it could not be created): nothing to prune
    for entry in entries:
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if entry.name.endswith(".tmp") and now - st.st_mtime > STALE_TMP_SECONDS:
                os.unlink(entry.path)
            elif entry.name.endswith(".npy") and entry.is_file(follow_symlinks=False):
                arrays.append((st.st_mtime_ns, st.st_size, entry.path))
    total = sum(size for _, size, _ in arrays)
    for _, size, name in sorted(arrays):
        if total <= budget_bytes:
            break
        if keep is not None and name == str(keep):
            continue
        with contextlib.suppress(OSError):
            os.unlink(name)
            total -= size
