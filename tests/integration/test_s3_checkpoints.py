"""Checkpoints in s3:// on a real moto server: written atomically, torn or tampered objects skipped, and a
training killed with SIGKILL resumes from S3 in a fresh working directory (a retried pod on another node)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from headstart import storage
from headstart.training.checkpoint import Checkpointer

from ..conftest import make_imagefolder
from ..helpers import Payload, Trainer
from .conftest import fresh_bucket
from .faultproxy import FaultProxy
from .servers import sqlite_store

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bucket(moto: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return fresh_bucket(moto, monkeypatch, "ckpt")


def _keys(bucket: str) -> list[str]:
    return sorted(o["Key"] for o in storage._client().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_checkpoints_keep_two_with_checksums_and_resume(bucket: str):
    trainer = Trainer()
    ckpt = Checkpointer(f"s3://{bucket}/runs/a/scratch", "fp")
    for _ in range(3):
        trainer.epoch(ckpt)
    assert _keys(bucket) == ["runs/a/scratch/fp/epoch-0002.pt", "runs/a/scratch/fp/epoch-0003.pt"]  # fp: the run
    blob, meta = storage.read_bytes(f"s3://{bucket}/runs/a/scratch/fp/epoch-0003.pt")
    assert meta["sha256"] == hashlib.sha256(blob).hexdigest()
    fresh = Trainer()
    restored = fresh.restore(Checkpointer(f"s3://{bucket}/runs/a/scratch/", "fp"))
    assert restored is not None and restored.resumed_from == 3
    assert torch.equal(fresh.model.weight, trainer.weights_at[3])
    assert Trainer().restore(Checkpointer(f"s3://{bucket}/runs/a/other", "fp")) is None  # nothing there


def _put(bucket: str, key: str, blob: bytes, metadata: dict[str, str] | None = None) -> None:
    storage._client().put_object(Bucket=bucket, Key=key, Body=blob, Metadata=metadata or {})


def test_torn_corrupt_and_tampered_objects_fall_back_to_the_previous_one(bucket: str, tmp_path: Path, caplog):
    trainer = Trainer()
    prefix = f"s3://{bucket}/runs/b/fp"  # the run's folder: <location>/<fingerprint>
    trainer.epoch(Checkpointer(f"s3://{bucket}/runs/b", "fp"))
    trainer.epoch(Checkpointer(f"s3://{bucket}/runs/b", "fp"))
    good, meta = storage.read_bytes(f"{prefix}/epoch-0002.pt")
    # epoch 5: truncated, as written by a tool that does not upload atomically
    _put(bucket, "runs/b/fp/epoch-0005.pt", good[: len(good) // 2])
    # epoch 4: whole bytes of another checkpoint but not those the sha256 was recorded for (bit rot, tampering)
    _put(bucket, "runs/b/fp/epoch-0004.pt", good[:-1] + bytes([good[-1] ^ 1]), meta)
    # epoch 3: a pickle whose unpickling would create a marker file
    marker = tmp_path / "PWNED"
    local = tmp_path / "evil.pt"
    state = torch.load(io.BytesIO(good), weights_only=True)
    state["optimizer"]["extra"] = Payload(marker)
    torch.save(state, local)
    _put(bucket, "runs/b/fp/epoch-0003.pt", local.read_bytes())
    fresh = Trainer()
    with caplog.at_level(logging.WARNING, logger="headstart.training.checkpoint"):
        restored = fresh.restore(Checkpointer(f"s3://{bucket}/runs/b", "fp"))
    assert restored is not None and restored.resumed_from == 2
    assert torch.equal(fresh.model.weight, trainer.weights_at[2])
    assert not marker.exists()
    text = caplog.text
    assert f"{prefix}/epoch-0005.pt is unreadable, torn" in text
    assert f"{prefix}/epoch-0004.pt is corrupt (its sha256 does not match" in text
    assert f"{prefix}/epoch-0003.pt was REFUSED" in text


def test_checkpoints_survive_a_flaky_endpoint(bucket: str, moto: str, monkeypatch: pytest.MonkeyPatch):
    with FaultProxy(int(moto.rsplit(":", 1)[1])) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        trainer = Trainer()
        ckpt = Checkpointer(f"s3://{bucket}/flaky", "fp")
        proxy.fail_next("reset", 2)
        trainer.epoch(ckpt)
        proxy.fail_next("http503", 2)
        trainer.epoch(ckpt)
        proxy.cut()
        proxy.fail_next("reset", 2)
        fresh = Trainer()
        restored = fresh.restore(Checkpointer(f"s3://{bucket}/flaky", "fp"))
        assert restored is not None and restored.resumed_from == 2
        assert proxy.seen["reset"] == 4 and proxy.seen["http503"] == 2


def test_unreachable_store_on_restore_is_an_error_not_a_silent_fresh_start(bucket: str, moto: str,
                                                                           monkeypatch: pytest.MonkeyPatch):
    from headstart.errors import StorageError

    Trainer().epoch(Checkpointer(f"s3://{bucket}/down", "fp"))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with FaultProxy(int(moto.rsplit(":", 1)[1])) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        proxy.set_default("reset")
        with pytest.raises(StorageError, match=f"s3://{bucket}/down.*could not list"):
            Trainer().restore(Checkpointer(f"s3://{bucket}/down", "fp"))


# ---- the whole training step, killed and re-run on "another node" ----------------------------------------


def _project(folder: Path, factory: pytest.TempPathFactory) -> Path:
    """A working directory as a fresh pod gets it: params, data and data.dvc, no local state but a migrated
    MLflow store (a pod's is a server; a fresh SQLite file would spend 3-6 s in its migrations)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["shared"].update(images_per_class=None, val_images_per_class=None, epochs=4, batch_size=8,
                                     patience=10)
    params["train"]["scratch"].update(backbone="small_cnn", channels=1, image_size=32)
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    make_imagefolder(folder / "data", per_class={"train": 40, "val": 6, "test": 6})
    # the checkpoint fingerprint hashes the data loaded: the same images give the same one on every node
    (folder / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    sqlite_store(folder / "mlflow.db", factory)
    return folder


def _train(ckpt: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli", "train", "scratch", "--out", "run",
            "--set", f"train.shared.checkpoint_dir={ckpt}", "--set", "tracking.tracking_uri=sqlite:///mlflow.db"]


@pytest.mark.slow
def test_killed_training_resumes_from_s3_on_another_node(bucket: str, tmp_path: Path,
                                                         tmp_path_factory: pytest.TempPathFactory):
    env = {**os.environ, "HEADSTART_NO_PROGRESS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    ref = _project(tmp_path / "ref", tmp_path_factory)
    subprocess.run(_train("null"), cwd=ref, env=env, check=True, capture_output=True, timeout=600)

    node_a = _project(tmp_path / "node-a", tmp_path_factory)
    ckpt = f"s3://{bucket}/pipelines/run-1/checkpoints"
    proc = subprocess.Popen(_train(ckpt), cwd=node_a, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(k.endswith("/epoch-0002.pt") for k in _keys(bucket)):  # in scratch/<fingerprint>/
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not (node_a / "run" / "model").exists()
    shutil.rmtree(node_a)  # the node is gone with everything on its disk

    node_b = _project(tmp_path / "node-b", tmp_path_factory)
    rerun = subprocess.run(_train(ckpt), cwd=node_b, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # killed while in epoch 3 (or just after its checkpoint landed): resumes there, not from scratch
    assert re.search(r"resumed from the checkpoint of epoch [23]\b", rerun.stderr), rerun.stderr[-2000:]
    assert (node_b / "run" / "model" / "model.safetensors").read_bytes() == (
        ref / "run" / "model" / "model.safetensors").read_bytes()
    ref_hist = yaml.safe_load((ref / "run" / "history.json").read_text())
    run_hist = yaml.safe_load((node_b / "run" / "history.json").read_text())
    assert [h["val_accuracy"] for h in run_hist] == [h["val_accuracy"] for h in ref_hist]
    # the finished run keeps only its final checkpoint, beside the marker that lets later runs prune it
    names = [k.rsplit("/", 1)[1] for k in _keys(bucket)]
    assert len(names) == 2 and names[0] == "epoch-0004.pt" and names[1].startswith("finished-"), names
