"""Distributed staging: a packed dataset goes to the PyTorchJob's pods as its own files
(index.json and the tar shards, uploaded concurrently), not re-packed into one data.tar.gz; an ImageFolder
still goes as the bundle. Against moto_server, with the pods' own fetch command."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headstart import storage
from headstart.cluster import pytorchjob
from headstart.data import shards

from ..conftest import make_imagefolder
from .conftest import fresh_bucket

pytestmark = pytest.mark.integration


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _keys(bucket: str) -> list[str]:
    pages = storage._client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _request(staging: str) -> pytorchjob.JobRequest:
    return pytorchjob.JobRequest(name="job", namespace="ns", role="scratch", params={}, staging_uri=staging)


def _pod_fetch(req: pytorchjob.JobRequest, dest: Path) -> None:
    """The fetch line of the pod script, as the pod runs it."""
    line = next(cmd for cmd in pytorchjob.command(req)[2].splitlines() if "headstart.cluster.bundle get" in cmd)
    script = f'WORK={dest}\n{line.replace("python ", f"{sys.executable} ", 1)}'
    out = subprocess.run(["sh", "-c", script], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_sharded_dataset_is_staged_as_its_shards_not_a_tar_gz(tmp_path, moto, monkeypatch):
    bucket = fresh_bucket(moto, monkeypatch, "staging")
    packed = tmp_path / "shards"
    shards.pack(make_imagefolder(tmp_path / "data", per_class={"train": 6, "val": 2, "test": 2}), packed,
                target_shard_bytes=4096)  # several shards per split
    files = _digests(packed)
    assert sum(name.endswith(".tar") for name in files) > 3

    req = pytorchjob.stage_dataset(packed, _request(f"s3://{bucket}/staging/job"))
    assert req.sharded and req.data_uri() == f"s3://{bucket}/staging/job/data/"
    assert _keys(bucket) == sorted(f"staging/job/data/{name}" for name in files)  # the files, nothing else
    script = pytorchjob.command(req)[2]
    assert f"headstart.cluster.bundle get-folder {req.data_uri()}" in script and "data.tar.gz" not in script

    _pod_fetch(req, tmp_path / "pod")
    got = tmp_path / "pod" / "data"
    assert _digests(got) == files  # byte for byte: the shards the index's sha256s describe
    index = shards.read_index(got)
    for split in index.splits.values():
        for info in split.shards:
            shards.verify_shard(got, info)


def test_imagefolder_is_still_staged_as_one_bundle(tmp_path, moto, monkeypatch):
    bucket = fresh_bucket(moto, monkeypatch, "staging")
    folder = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 1, "test": 1})
    req = pytorchjob.stage_dataset(folder, _request(f"s3://{bucket}/staging/job"))
    assert not req.sharded and _keys(bucket) == ["staging/job/data.tar.gz"]
    _pod_fetch(req, tmp_path / "pod")
    assert _digests(tmp_path / "pod" / "data") == _digests(folder)
