"""Champion lifecycle against a real MLflow store: override, rollback, status, stale promotions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headstart.config import TrackingConfig
from headstart.errors import ConfigError, RegistryError
from headstart.registry import lifecycle
from headstart.registry import model_registry as registry
from headstart.steps import promote
from tests.helpers import params_cfg


@pytest.fixture
def tracking(tmp_path: Path) -> TrackingConfig:
    t = params_cfg("tracking", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                   registered_model="lc")
    c = registry.client(t)
    c.create_registered_model("lc")
    src = tmp_path / "src"
    src.mkdir()
    for _ in range(3):
        c.create_model_version("lc", str(src))
    return t


def _decision(tmp_path: Path, version: str, compared: str | None, verdict: str = "promoted") -> Path:
    f = tmp_path / f"decision-{version}.json"
    f.write_text(json.dumps({"version": version, "decision": verdict, "champion_version": compared,
                             "summary": f"{verdict}: test"}))
    return f


def test_promote_rollback_override_and_status(tracking: TrackingConfig, tmp_path: Path):
    assert promote.run(_decision(tmp_path, "1", None), tracking).promoted
    assert promote.run(_decision(tmp_path, "2", "1"), tracking).previous_champion == "1"
    assert registry.champion(tracking).version == "2"

    assert lifecycle.rollback(tracking, "bad predictions") == ("2", "1")
    assert registry.champion(tracking).version == "1"

    with pytest.raises(ConfigError, match="--reason"):
        lifecycle.override(tracking, "3", "  ")
    assert lifecycle.override(tracking, "3", "hotfix approved by the team") == "1"
    info = lifecycle.status(tracking)
    assert info["champion"]["version"] == "3"
    assert [(h["action"], h["version"]) for h in info["history"]] == [
        ("promote", "1"), ("promote", "2"), ("rollback", "1"), ("override", "3")]
    assert info["history"][-1]["reason"] == "hotfix approved by the team" and info["history"][-1]["by"]
    mv = registry.client(tracking).get_model_version("lc", "3")
    assert mv.tags["override_reason"] == "hotfix approved by the team"


def test_rejected_decision_tags_and_leaves_champion(tracking: TrackingConfig, tmp_path: Path):
    promote.run(_decision(tmp_path, "1", None), tracking)
    out = promote.run(_decision(tmp_path, "2", "1", verdict="rejected"), tracking)
    assert not out.promoted and registry.champion(tracking).version == "1"
    assert lifecycle.status(tracking)["rejected"][0]["version"] == "2"


def test_stale_promotion_is_refused(tracking: TrackingConfig, tmp_path: Path):
    promote.run(_decision(tmp_path, "1", None), tracking)
    promote.run(_decision(tmp_path, "2", "1"), tracking)
    stale = promote.run(_decision(tmp_path, "3", "1"), tracking)  # compared against v1, champion is v2
    assert not stale.promoted and "moved" in stale.reason
    assert registry.champion(tracking).version == "2"


def test_rollback_without_history_and_unknown_version_are_clear_errors(tracking: TrackingConfig, tmp_path):
    with pytest.raises(RegistryError, match="no champion"):
        lifecycle.rollback(tracking)
    promote.run(_decision(tmp_path, "1", None), tracking)
    with pytest.raises(RegistryError, match="no previous champion"):
        lifecycle.rollback(tracking)
    with pytest.raises(RegistryError, match="v42 does not exist"):
        lifecycle.override(tracking, "42", "because")


def test_lock_is_exclusive_and_stale_locks_are_broken(tracking: TrackingConfig):
    with (registry.lock(tracking, owner="a"), pytest.raises(RegistryError, match="still held"),
          registry.lock(tracking, owner="b", timeout=0.5)):
        pass
    # the holder's expiry has passed: the lock is broken and taken
    with registry.lock(tracking, owner="dead", ttl=-1), registry.lock(tracking, owner="b", timeout=2):
        pass


def test_second_rollback_reaches_v1_not_v3_again(tracking: TrackingConfig, tmp_path: Path):
    """Rollbacks walk back along the promotions; the second one used to re-promote v3."""
    c = registry.client(tracking)
    assert promote.run(_decision(tmp_path, "1", None), tracking).promoted
    assert promote.run(_decision(tmp_path, "2", "1"), tracking).promoted
    assert promote.run(_decision(tmp_path, "3", "2"), tracking).promoted

    assert lifecycle.rollback(tracking, "v3 misbehaves") == ("3", "2")
    assert str(c.get_model_version_by_alias("lc", "previous-champion").version) == "1"  # where the next one goes
    assert lifecycle.rollback(tracking, "v2 misbehaves too") == ("2", "1")
    assert registry.champion(tracking).version == "1"
    with pytest.raises(Exception, match="not found|does not exist|RESOURCE_DOES_NOT_EXIST|INVALID_PARAMETER"):
        c.get_model_version_by_alias("lc", "previous-champion")  # nothing further back
    with pytest.raises(RegistryError, match="no previous champion"):
        lifecycle.rollback(tracking)
    assert [(h["action"], h["version"], h["previous"]) for h in registry.history(tracking)] == [
        ("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2"),
        ("rollback", "2", "3"), ("rollback", "1", "2")]


def test_rollback_after_an_override_returns_to_the_state_before_it(tracking: TrackingConfig, tmp_path: Path):
    """Promote 1, 2; roll back to 1; override to 3: rollbacks then go 3 -> 1 (the state the override
    replaced), and stop there: v2 was rolled back already and is not re-promoted."""
    promote.run(_decision(tmp_path, "1", None), tracking)
    promote.run(_decision(tmp_path, "2", "1"), tracking)
    assert lifecycle.rollback(tracking, "bad") == ("2", "1")
    assert lifecycle.override(tracking, "3", "hotfix") == "1"
    assert lifecycle.rollback(tracking, "hotfix broke it") == ("3", "1")
    with pytest.raises(RegistryError, match="no previous champion"):
        lifecycle.rollback(tracking)
    assert registry.champion(tracking).version == "1"


def _judged(tmp_path: Path, version: str, compared: str, verdict: str, alpha: float = 0.001,
            horizon: int = 52) -> Path:
    """A decision record of a run judged against a champion: it spent `alpha` of the gate's budget."""
    f = _decision(tmp_path, version, compared, verdict)
    record = json.loads(f.read_text())
    record.update(schedule={"alpha_run": alpha, "before": None, "after": {"horizon_runs": horizon}},
                  thresholds={"horizon_runs": horizon})
    f.write_text(json.dumps(record))
    return f


def test_judged_runs_count_once_each_promoted_or_rejected(tracking: TrackingConfig, tmp_path: Path):
    assert promote.run(_decision(tmp_path, "1", None), tracking).schedule is None  # first run: nothing compared
    assert registry.read_schedule(tracking).window_runs == 0
    rejected = promote.run(_judged(tmp_path, "2", "1", "rejected"), tracking)
    assert not rejected.promoted and rejected.schedule["window_runs"] == 1  # a rejection spent its alpha too
    assert promote.run(_judged(tmp_path, "2", "1", "rejected"), tracking).schedule["window_runs"] == 1  # re-run
    promoted = promote.run(_judged(tmp_path, "3", "1", "promoted"), tracking)
    assert promoted.promoted and promoted.schedule["window_runs"] == 2
    assert promote.run(_judged(tmp_path, "3", "1", "promoted"), tracking).schedule["window_runs"] == 2
    state = registry.read_schedule(tracking)
    assert (state.window, state.window_runs, state.horizon_runs) == (1, 2, 52)
    assert state.alpha_spent == pytest.approx(0.002)
    assert lifecycle.status(tracking)["gate_schedule"]["window_runs"] == 2


def test_a_persons_override_or_rollback_opens_a_fresh_window_saying_why(tracking: TrackingConfig, tmp_path: Path):
    promote.run(_decision(tmp_path, "1", None), tracking)
    promote.run(_judged(tmp_path, "2", "1", "promoted"), tracking)
    assert registry.read_schedule(tracking).window_runs == 1
    lifecycle.override(tracking, "3", "hotfix approved")
    state = registry.read_schedule(tracking)
    assert (state.window_runs, state.alpha_spent) == (0, 0.0) and state.window == 2
    assert state.reset_reason == f"manual promotion of v3 by {registry.current_user()}: hotfix approved"
    promote.run(_judged(tmp_path, "1", "3", "rejected"), tracking)
    assert registry.read_schedule(tracking).window_runs == 1
    lifecycle.rollback(tracking, "v3 misbehaves")
    state = registry.read_schedule(tracking)
    assert state.window_runs == 0 and state.window == 3
    assert state.reset_reason == f"rollback from v3 to v2 by {registry.current_user()}: v3 misbehaves"


def test_the_schedule_is_written_only_under_the_lock(tracking: TrackingConfig):
    with pytest.raises(RegistryError, match="only under the registry lock"):
        registry.write_schedule(tracking, registry.read_schedule(tracking).after_run(0.001, 52))
