"""Read an ImageFolder split (root/<split>/<class>/<file>) into labelled uint8 tensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from headstart.errors import DataError
from headstart.presets import Preset
from headstart.progress import progress_enabled

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass(frozen=True)
class Split:
    """A decoded split: x uint8 (N, H, W, C), y int64 (N,), and where each row came from."""

    x: torch.Tensor
    y: torch.Tensor
    paths: tuple[str, ...]
    classes: tuple[str, ...]


def list_classes(data_dir: Path, split: str = "train") -> tuple[str, ...]:
    folder = data_dir / split
    if not folder.is_dir():
        raise DataError(f"{folder}: split folder not found; expected {data_dir}/<split>/<class>/<image>")
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{folder}: need at least 2 class folders, found {len(classes)}")
    return classes


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
    chosen: list[tuple[Path, int]] = []
    for cls in sorted({c for _, c in items}):
        members = [it for it in items if it[1] == cls]
        members.sort(key=lambda it: hashlib.sha256(f"{seed}:{it[0].name}".encode()).digest())
        chosen.extend(members[:per_class])
    return sorted(chosen, key=lambda it: (it[1], it[0].name))


def load_split(
    data_dir: Path, split: str, preset: Preset, classes: tuple[str, ...],
    per_class: int | None = None, seed: int = 0,
) -> Split:
    """Decode a (sub)split once into memory; small images make this far cheaper than per-epoch decoding."""
    items = per_class_subset(list_split(data_dir, split, classes), per_class, seed)
    arrays = np.empty((len(items), preset.image_size, preset.image_size, preset.channels), dtype=np.uint8)
    for i, (path, _) in enumerate(
        tqdm(items, desc=f"decoding {split}", unit="img", disable=not progress_enabled(), leave=False)
    ):
        arrays[i] = preset.decode(path)
    labels = torch.tensor([c for _, c in items], dtype=torch.int64)
    rel = tuple(str(p.relative_to(data_dir)) for p, _ in items)
    return Split(x=torch.from_numpy(arrays), y=labels, paths=rel, classes=classes)
