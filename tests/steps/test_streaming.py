"""Training from shards through DataLoader workers (headstart.data.stream), and the step budget.

Tiny data: the 3-class 28 px ImageFolder of conftest, packed into shards of a few samples each, so a
split has several shards and two reader workers each get some."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from headstart.data import shards, stream
from headstart.data.dataset import load_or_stream, open_dataset
from headstart.data.imagefolder import load_split
from headstart.models import build_model, head_and_backbone_params
from headstart.presets import Preset
from headstart.steps import train
from headstart.training import recipe
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import fit

from ..conftest import make_imagefolder
from ..helpers import assert_mid_epoch_resume_is_bit_identical, tiny_engine_cfg, tiny_train_cfg

PRESET = Preset(32, 1, (0.5,), (0.5,))


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    data = make_imagefolder(root / "data")
    shards.pack(data, root / "shards", target_shard_bytes=4096)  # 28 px PNGs: about 6 samples a shard
    return root


def _train_split(packed: Path, workers: int, seed: int = 3) -> stream.StreamSplit:
    return stream.open_split(str(packed / "shards"), "train", PRESET, seed=seed, workers=workers, shuffle_buffer=8)


def _setup(packed: Path, workers: int):
    data = open_dataset(packed / "shards")
    classes = data.classes()
    torch.manual_seed(0)
    built = build_model("small_cnn", None, len(classes), in_channels=1)
    head, backbone = head_and_backbone_params(built)
    val = data.load("val", PRESET, classes)
    return built.model, head, backbone, _train_split(packed, workers), val


def _labels_of_epoch(data: stream.StreamSplit, epoch: int, skip_steps: int = 0, batch: int = 8) -> list[int]:
    steps = -(-len(data) // batch)
    return torch.cat([y for _, y in stream.epoch_batches(data, epoch, batch, 0, 1, steps, skip_steps)]).tolist()


def test_an_epoch_streams_every_sample_once_in_a_seeded_order(packed: Path):
    data = _train_split(packed, workers=2)
    assert data.parts >= 4 and len(data) == 36
    index = shards.read_index(packed / "shards")
    seen: list[int] = []
    for x, _, pos in stream.scoring_batches(data, 8):
        assert x.dtype == torch.uint8 and x.shape[1:] == (32, 32, 1)
        seen += pos.tolist()
    assert sorted(seen) == list(range(index.splits["train"].count))
    one, again = _labels_of_epoch(data, 1), _labels_of_epoch(_train_split(packed, workers=2), 1)
    assert one == again and len(one) == 36
    assert sorted(one) == sorted(_labels_of_epoch(data, 2))
    first_two = [torch.cat([y for _, y in stream.epoch_batches(data, e, 36, 0, 1, 1)]) for e in (1, 2)]
    assert not torch.equal(first_two[0], first_two[1])  # another epoch, another order


def test_resume_plan_restarts_the_round_robin_where_it_stopped(packed: Path):
    # three streams of 5, 2 and 4 samples in chunks of 2: s0 s1 s2 | s0 s2 | s0 (s1 is done after one chunk)
    assert stream.resume_plan([5, 2, 4], 2, 0) == ([0, 0, 0], [0, 1, 2], 0)
    assert stream.resume_plan([5, 2, 4], 2, 7) == ([1, 1, 1], [0, 2], 1)  # inside s0's second chunk
    assert stream.resume_plan([5, 2, 4], 2, 9) == ([2, 1, 1], [2, 0], 1)  # inside s2's second: s2 goes first
    assert stream.resume_plan([5, 2, 4], 2, 10) == ([2, 1, 2], [0], 0)
    assert stream.resume_plan([5, 2, 4], 2, 11) == ([3, 1, 2], [], 0)
    data = _train_split(packed, workers=2)
    full = _labels_of_epoch(data, 2)
    for step in (1, 2, 3):  # skipping k steps gives exactly the tail of the uninterrupted epoch
        assert _labels_of_epoch(data, 2, skip_steps=step) == full[step * 8 :]


def test_mid_epoch_resume_on_shards_is_bit_identical_on_cpu(packed: Path, tmp_path: Path):
    assert_mid_epoch_resume_is_bit_identical(lambda workers: _setup(packed, workers=workers), PRESET, tmp_path)


def test_max_steps_ends_training_checkpointed_and_a_rerun_trains_no_further(packed: Path, tmp_path: Path):
    cfg = dataclasses.replace(tiny_engine_cfg(epochs=4, batch_size=8, patience=10, seed=3, probe_epochs=0), max_steps=7)
    model, head, backbone, tr, va = _setup(packed, workers=0)
    steps: list[int] = []
    ckpt = Checkpointer(tmp_path / "c", "fp")
    result = fit(model, head, backbone, PRESET, tr, va, cfg, on_epoch=lambda s: steps.append(s.epoch),
                 checkpointer=ckpt)
    assert [h.epoch for h in result.history] == [1, 2] == steps  # 5 steps, then 2 of epoch 2, scored as its end
    assert sorted(p.name for p in (tmp_path / "c" / "fp").glob("*.pt"))[-1] == "epoch-0002.pt"
    saved = torch.load(tmp_path / "c" / "fp" / "epoch-0002.pt", weights_only=False)
    assert saved["step"] == 7
    assert result.history[-1].lr == pytest.approx(cfg.lr_head * 0.01, rel=0.2)  # the cosine ends at the budget
    model, head, backbone, tr, va = _setup(packed, workers=0)
    again = fit(model, head, backbone, PRESET, tr, va, cfg, checkpointer=Checkpointer(tmp_path / "c", "fp"))
    assert [h.epoch for h in again.history] == [1, 2]


def test_the_train_step_streams_a_packed_split_when_asked(packed: Path, tmp_path: Path):
    cfg = tiny_train_cfg(data_loading="stream", loader_workers=2, images_per_class=8, epochs=1)
    sharded, folder = open_dataset(packed / "shards"), open_dataset(packed / "data")
    classes = sharded.classes()
    assert classes == folder.classes()
    split = load_or_stream(sharded, "train", PRESET, classes, 8, recipe.load_options(cfg))
    assert isinstance(split, stream.StreamSplit) and len(split) == 24 and split.workers == 2
    in_memory = load_split(packed / "data", "train", PRESET, classes, 8, cfg.seed)
    names = {n.split("/", 1)[1] for n in in_memory.paths}
    assert split.keep == names  # the same per-class subset as the ImageFolder's
    auto_cfg = tiny_train_cfg(data_loading="auto")
    auto = load_or_stream(sharded, "train", PRESET, classes, None, recipe.load_options(auto_cfg))
    assert not isinstance(auto, stream.StreamSplit)  # 36 small images: decoded into memory...
    packed_rows = sharded.load("train", PRESET, classes, 8, cfg.seed)
    assert packed_rows.paths == in_memory.paths  # ...the same rows, labels and pixels as the ImageFolder's
    assert torch.equal(packed_rows.y, in_memory.y) and torch.equal(packed_rows.x, in_memory.x)
    result = train.run(cfg, packed / "shards", tmp_path / "out")
    assert result.epochs_run == 1 and (tmp_path / "out" / "model").is_dir()
