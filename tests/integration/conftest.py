"""Shared fixtures: one moto_server per test module and a fresh bucket per test (S3); one mlflow server on
PostgreSQL with basic auth per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from headstart import storage

from .servers import ADMIN, basic_auth_env, create_user, mlflow_server, moto_server, postgres_server, s3_env, user_env

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
