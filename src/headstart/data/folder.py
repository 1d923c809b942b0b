"""An ImageFolder (`<root>/<split>/<class>/<file>`) as a dataset: listed from its directories, decoded into
memory with the tensor cache (headstart.data.imagefolder), or streamed file by file through DataLoader
workers as virtual shards (headstart.data.parts.FileParts), like torchvision's ImageFolder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from headstart.data import imagefolder
from headstart.data.listing import Listing
from headstart.data.parts import DEFAULT_SHUFFLE_BUFFER, FileParts, part_size

if TYPE_CHECKING:  # torch, loaded where a split is loaded or streamed: validation only lists
    from headstart.data.imagefolder import Split
    from headstart.data.stream import StreamSplit
    from headstart.presets import Preset


class FolderDataset:
    form: Literal["folder", "packed"] = "folder"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FolderDataset({self.root})"

    def classes(self, split: str = "train") -> tuple[str, ...]:
        return imagefolder.list_classes(self.root, split)

    def require_classes(self, split: str, classes: tuple[str, ...], whose: str) -> None:
        imagefolder.require_classes(self.root, split, classes, whose)

    def _files(self, split: str, per_class: int | None, seed: int) -> list[tuple[Path, int]]:
        return imagefolder.per_class_subset(imagefolder.list_split(self.root, split, self.classes()), per_class, seed)

    def items(self, split: str, per_class: int | None = None, seed: int = 0,
              cache_dir: Path | None = None) -> Listing:
        """A directory listing: no image is opened. A row's stream position is the row itself."""
        files = self._files(split, per_class, seed)
        return Listing(names=[p.relative_to(self.root).as_posix() for p, _ in files],
                       labels=np.array([c for _, c in files], dtype=np.int64), positions=np.arange(len(files)))

    def count(self, split: str, per_class: int | None = None) -> int:
        return len(self._files(split, per_class, 0))  # the subset's size does not depend on the seed

    def load(self, split: str, preset: Preset, classes: tuple[str, ...], per_class: int | None = None,
             seed: int = 0, cache_dir: Path | None = None, cache_budget_bytes: int | None = None) -> Split:
        return imagefolder.load_split(self.root, split, preset, classes, per_class, seed, cache_dir=cache_dir,
                                      cache_budget_bytes=cache_budget_bytes)

    def stream(self, split: str, preset: Preset, seed: int, workers: int, per_class: int | None = None,
               shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, cache_dir: Path | None = None) -> StreamSplit:
        """The subset's files only are listed, and only they are ever read."""
        from headstart.data.stream import StreamSplit, check_workers

        check_workers(workers)
        files = self._files(split, per_class, seed)
        folder = self.root / split
        source = FileParts(root=str(self.root), split=split, names=tuple(p.relative_to(folder).as_posix()
                                                                          for p, _ in files),
                           labels=tuple(c for _, c in files), size=part_size(len(files)), digests_dir=cache_dir)
        return StreamSplit(source=source, split=split, classes=self.classes(), preset=preset, seed=seed,
                                  workers=workers, shuffle_buffer=shuffle_buffer)

    def fingerprint(self, split: str, classes: tuple[str, ...], cache_dir: Path | None = None) -> str:
        """Every image's relative path, label and bytes, in load order (each file's digest from the run's
        digest store, imagefolder.file_digests: its bytes are read once a run)."""
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"v2|{split}|{'|'.join(classes)}".encode())
        items = imagefolder.list_split(self.root, split, classes)
        for (path, label), hexed in zip(items, imagefolder.file_digests([p for p, _ in items], cache_dir), strict=True):
            digest.update(f"|{path.relative_to(self.root).as_posix()}|{label}|{hexed}".encode())
        return digest.hexdigest()

    def image_files(self, names: list[str], dest: Path) -> list[Path]:
        """The files of images named as `items` lists them: on disk already."""
        return [self.root / n for n in names]
