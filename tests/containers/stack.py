"""The production form's services on 127.0.0.1 for the container tests and benchmarks/containers.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import make_imagefolder
from tests.integration.servers import (
    basic_auth_env,
    create_user,
    free_port,
    mlflow_server,
    moto_server,
    postgres_bin,
    postgres_server,
)

SECRET_S3 = f"s3-secret-{uuid.uuid4().hex}"
SECRET_PW = f"pipeline-pw-{uuid.uuid4().hex}"


@dataclass
class Stack:
    url: str  # mlflow server
    s3: str  # moto endpoint
    bucket: str
    pg_uri: str  # the tracking database
    pg_bindir: Path
    repo_url: str  # git:// URL of the data repository
    rev: str
    env: dict[str, str]  # what the Kubernetes secrets would give the pods
    tmp: Path


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def production_stack(tmp: Path) -> Iterator[Stack]:
    """moto (S3), a throw-away PostgreSQL cluster, `mlflow server` on it with S3 artifacts and basic auth (user
    `pipeline`), and a git repository served by `git daemon` whose data.dvc pins a tiny dataset on the S3 remote."""
    import boto3

    bucket = f"headstart-{uuid.uuid4().hex[:8]}"
    with moto_server(tmp / "moto") as s3, postgres_server() as pg:
        boto3.client("s3", endpoint_url=s3, aws_access_key_id="k", aws_secret_access_key="s",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        server_env = {**basic_auth_env(tmp / "auth", pg.uri("mlflow_auth")), "MLFLOW_S3_ENDPOINT_URL": s3,
                      "AWS_ACCESS_KEY_ID": "pipeline", "AWS_SECRET_ACCESS_KEY": SECRET_S3}
        with mlflow_server(tmp / "mlflow", backend=pg.uri("mlflow"), extra_env=server_env, app_name="basic-auth",
                           artifacts=f"s3://{bucket}/mlflow") as (url, _):
            create_user(url, "pipeline", SECRET_PW)
            # the data repository: data.dvc pins a tiny dataset pushed to the S3 remote the repo configures
            repo = tmp / "git" / "data-repo"
            repo.mkdir(parents=True)
            env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                   "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1", "AWS_ACCESS_KEY_ID": "pipeline",
                   "AWS_SECRET_ACCESS_KEY": SECRET_S3}
            dvc = str(Path(sys.executable).parent / "dvc")
            _sh(["git", "init", "-q", "-b", "main"], repo, env)
            _sh([dvc, "init", "-q"], repo, env)
            make_imagefolder(repo / "data", per_class={"train": 8, "val": 3, "test": 4})
            _sh([dvc, "add", "-q", "data"], repo, env)
            _sh([dvc, "remote", "add", "-q", "-d", "store", f"s3://{bucket}/dvc"], repo, env)
            _sh([dvc, "remote", "modify", "store", "endpointurl", s3], repo, env)
            _sh([dvc, "push", "-q"], repo, env)
            _sh(["git", "add", "-A"], repo, env)
            _sh(["git", "commit", "-qm", "pin the dataset"], repo, env)
            rev = _sh(["git", "rev-parse", "HEAD"], repo, env)
            port = free_port()
            daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={tmp / 'git'}",
                                       "--listen=127.0.0.1", f"--port={port}", str(tmp / "git")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1)
                pods = {"AWS_ACCESS_KEY_ID": "pipeline", "AWS_SECRET_ACCESS_KEY": SECRET_S3, "AWS_ENDPOINT_URL": s3,
                        "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "pipeline",
                        "MLFLOW_TRACKING_PASSWORD": SECRET_PW}
                yield Stack(url, s3, bucket, pg.uri("mlflow"), postgres_bin(), f"git://127.0.0.1:{port}/data-repo",
                            rev, pods, tmp)
            finally:
                daemon.terminate()
                daemon.wait(10)


