"""The champion is an input of evaluate and register. dvc.yaml's `champion` stage
writes it to a file; a champion moved outside this loop re-runs both, and a no-op repro (or the loop's
own promotion) re-runs neither."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from headstart.registry.champion_ref import reference

from .servers import mlflow_server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "headstart-classifier"


def _changed(repo: Repo) -> dict[str, list[str]]:
    """Which of evaluate and register `dvc status` finds changed, and through which deps."""
    status = repo.status(targets=["evaluate", "register"])
    return {stage.split(":")[-1]: sorted(dep for entry in entries if isinstance(entry, dict)
                                         for dep in entry.get("changed deps", {}))
            for stage, entries in status.items()}


def _project(repo: Path) -> None:
    """dvc.yaml, params and code as in the project; the other stages' outputs as stand-ins (only their
    hashes matter to `dvc status`)."""
    repo.mkdir()
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for rel in ("outputs/validation/summary.json", "outputs/finetune/model/model.json",
                "outputs/scratch/model/model.json", "outputs/evaluation/metrics.json",
                "outputs/decision/decision.json"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("{}\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=repo, check=True)


@pytest.mark.integration
def test_a_champion_moved_outside_the_loop_reruns_evaluate_and_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    _project(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    with Repo(".") as repo, mlflow_server(tmp_path / "server") as (url, _):
        monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("HEADSTART_NO_PROGRESS", "1")
        ref = Path("outputs/champion.json")

        def repro_champion() -> str:
            repo.reproduce("champion", single_item=True)  # runs `headstart champion-ref ...`
            return ref.read_text()

        def commit() -> None:  # as if evaluate and register had just run
            for stage in ("evaluate", "register"):
                repo.commit(stage, force=True)

        first = repro_champion()
        assert json.loads(first) == {"registered_model": MODEL, "champion_version": None}
        commit()
        assert _changed(repo) == {}

        c = mlflow.MlflowClient(url)
        c.create_registered_model(MODEL)
        run_id = c.create_run("0").info.run_id
        for _ in range(3):
            c.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id)
        c.set_registered_model_alias(MODEL, "champion", "1")  # `headstart promote --version 1`, say
        assert json.loads(repro_champion())["champion_version"] == "1"
        assert _changed(repo) == {"evaluate": ["outputs/champion.json"], "register": ["outputs/champion.json"]}

        # evaluate and register re-run; register promotes its candidate, v2: the loop's own move
        Path("outputs/decision/registration.json").write_text(json.dumps(
            {"model_name": MODEL, "version": "2", "promoted": True, "decision": {"champion_version": "1"}}))
        c.set_registered_model_alias(MODEL, "champion", "2")
        commit()
        settled = repro_champion()
        assert json.loads(settled)["champion_version"] == "1"  # unchanged: a no-op repro stays a no-op
        assert _changed(repo) == {}

        c.set_registered_model_alias(MODEL, "champion", "3")  # another pipeline promoted its model
        assert json.loads(repro_champion())["champion_version"] == "3"
        assert _changed(repo) == {"evaluate": ["outputs/champion.json"], "register": ["outputs/champion.json"]}


def test_champion_reference_rules() -> None:
    none = {"registered_model": MODEL, "champion_version": None}
    promoted = {"model_name": MODEL, "version": "4", "promoted": True, "decision": {"champion_version": "3"}}
    rejected = {"model_name": MODEL, "version": "4", "promoted": False, "decision": {"champion_version": "3"}}
    v3 = {"registered_model": MODEL, "champion_version": "3"}
    assert reference(MODEL, None, None, None) == none
    assert reference(MODEL, "4", promoted, v3) == v3  # our own promotion
    assert reference(MODEL, "3", rejected, v3) == v3  # nothing moved
    assert reference(MODEL, "5", promoted, v3)["champion_version"] == "5"  # moved by someone else
    # rolled back to what evaluate compared against: evaluate's output holds, and re-running register
    # would only promote the rolled-back candidate again
    assert reference(MODEL, "3", promoted, v3) == v3
    assert reference(MODEL, "4", promoted, None)["champion_version"] == "4"  # no earlier file: the truth
    assert reference("other", "4", promoted, v3) == {"registered_model": "other", "champion_version": "4"}
