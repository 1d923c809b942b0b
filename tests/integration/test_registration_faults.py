"""Nothing is half done: the tracking server goes away right before each stage of registration.

Before the champion alias moves (the commit point) a failure leaves the champion, its aliases and the
history exactly as they were, and at most a version tagged `headstart.registration=pending` that nothing
uses. After it, the new champion is complete and the next run finishes the bookkeeping. Either way the
run fails with a RegistryError saying what failed, and a re-run with the server back succeeds.
A fault-injecting proxy then fails the first request of every stage (reset, 503): all retried, no harm.

One `mlflow server` serves the whole module; the client reaches it through a FaultProxy, and "the server
gone" is `FaultProxy.down()`: nothing listens on the port any more (a new connection is refused) and every
open connection, pooled keep-alive ones included, is dropped. That is what a client sees of a stopped server,
and it is all it can see: the stage hook runs between requests, so no request is half sent, and none of the
failing run's requests reaches the server until it is back, so the server's state is the one a stop would
leave. What a stop could add, the server losing what it had not yet written, cannot happen between two
answered requests. The strongest proof stays where it matters most: before the alias move, the commit
point, the real server is stopped (SIGTERM to its process group) and started again. Restarting the server
for every stage cost ~10 s each. The serving check runs in this process (serving.verify._run_check replaced): the
sweep is about the registry, and every other registering test runs it in a fresh process.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from headstart.config import TrackingConfig, load_params
from headstart.errors import RegistryError
from headstart.registry import lock as registry_lock
from headstart.registry import model_registry as registry
from headstart.serving import verify
from headstart.steps import evaluate, promote, register, train

from ..conftest import make_imagefolder
from ..helpers import params_cfg, serving_check_in_process
from .faultproxy import FaultProxy
from .servers import free_port, mlflow_server, stop_group

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.faults]  # make test-faults (CI runs it after make test)
LENIENT = params_cfg("gate", min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0,
                     max_class_recall_drop=0.99, max_negative_flip_rate=None)
STAGES = ("log_model", "create_version", "serving_check", "decision_record", "description", "complete", "lock",
          "gate_schedule", "promotion_intent", "champion_alias", "previous_alias", "decision_tag", "history", "unlock")
COMMITTED_AFTER = STAGES.index("champion_alias")  # a stop before any later stage finds the move committed
REAL_STOP = "champion_alias"  # the commit point: the server process itself is stopped there
MODEL = "faulty"


@dataclass
class World:
    root: Path
    data: Path
    candidates: dict[str, Path]
    port: int
    stack: ExitStack
    proxy: FaultProxy
    proc: object = None
    runs: int = 0
    direct: TrackingConfig = field(init=False)  # the server itself
    tracking: TrackingConfig = field(init=False)  # through the proxy

    def __post_init__(self) -> None:
        self.direct = params_cfg("tracking", tracking_uri=f"http://127.0.0.1:{self.port}", registered_model=MODEL)
        self.tracking = self.direct.model_copy(update={"tracking_uri": self.proxy.url})

    def start(self) -> None:
        """The server (re)started on the same port, database and artifact folder, and the proxy listening."""
        if self.proc is None or self.proc.poll() is not None:
            _, self.proc = self.stack.enter_context(mlflow_server(self.root / "server", self.port))
        self.proxy.set_default("relay")
        self.proxy.up()

    def stop(self) -> None:
        stop_group(self.proc)

    def evaluate(self, tracking: TrackingConfig | None = None) -> Path:
        self.runs += 1
        out = self.root / f"eval-{self.runs}"
        cfg = params_cfg("evaluate", bootstrap_samples=100, tensor_cache_dir=str(self.root / "cache" / "tensors"),
                         prediction_store=str(self.root / "cache" / "predictions"))
        evaluate.run(cfg, self.data, self.candidates, out, tracking or self.tracking)
        return out

    def register(self, eval_dir: Path, tracking: TrackingConfig | None = None,
                 promote: bool = True) -> register.RegisterResult:
        self.runs += 1
        return register.run(params_cfg("register", serving_check_images=4), LENIENT, self.data, self.candidates,
                            eval_dir, self.decision_dir(), tracking or self.tracking, promote=promote)

    def decision_dir(self) -> Path:
        return self.root / f"decision-{self.runs}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("faults")
    data = make_imagefolder(root / "data")
    candidates = {}
    for role in ("finetune", "scratch"):
        cfg = train.config_from_params(load_params(ROOT / "params.yaml"), role, backbone="small_cnn", weights="none",
                                       channels=1, image_size=32, epochs=1, images_per_class=None,
                                       val_images_per_class=None, checkpoint_dir=None, tta="none",
                                       tensor_cache_dir=str(root / "cache" / "tensors"))
        candidates[role] = Path(train.run(cfg, data, root / role).model_dir)
    with ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        # MLflow's own per-request retries off, so Headstart's retry-with-backoff is what is exercised
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setattr(verify, "_run_check", serving_check_in_process)
        port = free_port()
        w = World(root, data, candidates, port, stack, stack.enter_context(FaultProxy(port)))
        w.start()
        seen: list[str] = []
        mp.setattr(registry, "_stage_hook", seen.append)
        first = w.register(w.evaluate())
        mp.setattr(registry, "_stage_hook", None)
        assert first.promoted and first.version == "1"
        # the stages this test stops the server before are every stage the code marks
        # the first promotion has no previous champion, and nothing compared spends none of the gate's budget
        assert seen == [s for s in STAGES if s not in ("previous_alias", "gate_schedule")]
        yield w


def _snapshot(tracking: TrackingConfig) -> dict:
    c = registry.client(tracking)
    versions = {str(v.version): dict(v.tags) for v in c.search_model_versions(f"name='{MODEL}'")}
    aliases = dict(c.get_registered_model(MODEL).aliases)
    return {"champion": aliases.get("champion"), "previous": aliases.get("previous-champion"),
            "history": registry.history(tracking), "versions": versions}


def _assert_consistent(tracking: TrackingConfig) -> dict:
    """The registry as a finished run leaves it: the history is a chain ending at the champion, the
    aliases follow it, the champion is complete and promoted, and no lock is left behind."""
    snap = _snapshot(tracking)
    history, champ = snap["history"], snap["champion"]
    assert history[-1]["version"] == champ
    assert [h["previous"] for h in history] == [None] + [h["version"] for h in history[:-1]]
    assert snap["previous"] == history[-1]["previous"]
    tags = snap["versions"][champ]
    assert tags[registry.REGISTRATION_TAG] == "complete" and tags["decision"] == "promoted"
    assert json.loads(tags[registry.PROMOTION_TAG]) == history[-1]
    gens = registry_lock.generations(registry.client(tracking), MODEL, registry.retry)
    assert not gens or gens[-1].released, f"a lock is left held: {gens[-1]}"
    return snap


def _gone_before(world: World, stage: str, gone: list[str]) -> Callable[[str], None]:
    """A stage hook: right before `stage` the server goes away, for good (until the test brings it back)."""
    def hook(name: str) -> None:
        if name == stage and not gone:
            gone.append(name)
            if stage == REAL_STOP:
                world.stop()
            else:
                world.proxy.down()

    return hook


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_server_gone_before_each_stage(world: World, stage: str, monkeypatch: pytest.MonkeyPatch):
    world.start()
    tracking = world.direct if stage == REAL_STOP else world.tracking
    before = _assert_consistent(tracking)
    eval_dir = world.evaluate(tracking)
    gone: list[str] = []
    monkeypatch.setattr(registry, "_stage_hook", _gone_before(world, stage, gone))
    started = time.monotonic()
    try:
        if stage == "unlock":  # everything is written; only the lock could not be released
            result = world.register(eval_dir, tracking)
            assert result.promoted
        else:
            with pytest.raises(RegistryError, match=r"MLflow: .* failed after 4 attempts.*up and reachable"):
                world.register(eval_dir, tracking)
        assert gone == [stage], f"the server never went away before {stage}"
        assert stage != REAL_STOP or world.proc.poll() is not None
        assert time.monotonic() - started < 120
    finally:
        monkeypatch.setattr(registry, "_stage_hook", None)
        world.start()

    after = _snapshot(tracking)
    new = sorted(set(after["versions"]) - set(before["versions"]), key=int)
    if STAGES.index(stage) <= COMMITTED_AFTER:
        # not committed: champion, aliases and history untouched; a new version, if any, is never used
        assert {k: after[k] for k in ("champion", "previous", "history")} == {
            k: before[k] for k in ("champion", "previous", "history")}
        if STAGES.index(stage) < STAGES.index("create_version"):
            assert new == []
        assert len(new) <= 1
        for v in new:
            tags = after["versions"][v]
            done = STAGES.index(stage) > STAGES.index("complete")
            assert tags[registry.REGISTRATION_TAG] == ("complete" if done else "pending")
            assert "decision" not in tags and tags["headstart.winner"] and "metric.finetune.accuracy" in tags
        if new and after["versions"][new[0]][registry.REGISTRATION_TAG] == "pending":
            with pytest.raises(RegistryError, match="registration did not finish"):
                registry.require_complete(tracking, new[0])
    else:
        # committed: the new version is champion, fully registered, with its intent recorded
        assert new and after["champion"] == new[-1]
        tags = after["versions"][new[-1]]
        assert tags[registry.REGISTRATION_TAG] == "complete" and "headstart.decision_record" in tags
        intent = json.loads(tags[registry.PROMOTION_TAG])
        assert intent["version"] == new[-1] and intent["previous"] == before["champion"]

    # the re-run, with the server back, succeeds (against the champion as it now is)
    rerun = world.register(eval_dir if after["champion"] == before["champion"] else world.evaluate(tracking), tracking)
    assert rerun.promoted
    final = _assert_consistent(tracking)
    assert final["champion"] == rerun.version
    if STAGES.index(stage) > COMMITTED_AFTER:  # the committed move was recorded before the re-run's own
        assert [h["version"] for h in final["history"][-2:]] == [new[-1], rerun.version]


@pytest.mark.slow
def test_promote_rerun_after_a_committed_move_finishes_it(world: World, monkeypatch: pytest.MonkeyPatch):
    """The Kubeflow way: register, then a separate promote step; that step re-run after the server went away."""
    world.start()
    before = _assert_consistent(world.tracking)
    eval_dir = world.evaluate()
    gone: list[str] = []
    monkeypatch.setattr(registry, "_stage_hook", _gone_before(world, "history", gone))
    try:
        result = world.register(eval_dir, promote=False)
        with pytest.raises(RegistryError):
            promote.run(world.decision_dir() / "decision.json", world.tracking)
        assert gone == ["history"]
    finally:
        monkeypatch.setattr(registry, "_stage_hook", None)
        world.start()
    again = promote.run(world.decision_dir() / "decision.json", world.tracking)
    assert again.promoted and again.version == result.version
    final = _assert_consistent(world.tracking)
    assert final["history"][-1]["version"] == result.version
    assert final["history"][-1]["previous"] == before["champion"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["reset", "http503"])
def test_a_failing_first_request_at_every_stage_is_retried(world: World, fault: str,
                                                           monkeypatch: pytest.MonkeyPatch):
    world.start()
    proxy = world.proxy

    def hook(name: str) -> None:
        proxy.cut()  # pooled connections die too
        proxy.fail_next(fault)

    eval_dir = world.evaluate()
    proxy.seen.clear()
    monkeypatch.setattr(registry, "_stage_hook", hook)
    try:
        result = world.register(eval_dir)
    finally:
        monkeypatch.setattr(registry, "_stage_hook", None)
        proxy.set_default("relay")
    assert result.promoted
    assert proxy.seen[fault] == len(STAGES)
    _assert_consistent(world.tracking)


@pytest.mark.slow
def test_unreachable_server_fails_clearly_in_bounded_time_and_changes_nothing(world: World):
    world.start()
    before = _assert_consistent(world.tracking)
    eval_dir = world.evaluate()
    with FaultProxy(world.port) as proxy:
        proxy.set_default("reset")
        started = time.monotonic()
        with pytest.raises(RegistryError, match=rf"MLflow: .* failed after 4 attempts.*{proxy.url}.*up and reachable"):
            world.register(eval_dir, world.tracking.model_copy(update={"tracking_uri": proxy.url}))
        assert time.monotonic() - started < 30
    assert _snapshot(world.tracking) == before


def test_a_proxy_gone_down_refuses_and_resets_like_a_stopped_server_and_comes_back_on_its_port():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as upstream, FaultProxy(upstream.getsockname()[1]) as proxy:
        pooled = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        served, _ = upstream.accept()  # relayed: the proxy opened its own connection upstream
        pooled.sendall(b"ping")
        assert served.recv(4) == b"ping"
        proxy.down()
        with contextlib.suppress(ConnectionResetError):  # the open (pooled) connection is dropped: EOF, then RST
            assert pooled.recv(1) == b""
        with pytest.raises(ConnectionRefusedError):  # nothing listens: refused, as by a port no process holds
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.up()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as back:
            served, _ = upstream.accept()
            back.sendall(b"back")
            assert served.recv(4) == b"back"
        pooled.close()


# ---- the same rules on a local store, without a server: fast ------------------------------------------


def _local(tmp_path: Path, versions: int) -> TrackingConfig:
    tracking = params_cfg("tracking",
                          tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                          registered_model=MODEL)
    c = registry.client(tracking)
    c.create_registered_model(MODEL)
    for _ in range(versions):
        c.create_model_version(MODEL, str(tmp_path / "model"), tags={registry.REGISTRATION_TAG: "complete"})
    return tracking


def test_a_pending_version_is_never_promoted(tmp_path: Path):
    tracking = _local(tmp_path, 1)
    registry.client(tracking).set_model_version_tag(MODEL, "1", registry.REGISTRATION_TAG, "pending")
    record = tmp_path / "decision.json"
    record.write_text(json.dumps({"version": "1", "decision": "promoted", "champion_version": None, "summary": "ok"}))
    with pytest.raises(RegistryError, match=r"v1: its registration did not finish.*Re-run `headstart register`"):
        promote.run(record, tracking)
    assert registry.champion(tracking) is None


def test_a_move_committed_by_a_dead_run_is_finished_by_the_next(tmp_path: Path):
    tracking = _local(tmp_path, 2)
    with registry.lock(tracking):
        registry.move_champion(tracking, "1", "promote", "first")
    # a run that died right after moving the alias: intent written, alias moved, nothing after
    entry = {"version": "2", "previous": "1", "action": "promote", "reason": "better", "by": "ci",
             "at": "2030-01-01T00:00:00Z"}
    c = registry.client(tracking)
    c.set_model_version_tag(MODEL, "2", registry.PROMOTION_TAG, json.dumps(entry))
    c.set_registered_model_alias(MODEL, "champion", "2")
    assert registry.pending_move(tracking) == entry
    assert registry.repair(tracking) == entry
    assert registry.pending_move(tracking) is None and registry.repair(tracking) is None
    assert registry.history(tracking)[-1] == entry
    assert str(c.get_model_version_by_alias(MODEL, "previous-champion").version) == "1"
    assert c.get_model_version(MODEL, "2").tags["decision"] == "promoted"


def test_a_lock_left_by_a_killed_process_on_this_host_is_broken_at_once(tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys

    tracking = _local(tmp_path, 0)
    code = ("import os, time, sys; from headstart.registry import model_registry as registry\n"
            "from headstart.config import TrackingConfig\n"
            f"t = TrackingConfig(**{tracking.model_dump()!r})\n"
            "with registry.lock(t):\n    print('held', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HEADSTART_NO_PROGRESS": "1"})
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    started = time.monotonic()
    with registry.lock(tracking, timeout=10):
        pass
    assert time.monotonic() - started < 5  # not the ttl: the holder's pid is gone
