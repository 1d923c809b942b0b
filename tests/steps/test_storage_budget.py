"""A scheduled pipeline does not fill its disk: a finished run's checkpoints are pruned to its final one and
only the newest finished runs keep theirs; the tensor cache stays under its budget (least recently used
arrays go first) and loses the temporaries of killed writes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.config import load_params
from headstart.data.imagefolder import list_classes, load_split
from headstart.presets import Preset
from headstart.steps import train

from ..conftest import make_imagefolder

ROOT = Path(__file__).resolve().parents[2]


def _bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def test_ten_weekly_runs_on_changing_data_keep_the_checkpoint_and_cache_folders_under_the_budget(tmp_path: Path):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 4, "val": 2}, size=16)
    ckpt, cache = tmp_path / "ckpt", tmp_path / "cache"
    # one week's decoded train and val splits: 18 images of 16x16x1 plus two .npy headers
    budget = int(2.5 * (18 * 16 * 16 + 2 * 128))
    cfg = train.config_from_params(
        load_params(ROOT / "params.yaml"), "scratch", backbone="small_cnn", weights="none", channels=1,
        image_size=16, epochs=1, patience=1, batch_size=8, tta="none", images_per_class=None,
        val_images_per_class=None, checkpoint_dir=str(ckpt), checkpoint_every_steps=1,
        tensor_cache_dir=str(cache), tensor_cache_budget_gib=budget / 2**30)
    one_checkpoint = 0
    for week in range(10):
        image = sorted((data / "train" / "circle").glob("*.png"))[week % 4]
        Image.fromarray(np.full((16, 16), 10 * week, dtype=np.uint8), mode="L").save(image)  # this week's data
        killed = cache / f"killed-write-{week}.tmp"
        killed.parent.mkdir(exist_ok=True)
        killed.write_bytes(b"\0" * 4096)  # a write killed mid-way, a day ago
        os.utime(killed, (time.time() - 86400,) * 2)
        live = cache / f"live-write-{week}.tmp"  # another process writing right now
        live.write_bytes(b"\0")
        result = train.run(cfg, data, tmp_path / f"week-{week}")
        assert result.resumed_from is None and result.epochs_run == 1
        folders = sorted(p for p in (ckpt / "scratch").iterdir() if p.is_dir())
        one_checkpoint = max(one_checkpoint, *(_bytes(f) for f in folders))
        assert len(folders) <= 2 and all(len(list(f.iterdir())) == 1 for f in folders), week
        assert _bytes(ckpt) <= 2 * one_checkpoint, week
        assert _bytes(cache, "*.npy") <= budget, week
        assert not killed.exists() and live.exists(), week
        live.unlink()
    # this week's arrays are the ones kept, and last week's finished run still resumes (nothing to train)
    assert train.run(cfg, data, tmp_path / "again").resumed_from == 1


def test_a_cache_hit_makes_an_array_recently_used_so_another_is_pruned_first(tmp_path: Path):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 2, "test": 2}, size=16)
    classes, preset, cache = list_classes(data), Preset(16, 1, (0.5,), (0.5,)), tmp_path / "cache"
    one = 6 * 16 * 16 + 128  # a split's array: 6 images plus the .npy header
    load_split(data, "train", preset, classes, cache_dir=cache, cache_budget_bytes=3 * one)
    train_file = next(cache.glob("*.npy"))
    os.utime(train_file, (time.time() - 100,) * 2)
    load_split(data, "val", preset, classes, cache_dir=cache, cache_budget_bytes=3 * one)
    val_file = next(p for p in cache.glob("*.npy") if p != train_file)
    os.utime(val_file, (time.time() - 50,) * 2)
    load_split(data, "train", preset, classes, cache_dir=cache, cache_budget_bytes=3 * one)  # a hit: used now
    load_split(data, "test", preset, classes, cache_dir=cache, cache_budget_bytes=2 * one)
    left = set(cache.glob("*.npy"))
    assert train_file in left and val_file not in left and len(left) == 2
