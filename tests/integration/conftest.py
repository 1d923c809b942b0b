"""Shared fixtures, one of each server per session: moto_server (a fresh bucket per test), `mlflow server` on
SQLite (a fresh experiment and registered-model name per test), and `mlflow server` on PostgreSQL with basic
auth; a pre-migrated SQLite store for a test that needs a store of its own; and a packed dataset pinned by a
git tag, its shards pushed to a DVC remote on moto (the form the pipeline fetches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from headstart import storage

from ..conftest import make_imagefolder
from .servers import (
    ADMIN,
    basic_auth_env,
    create_user,
    mlflow_server,
    moto_server,
    postgres_server,
    s3_env,
    sqlite_store,
    user_env,
)

# Anything in the developer's environment that would point boto3 elsewhere or change its retries.
_S3_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS",
            "HEADSTART_S3_CONNECT_TIMEOUT", "HEADSTART_S3_READ_TIMEOUT")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One S3 endpoint for the session: each test makes its own bucket (`fresh_bucket`)."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


def fresh_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, prefix: str,
                 endpoint_var: str = "AWS_ENDPOINT_URL_S3") -> str:
    """Test credentials and the endpoint (under `endpoint_var`) in the environment only, and a new bucket
    created directly on moto; returns its name."""
    for var in _S3_VARS:
        monkeypatch.delenv(var, raising=False)
    env = s3_env(endpoint)
    env[endpoint_var] = env.pop("AWS_ENDPOINT_URL_S3")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    storage._client().create_bucket(Bucket=name)
    return name


@dataclass(frozen=True)
class SharedMlflow:
    """`mlflow server` on SQLite for the whole session; `root` holds its store, artifacts and log."""

    url: str
    root: Path


@pytest.fixture(scope="session")
def shared_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedMlflow]:
    """For tests that need a server but not an empty one: each names its own experiment and registered model
    (`fresh_name`). A test that stops, breaks or counts everything on its server starts its own."""
    root = tmp_path_factory.mktemp("shared-mlflow")
    sqlite_store(root / "mlflow.db", tmp_path_factory)  # no migrations in the start-up
    with mlflow_server(root) as (url, _):
        yield SharedMlflow(url, root)


def fresh_name(prefix: str) -> str:
    """An experiment or registered-model name no other test of the session uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def mlflow_store(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store of this test's own: a copy of a pre-migrated SQLite template (made once per session), as the
    tracking URI."""
    return f"sqlite:///{sqlite_store(tmp_path / 'mlflow' / 'mlflow.db', tmp_path_factory)}"


ROOT = Path(__file__).resolve().parents[2]
# Both candidates small_cnn from random weights (so the fine-tune's backbone learns at the scratch rate: 1 epoch at
# its slower default left it at 8/18 test images), validation in one worker: the loops' tiny recipe.
SMALL = ["train.finetune.backbone=small_cnn", "train.finetune.weights=none", "train.finetune.probe_epochs=0",
         "train.finetune.lr_backbone=0.003", "train.scratch.backbone=small_cnn", "validate.workers=1"]
FAST_BACKBONE = SMALL[3]
STREAM = ["train.shared.data_loading=stream", "train.shared.loader_workers=1", "evaluate.data_loading=stream",
          "evaluate.loader_workers=1"]


def tiny_params(*overrides: str) -> dict[str, Any]:
    """The repository's params.yaml for a tiny dataset (1 epoch at 32 px, any labels, a gate that promotes a
    first candidate), both candidates small_cnn; then `overrides` (key=value)."""
    from headstart.config import apply_override

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["validate"] = {**params.get("validate", {}), "label_set": None, "min_images_per_class": 1}
    params["train"]["shared"].update(images_per_class=None, val_images_per_class=None, epochs=1, batch_size=16)
    for role in ("finetune", "scratch"):
        params["train"][role]["image_size"] = 32
    params["evaluate"]["bootstrap_samples"] = 200
    params["gate"].update(min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0)
    params["register"]["serving_check_images"] = 8
    for item in [*SMALL, *overrides]:
        apply_override(params, item)
    return params


# ---- a packed dataset on a DVC remote on S3, pinned by a git tag -------------------------------------------

SHARD_BYTES = 16 * 1024  # ~4 samples a shard at 28 px: every split gets several shards
TAG = "data-v1"


def sh(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> str:
    """Run `cmd` in `cwd` (git identity, DVC analytics off, the venv's tools on PATH, the tracking URI from
    params.yaml); its stdout."""
    env = {k: v for k, v in (env or os.environ).items() if k != "MLFLOW_TRACKING_URI"}  # params.yaml's store
    env = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1",
           "PATH": f"{BIN}:{os.environ['PATH']}", "HEADSTART_NO_PROGRESS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
    return out.stdout.strip()


def dvc_md5(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


@dataclass(frozen=True)
class PackedRemote:
    """A git + DVC project whose commit tagged TAG pins a packed dataset (`dvc add`ed shards) that was pushed to
    `remote` (s3://…) on moto at `endpoint`; the project's own DVC cache is gone, as on a fresh clone."""

    project: Path
    remote: str
    endpoint: str
    rev: str  # the commit tagged TAG
    md5: str  # what data.dvc pins
    index: dict[str, Any]  # data/index.json

    def env(self) -> dict[str, str]:
        """os.environ with the S3 test credentials and endpoint, nothing else pointing boto3 elsewhere."""
        env = {k: v for k, v in os.environ.items() if k not in _S3_VARS}
        return {**env, **s3_env(self.endpoint)}


@pytest.fixture(scope="session")
def packed_remote(moto: str, tmp_path_factory: pytest.TempPathFactory) -> PackedRemote:
    """`headstart data pack` -> `dvc add` -> `dvc push` to S3 -> git tag, once per session."""
    import boto3

    root = tmp_path_factory.mktemp("packed")
    bucket = fresh_name("dvc")
    env = {**{k: v for k, v in os.environ.items() if k not in _S3_VARS}, **s3_env(moto)}
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)  # noqa: S106 - moto's test keys
    images = make_imagefolder(root / "images")  # 3 classes, 12 train / 4 val / 6 test each, 28 px PNG
    project = root / "project"
    project.mkdir()
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    sh(project, sys.executable, "-m", "headstart.cli", "data", "pack", "--data", str(images), "--out", "data",
       "--shard-size", str(SHARD_BYTES))
    index = json.loads((project / "data" / "index.json").read_text())
    assert index["classes"] == ["circle", "square", "stripes"]
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        assert index["splits"][split]["count"] == 3 * n, split
        assert len(index["splits"][split]["shards"]) >= 2, split  # streaming has shards to deal out
    assert not any(p.suffix == ".png" for p in (project / "data").rglob("*"))
    remote = f"s3://{bucket}/dvcstore"
    sh(project, "dvc", "add", "-q", "data")
    sh(project, "dvc", "remote", "add", "-q", "-d", "store", remote)
    sh(project, "dvc", "remote", "modify", "store", "endpointurl", moto)
    sh(project, "dvc", "push", "-q", env=env)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "pin the packed dataset")
    sh(project, "git", "tag", TAG)
    sh(project, "rm", "-rf", ".dvc/cache", "data")  # only the remote has the shards now
    md5 = dvc_md5(project / "data.dvc")
    assert md5.endswith(".dir")
    return PackedRemote(project, remote, moto, sh(project, "git", "rev-parse", "HEAD"), md5, index)


# ---- mlflow server on PostgreSQL with basic auth ---------------------------------------------------------


@dataclass(frozen=True)
class AuthServer:
    """`mlflow server` on PostgreSQL with basic auth; `users` maps each non-admin user to its password."""

    url: str
    users: dict[str, str]

    def env(self, user: str) -> dict[str, str]:
        return user_env(*ADMIN) if user == ADMIN[0] else user_env(user, self.users[user])


@pytest.fixture(scope="session")
def pg_auth_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """The production form, once per session (a start costs ~10 s): PostgreSQL backend and user store,
    basic auth with default_permission READ, and two non-admin users: `pipeline` and `alice` (a person)."""
    root = tmp_path_factory.mktemp("pg-mlflow")
    with postgres_server() as pg:
        env = basic_auth_env(root / "auth", pg.uri("mlflow_auth"))
        with mlflow_server(root, backend=pg.uri("mlflow"), extra_env=env, app_name="basic-auth") as (url, _):
            users = {"pipeline": "pipeline-password-1", "alice": "alice-password-1"}
            for name, password in users.items():
                create_user(url, name, password)
            yield AuthServer(url, users)
