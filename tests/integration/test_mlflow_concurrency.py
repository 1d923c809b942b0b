"""Two or more runs reaching the gate at once against a real `mlflow server` on 127.0.0.1:
exactly one champion at a time, and no promotion is lost from the history."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from headstart.config import TrackingConfig
from headstart.registry import model_registry as registry
from tests.helpers import params_cfg

from .servers import mlflow_server

pytestmark = pytest.mark.integration
RUNS = 4


def _promote(uri: str, version: str, folder: str, barrier) -> bool:
    from headstart.steps import promote

    tracking = params_cfg("tracking", tracking_uri=uri, registered_model="race")
    decision = Path(folder) / f"d{version}.json"
    decision.write_text(json.dumps({"version": version, "decision": "promoted", "champion_version": None,
                                    "summary": "promoted: race"}))
    barrier.wait()
    return promote.run(decision, tracking).promoted


def _race(uri: str, fn, extra: tuple = ()) -> tuple[TrackingConfig, object, list]:
    """Register RUNS versions of "race", then call fn(uri, version, *extra, barrier) in RUNS processes at once."""
    tracking = params_cfg("tracking", tracking_uri=uri, registered_model="race")
    c = registry.client(tracking)
    c.create_registered_model("race")
    for _ in range(RUNS):
        c.create_model_version("race", "s3://bucket/race/model")
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(RUNS)
    with ctx.Pool(RUNS) as pool:
        outcomes = pool.starmap(fn, [(uri, str(v), *extra, barrier) for v in range(1, RUNS + 1)])
    return tracking, c, outcomes


def test_concurrent_first_promotions_elect_exactly_one_champion(tmp_path: Path):
    with mlflow_server(tmp_path / "server") as (uri, _):
        tracking, c, outcomes = _race(uri, _promote, (str(tmp_path),))
        # every run compared against "no champion": only the first through the lock may promote
        assert sum(outcomes) == 1
        winner = str(outcomes.index(True) + 1)
        assert registry.champion(tracking).version == winner
        history = registry.history(tracking)
        assert [h["version"] for h in history] == [winner]
        rejected = [str(v) for v in range(1, RUNS + 1) if str(v) != winner]
        for v in rejected:
            assert c.get_model_version("race", v).tags["decision"] == "rejected"


def _override(uri: str, version: str, barrier) -> str | None:
    from headstart.registry import lifecycle

    barrier.wait()
    return lifecycle.override(params_cfg("tracking", tracking_uri=uri, registered_model="race"), version, "race test")


def test_concurrent_overrides_lose_no_history_entry(tmp_path: Path):
    with mlflow_server(tmp_path / "server") as (uri, _):
        tracking, _, _ = _race(uri, _override)
        history = registry.history(tracking)
        assert sorted(h["version"] for h in history) == [str(v) for v in range(1, RUNS + 1)]
        # the history is a chain: each entry's previous is the entry before it
        assert [h["previous"] for h in history] == [None] + [h["version"] for h in history[:-1]]
        assert registry.champion(tracking).version == history[-1]["version"]
