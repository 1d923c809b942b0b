"""Real servers on 127.0.0.1 for integration tests: `mlflow server` and `moto_server` (S3)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the server and every process it spawned (mlflow's workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def mlflow_server(root: Path, port: int | None = None, extra_env: dict[str, str] | None = None,
                  artifacts: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """SQLite backend, local (or given) artifact destination, job runner off, its own process group."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--workers", "1",
           "--serve-artifacts", "--artifacts-destination", artifacts or (root / "artifacts").as_uri()]
    log = open(root / "server.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop_group(proc)
        log.close()


@contextmanager
def moto_server(root: Path, port: int | None = None) -> Iterator[str]:
    """An S3 endpoint (moto) on 127.0.0.1 in its own process group; yields its URL."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "moto.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)
        log.close()


def s3_env(endpoint: str) -> dict[str, str]:
    """Test credentials and the endpoint, as a pod would get them from its environment."""
    return {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": endpoint}
