"""What streaming reads (issue 21): no shard before the first step, and a per-class subset's epoch reads
only the subset's samples.

Tiny data: conftest's 3-class 28 px ImageFolder (12 train, 4 val images a class) packed into shards of
about 6 samples, counted by wrapping headstart.data.shards' opener and shard reader (loader_workers=0:
everything is read in this process, where the wrappers count)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from headstart.data import shards, stream
from headstart.data.dataset import load_or_stream, open_dataset
from headstart.presets import Preset
from headstart.steps import train
from headstart.training import recipe

from ..conftest import make_imagefolder
from ..helpers import tiny_train_cfg

PRESET = Preset(32, 1, (0.5,), (0.5,))


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    shards.pack(make_imagefolder(tmp_path / "data"), tmp_path / "shards", target_shard_bytes=4096)
    return tmp_path / "shards"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every file opened under a dataset root but its index ("opened"), every sample a shard yielded ("samples")."""
    log: dict[str, list[str]] = {"opened": [], "samples": []}
    real_open, real_iter = shards._open, shards.iter_shard

    @contextlib.contextmanager
    def counting_open(root, rel):
        if rel != shards.INDEX:
            log["opened"].append(rel)
        with real_open(root, rel) as fh:
            yield fh

    def counting_iter(root, shard, n_classes) -> Iterator[shards.Sample]:
        for sample in real_iter(root, shard, n_classes):
            log["samples"].append(sample.name)
            yield sample

    monkeypatch.setattr(shards, "_open", counting_open)
    monkeypatch.setattr(shards, "iter_shard", counting_iter)
    return log


def test_no_shard_is_opened_before_the_first_training_step(packed: Path, tmp_path: Path, reads, monkeypatch):
    before_first_step: list[list[str]] = []
    real_batches = stream.epoch_batches

    def first_step_marker(*args, **kw):
        if not before_first_step:
            before_first_step.append(list(reads["opened"]))
        return real_batches(*args, **kw)

    monkeypatch.setattr(stream, "epoch_batches", first_step_marker)
    cfg = tiny_train_cfg(data_loading="stream", loader_workers=0, epochs=1, tensor_cache_dir=str(tmp_path / "cache"))
    result = train.run(cfg, packed, tmp_path / "out")
    assert result.epochs_run == 1
    n_shards = len(shards.read_index(packed).splits["train"].shards)
    assert before_first_step == [[]], f"opened before the first step: {before_first_step} ({n_shards} train shards)"
    assert any(rel.startswith("train/") for rel in reads["opened"])  # the wrapper does see the epoch's reads


def test_auto_decides_to_stream_from_the_index_counts_alone(packed: Path, reads, monkeypatch):
    cfg = tiny_train_cfg(data_loading="auto", loader_workers=0, memory_budget_gib=1e-9)  # every split is too large
    data = open_dataset(packed)
    classes = data.classes()
    for split_name, count in (("train", 36), ("val", 12)):
        split = load_or_stream(data, split_name, PRESET, classes, None, recipe.load_options(cfg))
        assert isinstance(split, stream.StreamSplit) and len(split) == count
    assert reads["opened"] == []


def test_an_epoch_of_a_per_class_subset_reads_only_the_subset(packed: Path, tmp_path: Path, reads):
    """k=2 of each of 3 classes: the epoch reads exactly those 6 samples (the split has 36), in the order
    the read-everything-and-filter stream gave, so checkpoints and resume are unaffected."""
    data = open_dataset(packed)
    cfg = tiny_train_cfg(data_loading="stream", loader_workers=0, tensor_cache_dir=str(tmp_path / "cache"))
    split = load_or_stream(data, "train", PRESET, data.classes(), 2, recipe.load_options(cfg))
    assert isinstance(split, stream.StreamSplit) and len(split) == 6 and split.keep is not None
    reads["samples"].clear()
    epoch = list(stream.epoch_batches(split, 1, 4, 0, 1, 2, positions=True))
    assert sorted(reads["samples"]) == sorted(split.keep), f"read {len(reads['samples'])} samples for a subset of 6"
    resumed = list(stream.epoch_batches(split, 1, 4, 0, 1, 2, skip_steps=1, positions=True))
    filtering = stream.open_split(str(packed), "train", PRESET, cfg.seed, 0, split.keep, cfg.shuffle_buffer)
    assert stream.fingerprint(filtering) == stream.fingerprint(split)
    for got, want in ((epoch, stream.epoch_batches(filtering, 1, 4, 0, 1, 2, positions=True)),
                      (resumed, stream.epoch_batches(filtering, 1, 4, 0, 1, 2, skip_steps=1, positions=True))):
        want = list(want)
        assert len(got) == len(want) and all(torch.equal(a, b) for g, w in zip(got, want, strict=True)
                                             for a, b in zip(g, w, strict=True))
