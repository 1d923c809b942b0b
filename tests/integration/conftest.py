"""Shared S3 fixtures: one moto_server per test module and a fresh bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from headstart import storage

from .servers import moto_server, s3_env

# Anything in the developer's environment that would point boto3 elsewhere or change its retries.
_S3_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS",
            "HEADSTART_S3_CONNECT_TIMEOUT", "HEADSTART_S3_READ_TIMEOUT")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
