"""A packed dataset (tar shards and index.json, headstart.data.shards; a folder, s3:// or a DVC remote) as a
dataset: counted from its index, listed from its shards (remembered per shard sha256), decoded into memory
with the tensor cache, or streamed shard by shard through DataLoader workers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import numpy as np
import PIL

from headstart.data import imagefolder, shards
from headstart.data.imagefolder import Split, decode_cached
from headstart.data.listing import Listing
from headstart.data.parts import DEFAULT_SHUFFLE_BUFFER
from headstart.data.suffixes import IMAGE_SUFFIXES
from headstart.errors import DataError

if TYPE_CHECKING:  # torch, loaded where a split is loaded or streamed: validation only lists
    from headstart.data.stream import StreamSplit
    from headstart.presets import Preset


class PackedDataset:
    form: Literal["folder", "packed"] = "packed"

    def __init__(self, root: shards.Root) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"PackedDataset({self.root})"

    def classes(self, split: str = "train") -> tuple[str, ...]:
        """The index's class list: every split of a packed dataset has the same one."""
        return shards.read_index(self.root).classes

    def require_classes(self, split: str, classes: tuple[str, ...], whose: str) -> None:
        imagefolder.require_classes(self.root, split, classes, whose, found=self.classes(split))

    @staticmethod
    def _subset(listed: list[tuple[str, int]], per_class: int | None, seed: int) -> list[tuple[PurePosixPath, int]]:
        """The per-class subset of a listing, by the rule an ImageFolder's files are chosen by (on the names)."""
        return imagefolder.per_class_subset([(PurePosixPath(n), c) for n, c in listed], per_class, seed)

    def items(self, split: str, per_class: int | None = None, seed: int = 0,
              cache_dir: Path | None = None) -> Listing:
        """The rows its ImageFolder would give (class by class, "<split>/<class>/<file>"), each with its
        position in the index (the order the stream delivers)."""
        listed = shards.split_items(self.root, split, cache_dir)
        if per_class is not None:
            chosen = {str(p) for p, _ in self._subset(listed, per_class, seed)}
            listed = [(n, c) if n in chosen else ("", -1) for n, c in listed]  # positions stay the split's
        labels = np.fromiter((label for _, label in listed), dtype=np.int64, count=len(listed))
        rows = np.lexsort((np.array([name for name, _ in listed]), labels))  # its ImageFolder's order: class, name
        rows = rows[labels[rows] >= 0]
        return Listing(names=[f"{split}/{listed[i][0]}" for i in rows], labels=labels[rows], positions=rows)

    def count(self, split: str, per_class: int | None = None) -> int:
        """From the index's counts: no shard is read (a per-class subset takes up to `per_class` of each class)."""
        counts = shards.split_of(self.root, shards.read_index(self.root), split).class_counts.values()
        return sum(counts) if per_class is None else sum(min(per_class, n) for n in counts)

    def load(self, split: str, preset: Preset, classes: tuple[str, ...], per_class: int | None = None,
             seed: int = 0, cache_dir: Path | None = None, cache_budget_bytes: int | None = None) -> Split:
        """The same subset rule (on the file names), the same rows in the same order as its ImageFolder gives,
        decoded from the shards; the cache key comes from the index's shard sha256s and the chosen names; with
        `cache_dir` the names are remembered too, so a warm cache reads no shard."""
        import torch

        self.require_classes(split, classes, "the requested class list")
        root = self.root
        index = shards.read_index(root)
        entries = shards.split_of(root, index, split).shards
        chosen = sorted(self._subset(shards.split_items(self.root, split, cache_dir), per_class, seed),
                        key=lambda it: (it[1], str(it[0])))
        rows = {str(p): i for i, (p, _) in enumerate(chosen)}
        if len(rows) != len(chosen):
            twice = next(str(p) for i, (p, _) in enumerate(chosen) if rows[str(p)] != i)
            raise DataError(f"{root}: split {split!r} holds {twice!r} more than once (.path members); re-pack it")
        rel = tuple(f"{split}/{p}" for p, _ in chosen)

        def key() -> str:  # the index's shard sha256s and the chosen names
            text = f"packed-v1|{PIL.__version__}|{preset.image_size}|{preset.channels}|{split}"
            text += "".join(f"|{shard.file}|{shard.sha256}" for shard in entries) + "|".join(rel)
            return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()

        def images() -> Iterator[tuple[int, np.ndarray]]:
            for shard in entries:
                for sample in shards.iter_shard(root, shard, len(classes)):
                    row = rows.pop(sample.name, None)
                    if row is not None:
                        try:
                            image = preset.decode(sample.data)
                        except DataError as exc:
                            raise DataError(f"{root}/{shard.file}: sample {sample.key} ({sample.name}): {exc}") from exc
                        yield row, image
            if rows:  # a shard replaced since it was listed: never hand back unfilled rows
                raise DataError(f"{root}: split {split!r}: {len(rows)} listed samples not found in its shards (first: "
                                f"{next(iter(rows))}); the shards differ from index.json: re-fetch or re-pack")

        x = decode_cached(split, (len(chosen), preset.image_size, preset.image_size, preset.channels), cache_dir, key,
                          images, cache_budget_bytes)
        return Split(x=torch.from_numpy(x), y=torch.tensor([c for _, c in chosen], dtype=torch.int64), paths=rel,
                     classes=classes)

    def stream(self, split: str, preset: Preset, seed: int, workers: int, per_class: int | None = None,
               shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, cache_dir: Path | None = None) -> StreamSplit:
        """A per-class subset is listed once (the listing gives both the kept names and each shard's count)
        and, with `cache_dir`, copied there once so that an epoch reads only it (stream.open_split)."""
        from headstart.data.stream import open_split

        keep, listed = None, None
        if per_class is not None:
            listed = shards.split_items(self.root, split, cache_dir)
            keep = frozenset(str(p) for p, _ in self._subset(listed, per_class, seed))
        return open_split(self.root, split, preset, seed, workers, keep, shuffle_buffer, cache_dir, listed)

    def fingerprint(self, split: str, classes: tuple[str, ...], cache_dir: Path | None = None) -> str:
        """The class lists and the index's shards (file, sample count, sha256; validation checks the shards
        against the index)."""
        index = shards.read_index(self.root)
        text = f"v2|{split}|{'|'.join(classes)}|shards|{'|'.join(index.classes)}" + "".join(
            f"|{entry.file}|{entry.count}|{entry.sha256}" for entry in shards.split_of(self.root, index, split).shards)
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()

    def image_files(self, names: list[str], dest: Path) -> list[Path]:
        """The files of images named as `items` lists them, streamed out of their splits' shards (stopping once
        all are found) into `dest` as <i><ext>, i the name's position in `names`."""
        index = shards.read_index(self.root)
        position = {n: i for i, n in enumerate(names)}
        found: dict[str, Path] = {}
        for split in sorted({n.split("/", 1)[0] for n in names}):
            for info in index.splits[split].shards if split in index.splits else ():
                if len(found) == len(position):
                    break
                for sample in shards.iter_shard(self.root, info, len(index.classes)):
                    name = f"{split}/{sample.name}"
                    if name in position and name not in found:
                        suffix = f".{sample.ext}" if f".{sample.ext}" in IMAGE_SUFFIXES else ""
                        found[name] = dest / f"{position[name]}{suffix}"
                        found[name].write_bytes(sample.data)
        if missing := sorted(set(position) - set(found)):
            raise DataError(f"{self.root}: the evaluation's test images {missing[:3]} are not in the packed "
                            "dataset's shards; re-run evaluate on this data")
        return [found[n] for n in names]
