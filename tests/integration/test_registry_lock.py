"""The registry lock is a lock: mutual exclusion among processes racing for a stale lock
while one of them holds it past its ttl, a lock left by another user under basic auth is taken over, and
a holder that lost its lease cannot commit. Against `mlflow server` on PostgreSQL with basic auth."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headstart.config import TrackingConfig
from headstart.registry import model_registry as registry
from tests.helpers import params_cfg

from .conftest import AuthServer
from .faultproxy import FaultProxy

TTL = 2.0  # renewed every TTL/3 while held
RACERS = 4
LONG_HOLD = 2.5 * TTL


def _login(server: AuthServer, user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in server.env(user).items():
        monkeypatch.setenv(key, value)


def _crashed_holder(uri: str, model: str, owner: str, env: dict[str, str]) -> None:
    """A process on "another host" (its owner id names one) takes the lock and is killed while holding it."""
    code = ("import time; from headstart.registry import model_registry as registry\n"
            "from headstart.config import TrackingConfig\n"
            f"t = TrackingConfig(**{params_cfg('tracking', tracking_uri=uri, registered_model=model).model_dump()!r})\n"
            f"with registry.lock(t, owner={owner!r}, ttl={TTL}):\n    print('held', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "HEADSTART_NO_PROGRESS": "1"})
    try:
        assert proc.stdout.readline().strip() == "held"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def _racer(uri: str, model: str, log: str, barrier) -> None:
    """Race for the lock; the first one in holds it for 2.5x its ttl while the others wait on it."""
    tracking = params_cfg("tracking", tracking_uri=uri, registered_model=model)
    me = str(os.getpid())
    barrier.wait()
    with registry.lock(tracking, ttl=TTL, timeout=120):
        first = not Path(log).exists()
        with open(log, "a") as f:
            f.write(f"enter {me} {time.time()}\n")
        time.sleep(LONG_HOLD if first else 0.2)
        with open(log, "a") as f:
            f.write(f"exit {me} {time.time()}\n")


@pytest.mark.integration
def test_racers_for_a_stale_lock_never_overlap_and_a_long_holder_keeps_it(
        pg_auth_mlflow: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One racer holds the lock for 2.5x its ttl: renewal keeps it. The old lock was never renewed (others
    broke it after the ttl) and was broken by read-then-delete, which two waiters could both win."""
    _login(pg_auth_mlflow, "pipeline", monkeypatch)
    model, log = "race7", tmp_path / "holders.log"
    registry.client(params_cfg("tracking",
                               tracking_uri=pg_auth_mlflow.url, registered_model=model)).create_registered_model(
        model)
    _crashed_holder(pg_auth_mlflow.url, model, "build-host-2:4242:crashed", pg_auth_mlflow.env("pipeline"))
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(RACERS)
    with ctx.Pool(RACERS) as pool:
        pool.starmap(_racer, [(pg_auth_mlflow.url, model, str(log), barrier) for _ in range(RACERS)])
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 2 * RACERS
    for (enter, who, _), (leave, again, _) in zip(events[::2], events[1::2], strict=True):
        assert (enter, leave) == ("enter", "exit") and who == again, f"two holders at once: {events}"
    assert len({e[1] for e in events}) == RACERS
    assert float(events[1][2]) - float(events[0][2]) >= LONG_HOLD > TTL  # the first one kept it throughout


@pytest.mark.integration
def test_a_lock_left_by_another_user_is_taken_over_by_the_pipeline(
        pg_auth_mlflow: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A person's `headstart promote` crashed holding the lock; the pipeline's user may not delete what
    that person created, yet takes the lock once its lease expires, and promotes."""
    from mlflow.exceptions import MlflowException

    _login(pg_auth_mlflow, "pipeline", monkeypatch)
    tracking = params_cfg("tracking", tracking_uri=pg_auth_mlflow.url, registered_model="shared7")
    c = registry.client(tracking)
    c.create_registered_model("shared7")
    c.create_model_version("shared7", "s3://bucket/shared7/model", tags={registry.REGISTRATION_TAG: "complete"})

    alice = pg_auth_mlflow.env("alice")
    _crashed_holder(pg_auth_mlflow.url, "shared7", "alice-laptop:77:crashed", alice)
    with monkeypatch.context() as m:  # what alice creates is hers: the pipeline's user cannot delete it
        for key, value in alice.items():
            m.setenv(key, value)
        registry.client(tracking).create_registered_model("alice-own-model")
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        c.delete_registered_model("alice-own-model")

    started = time.monotonic()
    with registry.lock(tracking, timeout=20):
        waited = time.monotonic() - started
        registry.move_champion(tracking, "1", "promote", "first champion, after alice's crash")
    assert waited < 15
    assert registry.champion(tracking).version == "1"


def test_a_holder_that_lost_its_lease_cannot_move_the_champion(tmp_path: Path):
    """A holder frozen past its lease (SIGSTOP: a paused VM, a stalled node) is superseded; when it wakes,
    its alias move refuses instead of overwriting the new holder's work."""
    tracking = params_cfg("tracking",
                          tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                          registered_model="frozen")
    c = registry.client(tracking)
    c.create_registered_model("frozen")
    for _ in range(2):
        c.create_model_version("frozen", str(tmp_path / "model"), tags={registry.REGISTRATION_TAG: "complete"})
    code = ("import sys; from headstart.registry import model_registry as registry\n"
            "from headstart.config import TrackingConfig\n"
            "from headstart.errors import RegistryError\n"
            f"t = TrackingConfig(**{tracking.model_dump()!r})\n"
            f"with registry.lock(t, owner='frozen-host:1:a', ttl={TTL}):\n"
            "    print('held', flush=True); sys.stdin.readline()\n"
            "    try:\n        registry.move_champion(t, '1', 'promote', 'woke up late'); print('moved')\n"
            "    except RegistryError as exc:\n        print('refused:', exc)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HEADSTART_NO_PROGRESS": "1"})
    try:
        assert proc.stdout.readline().strip() == "held"
        proc.send_signal(signal.SIGSTOP)
        time.sleep(TTL + 1.5)  # past its lease and the clock-skew allowance
        with registry.lock(tracking, timeout=10):
            registry.move_champion(tracking, "2", "promote", "the live holder's move")
        proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
    assert "refused: lost the registry lock" in out, out
    assert registry.champion(tracking).version == "2"


# ---- the commit in a brown-out: MLflow's own retries must not re-send the alias move later -------------

_HOLDER = """\
import sys
from headstart.registry import model_registry as registry
from headstart.config import TrackingConfig
from headstart.errors import RegistryError

def at_commit(stage):
    if stage == "champion_alias":  # the parent starts the brown-out now, then lets the move go
        print("commit", flush=True)
        sys.stdin.readline()

t = TrackingConfig(**{tracking!r})
registry._stage_hook = at_commit
with registry.lock(t, owner="browned-out-host:1:a", ttl={ttl}):
    try:
        registry.move_champion(t, "1", "promote", "sent in a brown-out")
        print("moved", flush=True)
    except RegistryError as exc:
        print("refused:", exc, flush=True)
"""


def _holder_at_commit(server: AuthServer, proxy: FaultProxy, model: str, ttl: float) -> subprocess.Popen:
    """A run that promotes v1 of `model` through `proxy`, stopped right before its alias move (it printed
    "commit" and waits for a line on stdin). MLflow's client retries are left at their defaults, except a
    backoff factor of 1 (2 s, 4 s, 8 s...) so that the old code's late re-send comes within seconds."""
    env = {**os.environ, **server.env("pipeline"), "HEADSTART_NO_PROGRESS": "1",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        env.pop(var, None)
    code = _HOLDER.format(tracking=params_cfg("tracking", tracking_uri=proxy.url, registered_model=model).model_dump(),
                          ttl=ttl)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "commit"
    return proc


def _outcome(proc: subprocess.Popen, timeout: float) -> str | None:
    """The holder's last line ("moved" or "refused: ..."), or None if it has not finished within `timeout`."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return out.strip().splitlines()[-1] if out.strip() else ""


def _model_with_versions(server: AuthServer, model: str, monkeypatch: pytest.MonkeyPatch) -> TrackingConfig:
    _login(server, "pipeline", monkeypatch)
    tracking = params_cfg("tracking", tracking_uri=server.url, registered_model=model)
    c = registry.client(tracking)
    c.create_registered_model(model)
    for _ in range(2):
        c.create_model_version(model, f"s3://bucket/{model}/model", tags={registry.REGISTRATION_TAG: "complete"})
    return tracking


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.integration
def test_an_alias_move_stuck_in_a_brown_out_never_lands_after_another_run_promoted(
        pg_auth_mlflow: AuthServer, monkeypatch: pytest.MonkeyPatch):
    """The holder's alias move meets 503s until its lease has run out and a second run has taken the lock
    and promoted v2. MLflow's client used to re-send the move by itself once the server answered again,
    undoing v2's promotion; now each attempt is one request, and none is sent without the lease."""
    tracking = _model_with_versions(pg_auth_mlflow, "brownout7", monkeypatch)
    with FaultProxy(_port(pg_auth_mlflow.url)) as proxy:
        holder = _holder_at_commit(pg_auth_mlflow, proxy, "brownout7", ttl=3.0)
        try:
            proxy.set_default("http503")  # the brown-out: every request of the holder, renewals too
            proxy.cut()
            holder.stdin.write("go\n")
            holder.stdin.flush()
            with registry.lock(tracking, timeout=30):  # direct to the server: taken once the lease expired
                registry.move_champion(tracking, "2", "promote", "the live holder's move")
            proxy.set_default("relay")  # the server answers the first run again
            outcome = _outcome(holder, timeout=60)
        finally:
            holder.kill()
    assert outcome is not None and outcome.startswith("refused: lost the registry lock"), outcome
    assert registry.champion(tracking).version == "2"


@pytest.mark.integration
def test_a_hung_alias_request_is_abandoned_within_the_lease_margin_and_resent_only_after_reading_back(
        pg_auth_mlflow: AuthServer, monkeypatch: pytest.MonkeyPatch):
    """The alias move's request is blackholed: the holder gives up on it within the lease's margin (ttl/6),
    reads the alias back, re-checks its lease and sends it again, all well inside its lease. MLflow's
    client used to wait 120 s for an answer (MLFLOW_HTTP_REQUEST_TIMEOUT) and then re-send it by itself."""
    ttl = 12.0  # renewals every 4 s: the blackholed connection is the alias move's, not a renewal's
    tracking = _model_with_versions(pg_auth_mlflow, "hung7", monkeypatch)
    with FaultProxy(_port(pg_auth_mlflow.url)) as proxy:
        holder = _holder_at_commit(pg_auth_mlflow, proxy, "hung7", ttl=ttl)
        try:
            proxy.cut()  # the alias request opens a new connection: the blackholed one
            proxy.fail_next("hang")
            started = time.monotonic()
            holder.stdin.write("go\n")
            holder.stdin.flush()
            outcome = _outcome(holder, timeout=ttl)
            took = time.monotonic() - started
        finally:
            holder.kill()
    assert outcome == "moved", f"the holder had not finished its move {ttl:.0f} s after sending it: {outcome}"
    assert proxy.seen["hang"] == 1 and took < ttl
    assert registry.champion(tracking).version == "1"
