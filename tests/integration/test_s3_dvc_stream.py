"""Reading straight from S3 (issue 16, item 5): a packed dataset `dvc push`ed to moto is streamed back from
the DVC remote's content-addressed objects, with no `dvc pull` and no local cache, sample for sample equal
to the local shards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.data import remote, shards
from headstart.errors import DataError

from ..conftest import make_imagefolder
from .conftest import fresh_bucket

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def _local_samples(root: Path, split: str) -> list[shards.Sample]:
    index = shards.read_index(root)
    return [s for info in index.splits[split].shards for s in shards.iter_shard(root, info, len(index.classes))]


def test_item16_stream_a_dvc_pushed_packed_dataset_without_dvc_pull(tmp_path, moto, monkeypatch):
    bucket = fresh_bucket(moto, monkeypatch, "dvcstream")
    packed = tmp_path / "packed"
    shards.pack(make_imagefolder(tmp_path / "data", per_class={"train": 6, "val": 2, "test": 2}), packed,
                target_shard_bytes=4096)
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    shutil.copytree(packed, repo / "shards")
    _run(["dvc", "add", "shards"], repo)
    _run(["dvc", "remote", "add", "-d", "store", f"s3://{bucket}/dvcstore"], repo)
    _run(["dvc", "remote", "modify", "store", "endpointurl", moto], repo)
    _run(["dvc", "push"], repo)
    shutil.rmtree(repo / "shards")  # nothing local: the data lives only in the remote
    shutil.rmtree(repo / ".dvc" / "cache")

    ds = remote.open_dvc(repo / "shards.dvc")
    assert ds.index == shards.read_index(packed)
    assert ds.remote_url == f"s3://{bucket}/dvcstore"
    assert all(uri.startswith(f"s3://{bucket}/dvcstore/files/md5/") for uri in ds.objects.values())
    for split in ("train", "val", "test"):
        assert len(ds.index.splits[split].shards) >= 1
        assert list(ds.iter_split(split)) == _local_samples(packed, split)  # keys, names, labels, bytes, shard
    for info in ds.index.splits["train"].shards:
        ds.verify_shard(info)
    assert not (repo / "shards").exists() and not (repo / ".dvc" / "cache").exists()

    # an index entry the DVC version lacks is named, not a bare S3 error
    info = ds.index.splits["train"].shards[0]
    gone = {k: v for k, v in ds.objects.items() if k != info.file}
    with pytest.raises(DataError, match=rf"lists {info.file}, which the DVC version does not contain"):
        list(remote.RemoteShards(ds.dvc_file, ds.remote_url, gone, ds.index).iter_shard(info, 3))


def test_item16_a_dvc_file_of_a_single_file_is_refused(tmp_path):
    dvc_file = tmp_path / "model.dvc"
    dvc_file.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 3\n  hash: md5\n  path: model\n")
    with pytest.raises(DataError, match="tracks a file, not a folder"):
        remote.open_dvc(dvc_file, "s3://bucket/store")
