"""Reading straight from S3: a packed dataset `dvc push`ed to moto is read back from the
DVC remote's content-addressed objects (headstart.data.remote) with no `dvc pull` and no local cache:
the index and every sample equal the local shards', and a short training streams from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.data import remote, shards, stream
from headstart.errors import ConfigError, DataError
from headstart.presets import Preset
from headstart.steps import train

from ..conftest import make_imagefolder
from ..helpers import tiny_train_cfg
from .conftest import fresh_bucket
from .servers import sqlite_store

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def _samples(root: shards.Root, split: str) -> list[shards.Sample]:
    index = shards.read_index(root)
    return [s for info in index.splits[split].shards for s in shards.iter_shard(root, info, len(index.classes))]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, moto: str):
    """A packed dataset added and pushed from a repository, then its folder and DVC cache deleted."""
    tmp = tmp_path_factory.mktemp("remote-shards")
    with pytest.MonkeyPatch.context() as mp:
        bucket = fresh_bucket(moto, mp, "stream")
        packed = tmp / "packed"
        shards.pack(make_imagefolder(tmp / "data", per_class={"train": 6, "val": 2, "test": 2}, size=16), packed,
                    target_shard_bytes=2048)
        repo = tmp / "repo"
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
        yield packed, repo, bucket, dict(os.environ)


@pytest.fixture
def env(pushed, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "environ", dict(pushed[3]))  # the moto credentials and endpoint of the push
    return pushed[:3]


@pytest.mark.integration
def test_index_and_every_sample_stream_from_the_dvc_remote_without_a_pull(env):
    packed, repo, bucket = env
    root = remote.open_remote(repo / "shards")
    assert shards.is_sharded(root) and shards.read_index(root) == shards.read_index(packed)
    assert all(url.startswith(f"s3://{bucket}/dvcstore/files/md5/") for url in root.objects.values())
    assert len(root.objects) == 1 + sum(len(s.shards) for s in shards.read_index(packed).splits.values())
    for split in ("train", "val", "test"):
        assert _samples(root, split) == _samples(packed, split)  # keys, names, labels, bytes, shard
    for info in shards.read_index(root).splits["train"].shards:
        shards.verify_shard(root, info)
    assert not (repo / "shards").exists() and not (repo / ".dvc" / "cache").exists()
    assert remote.open_remote(repo / "shards.dvc").objects == root.objects  # the .dvc file itself works too


@pytest.mark.integration
def test_training_streams_from_the_dvc_remote(env, tmp_path: Path):
    packed, repo, _ = env
    root = remote.open_remote(repo / "shards")
    split = stream.open_split(root, "train", Preset(16, 1, (0.5,), (0.5,)), seed=1, workers=1, shuffle_buffer=4)
    seen = sum(len(y) for _, y in stream.epoch_batches(split, 0, 4, 0, 1, steps=0))
    assert seen == shards.read_index(packed).splits["train"].count
    cfg = tiny_train_cfg(data_loading="stream", loader_workers=1, image_size=16, epochs=1, max_steps=2, batch_size=4)
    result = train.run(cfg, root, tmp_path / "out")
    assert result.epochs_run == 1 and (tmp_path / "out" / "model").is_dir()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["first_step_seconds"] > 0


@pytest.mark.integration
def test_a_missing_shard_object_and_an_unpushed_version_are_named(env, tmp_path: Path):
    packed, repo, _ = env
    root = remote.open_remote(repo / "shards")
    info = shards.read_index(root).splits["train"].shards[0]
    gone = remote.RemoteRoot(root.label, {k: v for k, v in root.objects.items() if k != info.file})
    with pytest.raises(DataError, match=rf"{info.file}: shard listed in index.json is missing"):
        list(shards.iter_shard(gone, info, 3))
    unpushed = tmp_path / "other.dvc"
    unpushed.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  hash: md5\n  path: other\n")
    with pytest.raises(DataError, match="dvc push other.dvc"):
        remote.open_remote(unpushed, f"s3://{env[2]}/dvcstore")
    with pytest.raises(DataError, match="not inside a DVC repository"):
        remote.open_remote(unpushed)
    del os.environ["AWS_ENDPOINT_URL_S3"]
    with pytest.raises(ConfigError, match="export AWS_ENDPOINT_URL_S3="):
        remote.open_remote(repo / "shards")


@pytest.mark.integration
def test_headstart_train_from_dvc_remote_through_the_cli(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path_factory: pytest.TempPathFactory):
    from typer.testing import CliRunner

    from headstart.cli import app

    _, repo, _ = env
    monkeypatch.chdir(tmp_path)
    sqlite_store(tmp_path / "mlflow.db", tmp_path_factory)  # migrated
    sets = ["train.scratch.backbone=small_cnn", "train.scratch.weights=none", "train.scratch.channels=1",
            "train.shared.image_size=16", "train.shared.epochs=1", "train.shared.max_steps=2",
            "train.shared.batch_size=4", "train.shared.loader_workers=0", "train.shared.checkpoint_dir=null",
            "train.shared.tensor_cache_dir=null", "train.shared.images_per_class=null",
            "train.shared.val_images_per_class=null", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_root={tmp_path}/art"]
    res = CliRunner().invoke(app, ["train", "scratch", "--data", str(repo / "shards"), "--from-dvc-remote",
                                   "--out", str(tmp_path / "out"), "--params", str(ROOT / "params.yaml"),
                                   *[a for s in sets for a in ("--set", s)]], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "model").is_dir() and not (repo / "shards").exists()


def test_a_dvc_file_of_a_single_file_is_refused(tmp_path: Path):
    dvc_file = tmp_path / "model.dvc"
    dvc_file.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 3\n  hash: md5\n  path: model\n")
    with pytest.raises(DataError, match="tracks a file .*, not a folder"):
        remote.open_remote(dvc_file, "s3://bucket/store")
