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
import webdataset as wds

from headstart.data import shards
from headstart.errors import DataError

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
    assert "packed" in run.stderr and "dvc add" in run.stderr
    assert shards.read_index(tmp_path / "s").splits["val"].count == 12
    bad = subprocess.run([*cmd[:-1], "lots"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--shard-size 'lots'" in bad.stderr and "Traceback" not in bad.stderr
