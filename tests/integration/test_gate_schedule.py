"""The gate's schedule state in the registry, against `mlflow server` on PostgreSQL: two
pipelines counting at once under the lock both count, the state outlives a restarted server, a person's
promotion resets it, and a corrupt state stops registration with nothing registered or promoted."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from headstart.config import TrackingConfig
from headstart.errors import RegistryError
from headstart.evaluation.gate import ModelEval, ScheduleState, alpha_per_run, decide
from headstart.registry import lifecycle
from headstart.registry import model_registry as registry
from headstart.steps import promote, register
from tests.helpers import params_cfg

from .servers import Postgres, mlflow_server, postgres_server

pytestmark = pytest.mark.integration
CLASSES = ("a", "b", "c")
THRESHOLDS = params_cfg("gate", min_accuracy=0.0, min_gain_over_baseline=None, max_negative_flip_rate=None)


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as cluster:
        yield cluster


@contextmanager
def _server(pg: Postgres, root: Path, db: str) -> Iterator[str]:
    """`mlflow server` on database `db`; a second one on the same database is the same registry, restarted."""
    with mlflow_server(root, backend=pg.uri(db), artifacts=(root.parent / f"{db}-artifacts").as_uri()) as (url, _):
        yield url


@pytest.fixture(autouse=True)
def _no_client_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def _models(n: int = 600) -> tuple[ModelEval, ModelEval]:
    """A candidate and a champion on the same images: equal accuracy, some flips each way."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(CLASSES), n)
    champ, cand = y.copy(), y.copy()
    champ[:60] = (y[:60] + 1) % len(CLASSES)
    cand[30:90] = (y[30:90] + 1) % len(CLASSES)
    return (ModelEval("scratch", y, cand, CLASSES), ModelEval("champion", y, champ, CLASSES, version="1"))


def _record(folder: Path, version: str, verdict: str) -> Path:
    """The decision record register writes for `version`, judged against champion v1 by the real gate."""
    cand, champ = _models()
    record = {**decide(cand, cand, champ, THRESHOLDS).to_dict(), "version": version, "champion_version": "1"}
    record.update(decision=verdict, summary=f"{verdict}: racing run v{version}")
    path = folder / f"decision-{version}.json"
    path.write_text(json.dumps(record))
    return path


def _registry_with_champion(url: str, model: str, versions: int) -> TrackingConfig:
    tracking = params_cfg("tracking", tracking_uri=url, registered_model=model, experiment=f"{model}-exp")
    c = registry.client(tracking)
    c.create_registered_model(model)
    for _ in range(versions):
        c.create_model_version(model, f"s3://bucket/{model}/model", tags={registry.REGISTRATION_TAG: "complete"})
    with registry.lock(tracking):
        registry.move_champion(tracking, "1", "promote", "first champion")
    return tracking


def _racer(url: str, model: str, record: str, barrier) -> bool:
    """One pipeline's promote step: takes the lock, counts its run, promotes or records the rejection."""
    barrier.wait()
    return promote.run(Path(record), params_cfg("tracking", tracking_uri=url, registered_model=model)).promoted


def test_two_racing_pipelines_both_count_the_state_survives_a_restart_and_a_manual_promotion_resets_it(
        pg: Postgres, tmp_path: Path):
    model = "sched"
    records = [str(_record(tmp_path, "2", "promoted")), str(_record(tmp_path, "3", "promoted"))]
    alpha = alpha_per_run(THRESHOLDS)
    with _server(pg, tmp_path / "first", "sched") as url:
        tracking = _registry_with_champion(url, model, versions=3)
        assert registry.read_schedule(tracking) == ScheduleState()  # no judged run yet
        ctx = mp.get_context("spawn")
        barrier = ctx.Manager().Barrier(2)
        with ctx.Pool(2) as pool:
            promoted = pool.starmap(_racer, [(url, model, r, barrier) for r in records])
        assert sorted(promoted) == [False, True]  # the loser compared against v1, which had moved meanwhile
        state = registry.read_schedule(tracking)
        assert (state.window, state.window_runs) == (1, 2)  # both counted, neither overwrote the other
        assert state.alpha_spent == pytest.approx(2 * alpha)
        assert promote.run(Path(records[0]), tracking).schedule == asdict(state)  # a re-run counts once
        before = asdict(registry.read_schedule(tracking))

    with _server(pg, tmp_path / "restarted", "sched") as url:  # the same database behind a new server
        tracking = params_cfg("tracking", tracking_uri=url, registered_model=model, experiment=f"{model}-exp")
        assert asdict(registry.read_schedule(tracking)) == before
        assert lifecycle.status(tracking)["gate_schedule"] == before
        champion = registry.champion(tracking).version
        lifecycle.override(tracking, "2" if champion == "3" else "3", "the team reviewed it")
        state = registry.read_schedule(tracking)
        assert (state.window, state.window_runs, state.alpha_spent) == (2, 0, 0.0)
        assert state.reset_reason.startswith("manual promotion of v") and "the team reviewed it" in state.reset_reason
        assert registry.history(tracking)[-1]["action"] == "override"


def _evaluation(folder: Path) -> Path:
    """An evaluation folder as evaluate writes it, champion v1 included."""
    cand, champ = _models()
    folder.mkdir(parents=True)
    np.savez(folder / "predictions.npz", y_true=cand.y_true, pred_finetune=cand.y_pred, pred_scratch=cand.y_pred,
             pred_champion=champ.y_pred, paths=np.array([f"test/a/{i}.png" for i in range(cand.y_true.size)]))
    models = {m: {"accuracy": 0.9, "macro_f1": 0.9} for m in ("finetune", "scratch", "champion")}
    (folder / "metrics.json").write_text(json.dumps({"classes": list(CLASSES), "champion_version": "1",
                                                     "models": models}))
    return folder


def test_a_corrupt_state_stops_registration_naming_the_model_and_nothing_is_registered(pg: Postgres, tmp_path: Path):
    model = "corrupt-sched"
    with _server(pg, tmp_path / "server", "corrupt") as url:
        tracking = _registry_with_champion(url, model, versions=1)
        c = registry.client(tracking)
        c.set_registered_model_tag(model, registry.SCHEDULE_TAG, '{"window_runs": "many"')
        out = tmp_path / "decision"
        with pytest.raises(RegistryError) as failure:
            register.run(params_cfg("register"), THRESHOLDS, tmp_path / "data",
                         {"finetune": tmp_path / "finetune", "scratch": tmp_path / "scratch"},
                         _evaluation(tmp_path / "evaluation"), out, tracking)
        assert model in str(failure.value) and "headstart promote" in str(failure.value)
        assert [str(v.version) for v in c.search_model_versions(f"name='{model}'")] == ["1"]
        assert registry.champion(tracking).version == "1" and not out.exists()
        assert "error" in lifecycle.status(tracking)["gate_schedule"]  # status shows it instead of failing

        lifecycle.override(tracking, "1", "reset the corrupt gate state")  # re-promoting the champion resets it
        state = registry.read_schedule(tracking)
        assert (state.window_runs, state.alpha_spent) == (0, 0.0) and "reset the corrupt" in state.reset_reason
        assert registry.champion(tracking).version == "1"
