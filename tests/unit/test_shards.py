"""Packing an ImageFolder into WebDataset shards (headstart data pack) and reading them back."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds

from headstart.data import shards
from headstart.data.dataset import open_dataset
from headstart.data.imagefolder import list_classes, load_split
from headstart.errors import DataError
from headstart.presets import Preset

from ..conftest import make_imagefolder


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "data")


def test_packing_is_deterministic_and_the_index_counts_what_the_shards_hold(data: Path, tmp_path: Path):
    one = shards.pack(data, tmp_path / "a", target_shard_bytes=4096)
    shards.pack(data, tmp_path / "b", target_shard_bytes=4096)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")  # byte-identical: a stable DVC hash
    index = shards.read_index(tmp_path / "a")
    assert index == one and index.classes == ("circle", "square", "stripes")
    train = index.splits["train"]
    assert train.count == 36 and train.class_counts == {"circle": 12, "square": 12, "stripes": 12}
    assert len(train.shards) > 2 and sum(s.count for s in train.shards) == 36
    for info in train.shards:
        shards.verify_shard(tmp_path / "a", info)
        assert info.sha256 == hashlib.sha256((tmp_path / "a" / info.file).read_bytes()).hexdigest()
    # the format is WebDataset's own: its reader sees the same samples
    first = tmp_path / "a" / train.shards[0].file
    samples = list(wds.WebDataset(str(first), shardshuffle=False))
    assert len(samples) == train.shards[0].count and {"png", "cls", "path"} <= set(samples[0])


def test_samples_round_trip_byte_for_byte_in_a_class_mixed_order(data: Path, tmp_path: Path):
    index = shards.pack(data, tmp_path / "s", target_shard_bytes=4096)
    got = [s for info in index.splits["test"].shards for s in shards.iter_shard(tmp_path / "s", info, 3)]
    assert [s.key for s in got] == [f"{i:09d}" for i in range(18)]
    for s in got:
        assert s.data == (data / "test" / s.name).read_bytes()
        assert index.classes[s.label] == s.name.split("/")[0] and s.ext == "png"
    assert len({s.label for s in got[:6]}) > 1  # not class after class
    assert shards.split_items(tmp_path / "s", "test") == [(s.name, s.label) for s in got]


def test_pack_refuses_a_folder_it_did_not_write_and_replaces_its_own(data: Path, tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="did not write"):
        shards.pack(data, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    shards.pack(data, tmp_path / "s", target_shard_bytes=4096)
    stray = tmp_path / "s" / "train" / "notes.txt"  # a file a person put inside a folder pack wrote
    stray.write_text("mine")
    with pytest.raises(DataError, match="did not write"):
        shards.pack(data, tmp_path / "s")
    assert stray.read_text() == "mine"
    stray.unlink()
    shards.pack(data, tmp_path / "s")  # one shard a split now: the old shard files are gone
    assert sorted(p.name for p in (tmp_path / "s" / "train").iterdir()) == ["train-000000.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mine", "s"]  # no staging left behind


def test_a_truncated_shard_or_a_bad_sample_is_named(data: Path, tmp_path: Path):
    index = shards.pack(data, tmp_path / "s", target_shard_bytes=4096)
    info = index.splits["train"].shards[0]
    path = tmp_path / "s" / info.file
    full = path.read_bytes()
    for cut in (700, 1500, 2048):  # inside a header, inside a payload, on a member boundary
        path.write_bytes(full[:cut])
        with pytest.raises(DataError, match=info.file):
            list(shards.iter_shard(tmp_path / "s", info, 3))
        with pytest.raises(DataError, match="does not match index.json"):
            shards.verify_shard(tmp_path / "s", info)
    with tarfile.open(path, "w") as tar:  # a sample whose class is not in the list, one without an image
        for name, payload in (("000000000.png", full[:10]), ("000000000.cls", b"7"), ("000000001.cls", b"0")):
            member = tarfile.TarInfo(name)
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(DataError, match="sample 000000000: unknown class 7"):
        list(shards.iter_shard(tmp_path / "s", info, 3))
    with pytest.raises(DataError, match="sample 000000001 has no image"):
        list(shards.iter_shard(tmp_path / "s", info, 8))


def test_a_malformed_index_is_named(tmp_path: Path):
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="index.json: not a Headstart shard index"):
        shards.read_index(tmp_path)
    (tmp_path / "index.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        shards.read_index(tmp_path)


def test_headstart_data_pack_through_the_cli(data: Path, tmp_path: Path):
    cmd = [sys.executable, "-m", "headstart.cli", "data", "pack", "--data", str(data), "--out", str(tmp_path / "s"),
           "--shard-size", "8kB"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"HEADSTART_NO_PROGRESS": "1",
                                                                            "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    index = shards.read_index(tmp_path / "s")
    n_shards = sum(len(s.shards) for s in index.splits.values())
    n_bytes = sum(i.bytes for s in index.splits.values() for i in s.shards)
    (line,) = run.stderr.strip().splitlines()  # one line: shards, samples, bytes, and what to do next
    assert f"66 samples in {n_shards} shards, {n_bytes} bytes" in line and "dvc add" in line
    assert index.splits["val"].count == 12
    bad = subprocess.run([*cmd[:-1], "lots"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--shard-size 'lots'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("per_class", "cached"), [(None, False), (5, False), (5, True)])
def test_a_packed_folder_loads_as_its_imagefolder(data: Path, tmp_path: Path, per_class, cached: bool):
    """Every step takes either form: the same classes, subset, labels, row order, paths and pixels."""
    packed = tmp_path / "s"
    shards.pack(data, packed, target_shard_bytes=4096)
    preset = Preset(16, 1, (0.5,), (0.5,))
    classes = list_classes(data)
    assert open_dataset(packed).classes() == classes
    cache = (lambda name: tmp_path / name) if cached else (lambda name: None)
    for split in ("train", "test"):
        a = load_split(data, split, preset, classes, per_class, seed=3, cache_dir=cache("ca"))
        b = open_dataset(packed).load(split, preset, classes, per_class, seed=3, cache_dir=cache("cb"))
        assert b.paths == a.paths and torch.equal(b.y, a.y) and torch.equal(b.x, a.x)
        assert len(a.paths) == (15 if per_class else {"train": 36, "test": 18}[split])
        assert a.paths[0].startswith(f"{split}/circle/")


def test_a_warm_cache_loads_a_packed_split_without_opening_a_shard(data: Path, tmp_path: Path, monkeypatch):
    packed, cache = tmp_path / "s", tmp_path / "cache"
    shards.pack(data, packed, target_shard_bytes=4096)
    preset, classes = Preset(16, 1, (0.5,), (0.5,)), list_classes(data)
    first = open_dataset(packed).load("train", preset, classes, 4, seed=1, cache_dir=cache)
    opened: list[str] = []
    real = shards._open

    def spy(root, rel):
        opened.append(rel)
        return real(root, rel)

    monkeypatch.setattr(shards, "_open", spy)
    again = open_dataset(packed).load("train", preset, classes, 4, seed=1, cache_dir=cache)
    assert [r for r in opened if r.endswith(".tar")] == []  # names from the memo, pixels from the tensor cache
    assert again.paths == first.paths and torch.equal(again.x, first.x) and torch.equal(again.y, first.y)
    open_dataset(packed).load("train", preset, classes, 4, seed=1)  # no cache: every shard is read
    assert len([r for r in opened if r.endswith(".tar")]) >= 2 * len(shards.read_index(packed).splits["train"].shards)


def test_a_names_memo_that_disagrees_with_the_shards_is_not_trusted(data: Path, tmp_path: Path):
    packed, cache = tmp_path / "s", tmp_path / "cache"
    index = shards.pack(data, packed, target_shard_bytes=4096)
    truth = shards.split_items(packed, "val")
    assert shards.split_items(packed, "val", cache) == truth
    first = index.splits["val"].shards[0]
    memo = cache / "shard-items" / f"{first.sha256}.json"
    memo.write_text(json.dumps([["x.png", 0]]))  # the wrong count: read the shard again
    assert shards.split_items(packed, "val", cache) == truth
    listed = json.loads(memo.read_text())
    listed[0][0] = "circle/not_there.png"  # the right count, a name the shard does not hold
    memo.write_text(json.dumps(listed))
    with pytest.raises(DataError, match="not found in its shards"):
        open_dataset(packed).load("val", Preset(16, 1, (0.5,), (0.5,)), list_classes(data), cache_dir=cache)
