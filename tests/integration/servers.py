"""Real servers on 127.0.0.1 for integration tests: `mlflow server` (SQLite or PostgreSQL backend, optionally
with basic auth), `moto_server` (S3) and a throw-away PostgreSQL cluster (Debian's `postgresql` package)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

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
                  artifacts: str | None = None, backend: str | None = None,
                  app_name: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """SQLite backend (or `backend`, e.g. a PostgreSQL URI), local (or given) artifact destination, job runner
    off, its own process group. `app_name="basic-auth"` turns on MLflow's basic auth; see `basic_auth_env`."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend or f"sqlite:///{root}/mlflow.db", "--workers", "1",
           "--serve-artifacts", "--artifacts-destination", artifacts or (root / "artifacts").as_uri()]
    if app_name:
        cmd += ["--app-name", app_name]
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


def sqlite_store(dest: Path, factory: pytest.TempPathFactory) -> Path:
    """A SQLite MLflow store at `dest`, already migrated: a copy of a template made once per session under
    pytest's base temp folder (a fresh store spends 3-6 s in its migrations)."""
    template = factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not template.is_file():
        from mlflow import MlflowClient

        template.parent.mkdir(exist_ok=True)
        building = template.with_suffix(".building")
        client = MlflowClient(tracking_uri=f"sqlite:///{building}", registry_uri=f"sqlite:///{building}")
        client.search_experiments()  # the tracking and registry tables, all migrations run
        client.search_registered_models()
        building.rename(template)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)
    return dest


def s3_env(endpoint: str) -> dict[str, str]:
    """Test credentials and the endpoint, as a pod would get them from its environment."""
    return {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": endpoint}


# ---- PostgreSQL ---------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest Debian `postgresql` server binaries (/usr/lib/postgresql/<major>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass(frozen=True)
class Postgres:
    """A running cluster: `uri(db)` creates database `db` on first use and returns its SQLAlchemy URI."""

    host: str
    port: int
    user: str

    def uri(self, db: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
        finally:
            conn.close()
        # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{db}"


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` user the Debian package creates."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root, and there is no `postgres` user to run PostgreSQL as "
                           "(install the Debian package: make postgres)") from exc
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


@contextmanager
def postgres_server(port: int | None = None) -> Iterator[Postgres]:
    """A throw-away cluster on 127.0.0.1 (trust auth, durability off for speed), its data and unix socket in a
    fresh temporary folder owned by the user it runs as; stopped and removed on exit."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                           "install the Debian package: make postgres")
    port = port or free_port()
    drop = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="headstart-pg-"))  # not under pytest's tmp: that is 0700 root's
    if drop:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    user = "headstart"
    log = open(root.parent / f"{root.name}.log", "ab")  # noqa: SIM115 - closed below
    proc = None
    try:
        subprocess.run([*drop, str(bindir / "initdb"), "-D", str(root / "data"), "-U", user, "-A", "trust",
                        "-E", "UTF8", "--no-sync", "--no-instructions"],
                       check=True, stdout=log, stderr=log, timeout=120)
        proc = subprocess.Popen([*drop, str(bindir / "postgres"), "-D", str(root / "data"), "-h", "127.0.0.1",
                                 "-p", str(port), "-k", str(root), "-c", "fsync=off", "-c", "synchronous_commit=off",
                                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                                stdout=log, stderr=log, start_new_session=True)
        _wait_postgres(bindir, port, proc)
        yield Postgres("127.0.0.1", port, user)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # "fast" shutdown: roll back, disconnect, stop
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)


def _wait_postgres(bindir: Path, port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode} before accepting connections")
        ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False)
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"postgres on port {port} did not accept connections within {timeout}s")


# ---- MLflow basic auth --------------------------------------------------------------------------------

ADMIN = ("admin", "admin-password-1234")


def basic_auth_env(root: Path, database_uri: str, default_permission: str = "READ") -> dict[str, str]:
    """The server-side environment for `mlflow server --app-name basic-auth`: an auth config with the admin's
    credentials and its own user store at `database_uri`, and the Flask secret key it requires."""
    root.mkdir(parents=True, exist_ok=True)
    ini = root / "basic_auth.ini"
    ini.write_text("[mlflow]\n"
                   f"default_permission = {default_permission}\n"
                   f"database_uri = {database_uri}\n"
                   f"admin_username = {ADMIN[0]}\n"
                   f"admin_password = {ADMIN[1]}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   "auth_cache_ttl_seconds = 300\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "headstart-tests-only"}


def user_env(username: str, password: str) -> dict[str, str]:
    """The client-side environment a process uses to authenticate as `username`."""
    return {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}


def create_user(uri: str, username: str, password: str) -> None:
    """Create a (non-admin) user through the auth REST API, as the admin."""
    _auth_request(uri, "/api/2.0/mlflow/users/create", {"username": username, "password": password})


def grant_registered_model(uri: str, name: str, username: str, permission: str) -> None:
    """Give `username` READ/EDIT/MANAGE on registered model `name` (create or update the grant), as the admin."""
    body = {"name": name, "username": username, "permission": permission}
    try:
        _auth_request(uri, "/api/2.0/mlflow/registered-models/permissions/create", body)
    except RuntimeError:
        _auth_request(uri, "/api/2.0/mlflow/registered-models/permissions/update", body, method="PATCH")


def _auth_request(uri: str, path: str, body: dict[str, str], method: str = "POST") -> dict:
    import base64
    import json

    token = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    req = urllib.request.Request(uri + path, data=json.dumps(body).encode(), method=method,  # noqa: S310
                                 headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback only
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {path}: {exc.code} {exc.read().decode()[:300]}") from exc
    return json.loads(text) if text.strip() else {}
