"""The DVC remote on S3 (moto on 127.0.0.1, behind a proxy that drops the first connections): a dataset
pushed, the cache and working copy deleted, then pulled back byte for byte."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from headstart import storage

from ..conftest import make_imagefolder
from .faultproxy import FaultProxy
from .servers import moto_server, s3_env

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout + out.stderr


def test_dvc_push_then_pull_from_s3_restores_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with moto_server(tmp_path / "moto") as s3, FaultProxy(int(s3.rsplit(":", 1)[1])) as proxy:
        for key, value in s3_env(s3).items():
            monkeypatch.setenv(key, value)
        bucket = f"dvc-{uuid.uuid4().hex[:8]}"
        storage._client().create_bucket(Bucket=bucket)
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
        for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
            env.pop(var, None)  # the endpoint comes from the DVC remote's config, as in the project's docs
        repo = tmp_path / "repo"
        repo.mkdir()
        _run(["git", "init", "-q"], repo, env)
        _run(["dvc", "init", "-q"], repo, env)
        make_imagefolder(repo / "data", per_class={"train": 4, "val": 2, "test": 2})
        before = _digests(repo / "data")
        _run(["dvc", "add", "data"], repo, env)
        _run(["dvc", "remote", "add", "-d", "store", f"s3://{bucket}/dvcstore"], repo, env)
        _run(["dvc", "remote", "modify", "store", "endpointurl", proxy.url], repo, env)

        proxy.fail_next("reset", 2)  # transient faults: retried by DVC's S3 client
        _run(["dvc", "push"], repo, env)
        keys = [o["Key"] for o in storage._client().list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert len(keys) >= len(before) and all(k.startswith("dvcstore/files/md5/") for k in keys)

        shutil.rmtree(repo / "data")
        shutil.rmtree(repo / ".dvc" / "cache")
        proxy.fail_next("reset", 2)
        _run(["dvc", "pull"], repo, env)
        assert _digests(repo / "data") == before
        assert proxy.seen["reset"] == 4 and proxy.seen["relay"] > 0
