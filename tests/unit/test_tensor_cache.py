"""The uint8 tensor cache of `load_split`: same tensors as decoding, keyed by content and preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headstart.data.imagefolder import load_split
from headstart.presets import Preset

CLASSES = ("a", "b")


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        (root / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / "train" / cls / f"{i}.png")
    return root


def test_warm_read_equals_decode_and_changes_invalidate(tmp_path: Path) -> None:
    data, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    preset = Preset(12, 3, (0.5,) * 3, (0.5,) * 3)
    plain = load_split(data, "train", preset, CLASSES)
    cold = load_split(data, "train", preset, CLASSES, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1
    warm = load_split(data, "train", preset, CLASSES, cache_dir=cache)
    assert torch.equal(plain.x, cold.x) and torch.equal(plain.x, warm.x)
    assert torch.equal(plain.y, warm.y) and plain.paths == warm.paths

    load_split(data, "train", Preset(10, 1, (0.5,), (0.5,)), CLASSES, cache_dir=cache)  # another preset
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(data / "train" / "a" / "0.png")  # changed content
    changed = load_split(data, "train", preset, CLASSES, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 3
    assert changed.x[0].max() == 0 and torch.equal(changed.x[1:], plain.x[1:])


def test_corrupt_or_oversized_cache_falls_back_to_decoding(tmp_path: Path) -> None:
    data, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    preset = Preset(12, 3, (0.5,) * 3, (0.5,) * 3)
    first = load_split(data, "train", preset, CLASSES, cache_dir=cache)
    (npy,) = cache.glob("*.npy")
    npy.write_bytes(b"not an npy file")
    assert torch.equal(load_split(data, "train", preset, CLASSES, cache_dir=cache).x, first.x)
    assert np.load(npy).shape == tuple(first.x.shape)  # rewritten
    other = tmp_path / "other"
    load_split(data, "train", preset, CLASSES, cache_dir=other, cache_max_bytes=10)
    assert not other.exists()
