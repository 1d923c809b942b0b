"""An ImageFolder streams (issue 21): DataLoader workers read and decode its files, as virtual shards
(fixed runs of files, headstart.data.parts.FileParts) through the same engine as a packed split: the seeded
order, mid-epoch resume, and a per-class subset that reads only its own files.

Tiny data: conftest's 3-class 28 px ImageFolder (12 train, 4 val, 6 test images a class)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headstart.data import parts, stream
from headstart.data.dataset import load_or_stream, open_dataset, streams
from headstart.models import build_model, head_and_backbone_params
from headstart.presets import Preset
from headstart.steps import train
from headstart.training import recipe

from ..conftest import make_imagefolder
from ..helpers import assert_mid_epoch_resume_is_bit_identical, tiny_train_cfg

PRESET = Preset(32, 1, (0.5,), (0.5,))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("folder") / "data")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image file a virtual shard read (loader_workers=0: read in this process, where this counts)."""
    log: list[str] = []
    real = parts.FileParts.read

    def counting(self, i):
        for sample in real(self, i):
            log.append(sample.name)
            yield sample

    monkeypatch.setattr(parts.FileParts, "read", counting)
    return log


def _split(folder: Path, workers: int, per_class: int | None = None) -> stream.StreamSplit:
    return open_dataset(folder).stream("train", PRESET, seed=3, workers=workers, per_class=per_class, shuffle_buffer=8)


def _setup(folder: Path, workers: int):
    data = open_dataset(folder)
    torch.manual_seed(0)
    built = build_model("small_cnn", None, 3, in_channels=1)
    head, backbone = head_and_backbone_params(built)
    return built.model, head, backbone, _split(folder, workers), data.load("val", PRESET, data.classes())


def test_an_epoch_streams_every_file_once_in_a_seeded_order_and_scoring_gives_load_order_positions(folder: Path):
    data = _split(folder, workers=2)
    assert isinstance(data.source, parts.FileParts) and len(data) == 36 and data.parts >= 4
    loaded = open_dataset(folder).load("train", PRESET, open_dataset(folder).classes())
    seen = torch.zeros(36, dtype=torch.int64)
    for x, y, pos in stream.scoring_batches(data, 8):
        assert torch.equal(x, loaded.x[pos]) and torch.equal(y, loaded.y[pos])  # position = the load-order row
        seen[pos] += 1
    assert seen.tolist() == [1] * 36

    def epoch(split: stream.StreamSplit, e: int, skip: int = 0) -> list[int]:
        return torch.cat([y for _, y in stream.epoch_batches(split, e, 8, 0, 1, 5, skip)]).tolist()

    one = epoch(data, 1)
    assert one == epoch(_split(folder, workers=2), 1) and sorted(one) == sorted(epoch(data, 2))
    assert one != epoch(data, 2)
    for step in (1, 3):
        assert epoch(data, 1, step) == one[step * 8 :]


def test_mid_epoch_resume_of_a_streamed_imagefolder_is_bit_identical_on_cpu(folder: Path, tmp_path: Path):
    assert_mid_epoch_resume_is_bit_identical(lambda workers: _setup(folder, workers=workers), PRESET, tmp_path)


def test_a_per_class_subset_reads_only_its_own_files_once_an_epoch(folder: Path, reads: list[str]):
    data = open_dataset(folder)
    split = _split(folder, workers=0, per_class=2)
    memory = data.load("train", PRESET, data.classes(), 2, seed=3)
    assert len(split) == 6 and reads == []  # opening it lists the folder, reads no image
    got = list(stream.epoch_batches(split, 1, 4, 0, 1, 2, positions=True))
    assert sorted(reads) == sorted(p.split("/", 1)[1] for p in memory.paths)  # each kept file once, no other
    assert sum(len(y) for _, y, _ in got) == 6


def test_train_streams_an_imagefolder_when_asked_and_auto_streams_it_past_the_memory_budget(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    data = open_dataset(folder)
    tiny = recipe.load_options(tiny_train_cfg(data_loading="auto", memory_budget_gib=1e-9))
    assert isinstance(load_or_stream(data, "val", PRESET, data.classes(), None, tiny), stream.StreamSplit)
    roomy = recipe.load_options(tiny_train_cfg(data_loading="auto"))
    assert not isinstance(load_or_stream(data, "val", PRESET, data.classes(), None, roomy), stream.StreamSplit)
    streamed: list[int] = []
    real = stream.epoch_batches

    def spy(split, *args, **kw):
        streamed.append(len(split))
        return real(split, *args, **kw)

    monkeypatch.setattr(stream, "epoch_batches", spy)
    for name, how in (("stream", {"data_loading": "stream"}), ("auto", {"memory_budget_gib": 1e-9})):
        streamed.clear()
        cfg = tiny_train_cfg(loader_workers=0, epochs=1, images_per_class=4, **how)
        result = train.run(cfg, folder, tmp_path / name)
        assert result.epochs_run == 1 and (tmp_path / name / "model").is_dir(), name
        assert streamed == [12], name  # one epoch of the 4-a-class subset, streamed


def test_the_rule_reads_counts_only_and_keeps_the_default_run_in_memory():
    """params.yaml's default budget (2 GiB) keeps make run's largest split, Fashion-MNIST's 10,000 test images at
    96 px x 3 (276 MB decoded), in memory, and streams a split that would not fit it."""
    default = tiny_train_cfg().memory_budget_gib
    big = Preset(96, 3, (0.5,) * 3, (0.5,) * 3)
    assert not streams("auto", 10_000, big, default)
    assert streams("auto", 1_000_000, Preset(224, 3, (0.5,) * 3, (0.5,) * 3), default)
    assert streams("stream", 1, big, default) and not streams("memory", 10**9, big, default)
