"""The bad-input corpus: a small valid ImageFolder and one broken variant per kind of defect.

Everything is generated (no committed binaries). `make_variant(kind, root)` writes
root/data (and root/state for drift) and returns the data folder; `EXPECTED[kind]` says which
check must catch it, with what status, naming which file. `corpus_config(root)` is the
ValidateConfig the corpus is meant for; the whole-loop tests reuse all three.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart.validation.config import ValidateConfig
from tests.conftest import CLASSES, make_imagefolder
from tests.helpers import params_cfg

PER_CLASS = {"train": 12, "val": 4, "test": 6}


@dataclass(frozen=True)
class Expected:
    """What validation must report for a variant: `file` must appear among the offenders."""

    check: str
    status: str  # "fail" or "warn"
    file: str
    words: tuple[str, ...]  # each must appear (case-insensitive) in that file's reason


def state_dir(root: Path) -> Path:
    return root / "state"


def corpus_config(root: Path, **overrides: Any) -> ValidateConfig:
    """params.yaml's values except the label set and the class minimum, and cache/state kept inside root;
    in-process decoding."""
    values: dict[str, Any] = {
        "label_set": CLASSES,
        "cache_dir": root / "cache",
        "state_dir": state_dir(root),
        "workers": 1,
        "min_images_per_class": 1,  # the corpus holds a few images per class
    }
    return params_cfg("validate", **(values | overrides))


def make_valid(root: Path) -> Path:
    return make_imagefolder(root / "data", per_class=dict(PER_CLASS))


def _png_declaring(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims width x height: a decompression bomb that never inflates."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _corrupt(d: Path) -> None:
    data = bytearray((d / "train/circle/train_0003.png").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    (d / "train/circle/train_0003.png").write_bytes(bytes(data))


def _truncated(d: Path) -> None:
    path = d / "train/square/train_0004.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


def _cmyk(d: Path) -> None:
    gray = Image.open(d / "train/circle/train_0005.png")
    Image.merge("CMYK", [gray, gray, gray, gray]).save(d / "train/circle/cmyk.jpg", quality=95)


def _sixteen_bit(d: Path) -> None:
    arr = np.asarray(Image.open(d / "train/square/train_0005.png"), dtype=np.uint16) * 257
    Image.fromarray(arr).save(d / "train/square/deep.png")


def _oversized(d: Path) -> None:
    tile = np.asarray(Image.open(d / "train/stripes/train_0005.png"))
    Image.fromarray(np.tile(tile, (74, 74))[:2048, :2048]).save(d / "train/stripes/huge.png")


def _symlink(d: Path) -> None:
    outside = d.parent / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(d / "val/circle/val_0000.png", outside / "secret.png")
    os.symlink(outside / "secret.png", d / "train/circle/link.png")


def _unknown_class(d: Path) -> None:
    make_imagefolder(d, per_class={"train": 3}, classes=("unicorn",), seed=123)


def _empty_split(d: Path) -> None:
    shutil.rmtree(d / "test")
    (d / "test").mkdir()


def _resized_copy(d: Path) -> None:
    img = Image.open(d / "train/square/train_0001.png")
    img.resize((56, 56), Image.Resampling.LANCZOS).save(d / "val/square/resized_copy.png")


def _reencoded_copy(d: Path) -> None:
    Image.open(d / "train/circle/train_0002.png").save(d / "test/circle/reencoded.jpg", quality=90)


def _drop(d: Path, folder: str, n: int) -> None:
    for path in sorted((d / folder).iterdir())[:n]:
        path.unlink()


def _label_drift(d: Path) -> None:
    """Accept the valid version first (its summary goes to root/state), then shift the label mix."""
    accept(d, state_dir(d.parent))
    _drop(d, "train/circle", 8)


MUTATIONS: dict[str, tuple[Callable[[Path], None], Expected]] = {
    "corrupt_file": (_corrupt, Expected("decode", "fail", "train/circle/train_0003.png", ("corrupt",))),
    "truncated_png": (_truncated, Expected("decode", "fail", "train/square/train_0004.png", ("truncated",))),
    "zero_byte": (
        lambda d: (d / "val/stripes/empty.png").write_bytes(b""),
        Expected("decode", "fail", "val/stripes/empty.png", ("zero-byte",)),
    ),
    "text_as_image": (
        lambda d: (d / "test/square/notes.png").write_text("meeting notes, not a picture\n"),
        Expected("decode", "fail", "test/square/notes.png", ("not an image",)),
    ),
    "mode_cmyk": (_cmyk, Expected("mode", "fail", "train/circle/cmyk.jpg", ("cmyk",))),
    "mode_16bit": (_sixteen_bit, Expected("mode", "fail", "train/square/deep.png", ("i;16",))),
    "oversized": (_oversized, Expected("dimensions", "fail", "train/stripes/huge.png", ("2048",))),
    "decompression_bomb": (
        lambda d: (d / "train/stripes/bomb.png").write_bytes(_png_declaring(100_000, 100_000)),
        Expected("decode", "fail", "train/stripes/bomb.png", ("decompression bomb",)),
    ),
    "unknown_class": (_unknown_class, Expected("labels", "fail", "train/unicorn/", ("unknown class",))),
    "missing_class": (
        lambda d: shutil.rmtree(d / "val/square"),
        Expected("class_counts", "fail", "val/square/", ("missing",)),
    ),
    "empty_split": (_empty_split, Expected("splits", "fail", "test/", ("empty split",))),
    "unexpected_split": (
        lambda d: shutil.copytree(d / "val", d / "holdout"),
        Expected("splits", "fail", "holdout/", ("unexpected split",)),
    ),
    "stray_file": (
        lambda d: (d / "train/circle/README.txt").write_text("notes\n"),
        Expected("stray_files", "fail", "train/circle/README.txt", ("not an image",)),
    ),
    "duplicate_across_splits": (
        lambda d: shutil.copy(d / "train/circle/train_0000.png", d / "test/circle/leak.png"),
        Expected(
            "duplicates_across_splits", "fail", "test/circle/leak.png", ("train/circle/train_0000.png",)
        ),
    ),
    "duplicate_within_split": (
        lambda d: shutil.copy(d / "train/square/train_0000.png", d / "train/square/zz_again.png"),
        Expected("duplicates_within_split", "warn", "train/square/zz_again.png", ("train_0000.png",)),
    ),
    "near_duplicate_resized": (
        _resized_copy,
        Expected("near_duplicates_across_splits", "fail", "val/square/resized_copy.png", ("train_0001",)),
    ),
    "near_duplicate_reencoded": (
        _reencoded_copy,
        Expected("near_duplicates_across_splits", "fail", "test/circle/reencoded.jpg", ("train_0002",)),
    ),
    "symlink_outside": (_symlink, Expected("symlinks", "fail", "train/circle/link.png", ("outside",))),
    "name_dotdot": (
        lambda d: shutil.copy(d / "train/circle/train_0006.png", d / "train/circle/..evil.png"),
        Expected("file_names", "fail", "train/circle/..evil.png", ("..",)),
    ),
    "name_control_char": (
        lambda d: shutil.copy(d / "train/square/train_0006.png", d / "train/square/bell\x07.png"),
        Expected("file_names", "fail", "train/square/bell\\x07.png", ("control characters",)),
    ),
    "class_imbalance": (
        lambda d: _drop(d, "train/square", 10),
        Expected("class_balance", "fail", "train/square/", ("imbalance",)),
    ),
    "label_drift": (_label_drift, Expected("label_drift", "fail", "train/", ("psi",))),
}
KINDS: tuple[str, ...] = tuple(MUTATIONS)
EXPECTED: dict[str, Expected] = {kind: expected for kind, (_, expected) in MUTATIONS.items()}


def make_variant(kind: str, root: Path) -> Path:
    """Write the valid dataset under root/data, break it one way, return the data folder."""
    if kind not in MUTATIONS:
        raise KeyError(f"unknown corpus kind {kind!r}; choose from {', '.join(KINDS)}")
    data = make_valid(root)
    MUTATIONS[kind][0](data)
    return data


def accept(data: Path, state: Path) -> Path:
    """Store `data`'s summary as the last accepted version, as a passing validation would."""
    from headstart.validation import distribution
    from headstart.validation.labels import class_counts
    from headstart.validation.layout import scan_layout
    from headstart.validation.manifest import build_manifest
    from headstart.validation.scan import scan_files
    from headstart.validation.state import save_accepted
    from headstart.validation.summary import summarize

    cfg = corpus_config(data.parent)
    layout = scan_layout(data, cfg.splits, cfg.extensions)
    facts, _ = scan_files([e.path for e in layout.entries], cfg.max_pixels, 1, None)
    manifest = build_manifest(layout.entries, facts)
    summary = summarize(
        manifest, sorted(CLASSES), class_counts(manifest), distribution.pixel_stats(manifest), {}
    )
    return save_accepted(state, summary)
