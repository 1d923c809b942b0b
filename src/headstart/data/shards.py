"""Sharded dataset versions: an ImageFolder packed into WebDataset tar shards plus an index.

A million small files make DVC slow (DVC issue #7607: 600k files, hours to push or pull; its maintainers
advise archives) and make every epoch a million opens. `pack` writes each split as tar shards of about
`target_shard_bytes` (WebDataset's format: the members of a sample share a key) and `index.json` with
per-shard sample and class counts and sha256s, so DVC tracks hundreds of files and readers stream.

Packing is deterministic: samples are ordered by the sha256 of their path (class-mixed, so a small shuffle
buffer sees every class), tar headers are normalised, and the same ImageFolder gives byte-identical shards
and so the same DVC hash. Reading uses webdataset's tar iterators.

    <root>/index.json
    <root>/<split>/<split>-000000.tar        <key>.<ext> (the image's bytes), <key>.cls, <key>.path
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from headstart import storage
from headstart.data.imagefolder import list_classes, list_split, write_atomic
from headstart.data.names import shown, unsafe_path_reason
from headstart.data.remote import RemoteRoot
from headstart.errors import DataError
from headstart.progress import progress_enabled

FORMAT, VERSION = "headstart-shards", 1
INDEX = "index.json"
DEFAULT_SHARD_BYTES = 256 << 20
SPLITS = ("train", "val", "test")
_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class ShardInfo:
    file: str  # relative to the root, e.g. "train/train-000000.tar"
    count: int
    bytes: int
    sha256: str
    class_counts: dict[str, int]


@dataclass(frozen=True)
class SplitIndex:
    count: int
    class_counts: dict[str, int]
    shards: tuple[ShardInfo, ...]


@dataclass(frozen=True)
class ShardIndex:
    classes: tuple[str, ...]
    splits: dict[str, SplitIndex]
    target_shard_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


@dataclass(frozen=True)
class Sample:
    """One sample as the stream engine reads it, whichever form it came from (a tar shard or a file)."""

    key: str  # 9-digit position in the split: the packed index's order, or an ImageFolder's load order
    name: str  # the original path inside the split, e.g. "coat/img_00042.png"
    label: int
    data: bytes
    ext: str
    shard: str  # where it was read from, for messages: the shard's file, or the image file


# ---- where a root lives: a folder, or s3:// --------------------------------------------------------------

Root = str | Path | RemoteRoot  # a folder, an s3:// prefix, or a DVC-tracked version read from its remote


def _join(root: Root, rel: str) -> str:
    """Where `rel` is, for messages (a RemoteRoot: its .dvc file and remote, then `rel`)."""
    if isinstance(root, RemoteRoot):
        return f"{root}/{rel}"
    return storage.join(root, rel) if storage.is_s3(root) else str(Path(root) / rel)


@contextlib.contextmanager
def _open(root: Root, rel: str) -> Iterator[IO[bytes]]:
    """A readable stream of one file under `root`: streamed from S3, never downloaded whole (ObjectStream resumes
    a dropped connection from the byte reached). A missing file is a DataError."""
    try:
        uri = root.url(rel) if isinstance(root, RemoteRoot) else _join(root, rel)
        with storage.ObjectStream(uri, _join(root, rel)) if storage.is_s3(uri) else open(uri, "rb") as fh:
            yield fh
    except FileNotFoundError as exc:
        raise DataError(f"{_join(root, rel)}: " + ("not found; a packed dataset has one (headstart data pack)"
                        if rel == INDEX else "shard listed in index.json is missing")) from exc


def is_sharded(root: Root) -> bool:
    """A packed dataset (index.json at its root), as opposed to an ImageFolder."""
    if isinstance(root, RemoteRoot):
        return INDEX in root.objects
    if storage.is_s3(root):
        return storage.exists(_join(root, INDEX))
    return (Path(root) / INDEX).is_file()


def read_index(root: Root) -> ShardIndex:
    where = _join(root, INDEX)
    try:
        with _open(root, INDEX) as fh:
            raw = json.loads(fh.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc}); re-pack the dataset (headstart data pack)") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise DataError(f"{where}: not a Headstart shard index (format {found!r}); pack one with headstart data pack")
    if raw.get("version") != VERSION:
        raise DataError(f"{where}: index version {raw.get('version')!r}; this Headstart reads version {VERSION}")
    try:
        classes = tuple(str(c) for c in raw["classes"])
        splits = {
            name: SplitIndex(
                count=int(s["count"]), class_counts={str(k): int(v) for k, v in s["class_counts"].items()},
                shards=tuple(ShardInfo(file=str(i["file"]), count=int(i["count"]), bytes=int(i["bytes"]),
                                       sha256=str(i["sha256"]),
                                       class_counts={str(k): int(v) for k, v in i["class_counts"].items()})
                             for i in s["shards"]))
            for name, s in raw["splits"].items()
        }
        target = int(raw["target_shard_bytes"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: malformed index ({type(exc).__name__}: {exc}); re-pack the dataset") from exc
    for name, split in splits.items():
        for info in split.shards:
            if reason := unsafe_path_reason(info.file):
                raise DataError(f"{where}: split {name!r} lists shard {shown(info.file)!r}, not a plain path inside "
                                f"the dataset folder ({reason}); re-pack the dataset")
            if len(info.sha256) != 64 or info.sha256.strip("0123456789abcdef"):  # it names a cache file
                raise DataError(f"{where}: shard {info.file} has sha256 {shown(info.sha256)[:80]!r}, not 64 lowercase "
                                "hex digits; re-pack the dataset")
    return ShardIndex(classes=classes, splits=splits, target_shard_bytes=target)


def split_of(root: Root, index: ShardIndex, split: str) -> SplitIndex:
    """`split`'s entry in `root`'s index, or a DataError naming the index and the splits it has."""
    if split not in index.splits:
        raise DataError(f"{_join(root, INDEX)}: no split {split!r} (has {', '.join(index.splits) or 'none'})")
    return index.splits[split]


# ---- reading -----------------------------------------------------------------------------------------------

def iter_shard(root: Root, shard: ShardInfo, n_classes: int) -> Iterator[Sample]:
    """The samples of one shard in stored order, read with webdataset's tar iterators.

    A truncated or unreadable tar, a sample without an image or a class, or a class index outside the
    class list is a DataError naming the shard and the sample."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    where = _join(root, shard.file)
    key, count = None, 0
    try:
        with _open(root, shard.file) as fh:
            files = ({**member, "__url__": where} for member in tar_file_iterator(fh))
            for sample in group_by_keys(files):
                key = sample.get("__key__")
                count += 1
                yield _sample(sample, shard.file, n_classes)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        after = f" after sample {key}" if key is not None else ""
        why = str(exc).split(" @ ")[0]  # webdataset appends the file object's repr
        raise DataError(f"{where}: unreadable or truncated tar{after} ({type(exc).__name__}: {why}); "
                        "re-pack or re-fetch this shard") from exc
    if count != shard.count:  # a tar cut at a member boundary reads cleanly: the count tells
        raise DataError(f"{where}: holds {count} samples, index.json says {shard.count} (truncated, or not the "
                        "shard the index describes); re-pack or re-fetch this shard")


def _sample(raw: dict[str, Any], shard: str, n_classes: int) -> Sample:
    key = str(raw.get("__key__"))
    images = [k for k in raw if not k.startswith("__") and k not in ("cls", "path")]
    if len(images) != 1:
        what = "no image" if not images else f"{len(images)} images ({', '.join(sorted(images))})"
        raise DataError(f"{shard}: sample {key} has {what}; each sample is one <key>.<image ext>, .cls and .path")
    if "cls" not in raw:
        raise DataError(f"{shard}: sample {key} has no .cls (class index)")
    try:
        label = int(raw["cls"].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{shard}: sample {key}: .cls is not a class index ({raw['cls'][:20]!r})") from exc
    if not 0 <= label < n_classes:
        raise DataError(f"{shard}: sample {key}: unknown class {label} (the index lists {n_classes} classes)")
    name = raw["path"].decode("utf-8", "replace") if "path" in raw else key
    for what, value in ((".path", name), ("member", f"{key}.{images[0]}")):
        if reason := unsafe_path_reason(value):
            raise DataError(f"{shard}: sample {shown(key)}: {what} {shown(value)!r} is not a plain relative path "
                            f"({reason}); the shard is crafted or corrupt: re-pack the dataset from its ImageFolder")
    return Sample(key=key, name=name, label=label, data=raw[images[0]], ext=images[0], shard=shard)


def verify_shard(root: Root, shard: ShardInfo) -> None:
    """The shard's bytes are the ones the index recorded (size and sha256)."""
    digest, size = hashlib.sha256(), 0
    with _open(root, shard.file) as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    if size != shard.bytes or digest.hexdigest() != shard.sha256:
        raise DataError(f"{_join(root, shard.file)}: does not match index.json ({size} bytes, sha256 "
                        f"{digest.hexdigest()[:12]}...; index: {shard.bytes} bytes, {shard.sha256[:12]}...): corrupt "
                        "or replaced; re-fetch or re-pack")


def split_items(root: Root, split: str, cache_dir: Path | None = None) -> list[tuple[str, int]]:
    """(name, label) of every sample of `split`, in index order (the sample keys' order).

    With `cache_dir`, each shard's list is remembered there under the shard's sha256 from the index
    (shard-items/<sha256>.json), so the later steps of a run list a split without reading its shards again;
    a shard whose bytes differ from its index entry is caught by verify_shard (validation) and by
    iter_shard's count, not here."""
    index = read_index(root)
    items: list[tuple[str, int]] = []
    for shard in split_of(root, index, split).shards:
        memo = Path(cache_dir) / "shard-items" / f"{shard.sha256}.json" if cache_dir is not None else None
        known = _read_items(memo, shard, len(index.classes)) if memo is not None else None
        if known is None:
            known = [(s.name, s.label) for s in iter_shard(root, shard, len(index.classes))]
            if memo is not None:
                text = json.dumps(known, separators=(",", ":"))
                write_atomic(memo, lambda fh: fh.write(text.encode()))  # noqa: B023 - called before the loop goes on
        items.extend(known)
    return items


def _read_items(memo: Path, shard: ShardInfo, n_classes: int) -> list[tuple[str, int]] | None:
    try:
        raw = json.loads(memo.read_text(encoding="utf-8"))
        known = [(str(name), int(label)) for name, label in raw]
    except (OSError, ValueError, TypeError):
        return None  # absent or unreadable: read the shard again and rewrite it
    if len(known) != shard.count or not all(0 <= label < n_classes and unsafe_path_reason(name) is None
                                            for name, label in known):
        return None  # read the shard again, which refuses an unsafe name
    return known


# ---- packing -----------------------------------------------------------------------------------------------

def pack(data_dir: Path, out_dir: Path, target_shard_bytes: int = DEFAULT_SHARD_BYTES) -> ShardIndex:
    """Pack the ImageFolder `data_dir` into shards in `out_dir` (replacing only a folder pack wrote)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if target_shard_bytes < 1:
        raise DataError(f"--shard-size {target_shard_bytes}: must be at least 1 byte")
    if is_sharded(data_dir):
        raise DataError(f"{data_dir}: already packed (it has {INDEX}); pack reads an ImageFolder")
    names = tuple(s for s in SPLITS if (data_dir / s).is_dir())
    if not names:
        raise DataError(f"{data_dir}: no split folders ({', '.join(SPLITS)}); "
                        f"expected {data_dir}/<split>/<class>/<image>")
    classes = list_classes(data_dir, names[0])
    for split in names[1:]:
        other = list_classes(data_dir, split)
        if other != classes:
            raise DataError(f"{data_dir / split}: classes {list(other)} differ from {names[0]}'s {list(classes)}")
    _check_out(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.packing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        listed = {s: _ordered(list_split(data_dir, s, classes), data_dir / s) for s in names}
        total = sum(len(v) for v in listed.values())
        with tqdm(total=total, desc="packing", unit="img", disable=not progress_enabled(), leave=False) as bar:
            index = ShardIndex(classes=classes, target_shard_bytes=target_shard_bytes, splits={
                s: _pack_split(items, staging, s, classes, target_shard_bytes, bar) for s, items in listed.items()})
        (staging / INDEX).write_text(json.dumps(index.to_dict(), indent=1, sort_keys=True) + "\n")
        _swap(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index


def pack_subset(root: Root, index: ShardIndex, split: str, keep: frozenset[str], counts: tuple[int, ...],
                out_dir: Path) -> tuple[ShardInfo, ...]:
    """The samples of `split` (of `root`, whose index is `index`) named in `keep` (`counts` of them in each
    shard), copied once into a packed dataset at `out_dir`, so that an epoch of a per-class subset reads only
    the subset.

    Each source shard becomes one tar of the same name (empty where it keeps nothing) holding its kept
    samples in stored order under their keys: streaming it yields exactly what streaming the source and
    dropping the others would. One already at `out_dir` with these counts is reused; a new one is written
    aside and renamed into place (a concurrent writer's identical copy may win)."""
    if done := _subset_packed(out_dir, split, counts):
        return done
    staging = out_dir.parent / f".{out_dir.name}.packing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / split).mkdir(parents=True)
        written = []
        for shard, count in zip(index.splits[split].shards, counts, strict=True):
            writer = _ShardWriter(staging, shard.file, index.classes)
            samples = iter_shard(root, shard, len(index.classes)) if count else ()
            for sample in samples:
                if sample.name in keep:
                    writer.add(sample.key, sample.name, sample.label, sample.ext, sample.data)
            written.append(writer.close())
        class_counts = {c: sum(s.class_counts[c] for s in written) for c in index.classes}
        subset = ShardIndex(classes=index.classes, target_shard_bytes=index.target_shard_bytes, splits={
            split: SplitIndex(count=sum(counts), class_counts=class_counts, shards=tuple(written))})
        (staging / INDEX).write_text(json.dumps(subset.to_dict(), indent=1, sort_keys=True) + "\n")
        if not _subset_packed(out_dir, split, counts):  # else a concurrent writer's copy is in place
            _swap(staging, out_dir)  # over an incomplete or stale copy
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_index(out_dir).splits[split].shards


def _subset_packed(out_dir: Path, split: str, counts: tuple[int, ...]) -> tuple[ShardInfo, ...]:
    """pack_subset's copy at `out_dir` when it is complete and holds `counts`, else ()."""
    with contextlib.suppress(DataError, KeyError):
        done = read_index(out_dir).splits[split].shards
        if tuple(s.count for s in done) == counts:
            return done
    return ()

def _check_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _written_by_pack(out_dir):
        raise DataError(f"{out_dir}: exists and holds files pack did not write (no Headstart {INDEX}, or files "
                        "it does not list); pack never replaces them: choose another --out or empty it yourself")


def _written_by_pack(folder: Path) -> bool:
    """Our index, and nothing but it and the shards it lists: a file someone added is never swept away."""
    try:
        index = read_index(folder)
    except DataError:
        return False
    ours = {INDEX} | {i.file for s in index.splits.values() for i in s.shards}
    dirs = {Path(f).parent.as_posix() for f in ours} - {"."}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if rel not in (dirs if path.is_dir() and not path.is_symlink() else ours):
            return False
    return True


def _swap(staging: Path, out_dir: Path) -> None:
    """Put the new shards in place; an earlier pack's folder goes only once the new one is complete."""
    old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _ordered(items: list[tuple[Path, int]], split_dir: Path) -> list[tuple[str, Path, int]]:
    named = [(p.relative_to(split_dir).as_posix(), p, label) for p, label in items]
    return sorted(named, key=lambda it: hashlib.sha256(it[0].encode()).digest())


def _pack_split(
    items: list[tuple[str, Path, int]], out: Path, split: str, classes: tuple[str, ...], target: int, bar: tqdm,
) -> SplitIndex:
    (out / split).mkdir(parents=True, exist_ok=True)
    shards: list[ShardInfo] = []
    writer: _ShardWriter | None = None
    for seq, (name, path, label) in enumerate(items):
        if reason := unsafe_path_reason(name):
            raise DataError(f"{shown(str(path))}: {reason}; rename it (headstart validate lists every such name) "
                            "and pack again")
        if writer is None:
            writer = _ShardWriter(out, f"{split}/{split}-{len(shards):06d}.tar", classes)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc})") from exc
        writer.add(f"{seq:09d}", name, label, path.suffix.lower().lstrip("."), data)
        bar.update(1)
        if writer.size >= target:
            shards.append(writer.close())
            writer = None
    if writer is not None:
        shards.append(writer.close())
    counts = {c: sum(s.class_counts[c] for s in shards) for c in classes}
    return SplitIndex(count=len(items), class_counts=counts, shards=tuple(shards))


class _ShardWriter:
    """One tar with normalised headers (mtime 0, root-owned, 0644): the same input, the same bytes."""

    def __init__(self, root: Path, rel: str, classes: tuple[str, ...]) -> None:
        self.root, self.rel, self.classes = root, rel, classes
        self.tar = tarfile.open(root / rel, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - closed by close()
        self.size, self.count = 0, 0
        self.class_counts = dict.fromkeys(classes, 0)

    def add(self, key: str, name: str, label: int, ext: str, data: bytes) -> None:
        for member, payload in ((f"{key}.{ext}", data), (f"{key}.cls", str(label).encode()),
                                (f"{key}.path", name.encode("utf-8"))):
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(payload), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(payload))
            self.size += _BLOCK + -(-len(payload) // _BLOCK) * _BLOCK
        self.count += 1
        self.class_counts[self.classes[label]] += 1

    def close(self) -> ShardInfo:
        self.tar.close()
        path = self.root / self.rel
        with open(path, "rb") as fh:  # in blocks: a shard is hundreds of MB
            sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        return ShardInfo(file=self.rel, count=self.count, bytes=path.stat().st_size, sha256=sha256,
                         class_counts=self.class_counts)
