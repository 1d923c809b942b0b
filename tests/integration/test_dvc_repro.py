"""`dvc repro` of the project's dvc.yaml as a user runs it: a clone at the data tag, the packed dataset pulled
from its DVC remote on S3, the loop run as CLI stages against `mlflow server` (training and evaluation stream
from the shards); then cached, and re-run only where a param change reaches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import assert_loop_outputs

from .conftest import ROOT, STREAM, TAG, PackedRemote, SharedMlflow, dvc_md5, fresh_name, sh, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]
STAGES = ("validate", "train_finetune", "train_scratch", "champion", "evaluate", "register")


def _repro(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HEADSTART_NO_PROGRESS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(["dvc", "repro", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", log))


def _write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_on_a_clone_at_the_data_tag_caches_and_reruns_only_what_a_param_touches(
        packed_remote: PackedRemote, shared_mlflow: SharedMlflow, tmp_path: Path):
    from mlflow import MlflowClient

    repo, model = tmp_path / "repo", fresh_name("repro")
    sh(tmp_path, "git", "clone", "-q", "--branch", TAG, str(packed_remote.project), str(repo))
    sh(repo, "dvc", "pull", "-q", env=packed_remote.env())  # the endpoint from the remote's config
    assert json.loads((repo / "data" / "index.json").read_text()) == packed_remote.index
    assert dvc_md5(repo / "data.dvc") == packed_remote.md5
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = tiny_params(*STREAM, f"tracking.tracking_uri={shared_mlflow.url}",
                         f"tracking.experiment={fresh_name('repro')}", f"tracking.registered_model={model}")
    assert params["data"]["dir"] == "data"
    _write_params(repo, params)

    first = _repro(repo)
    assert _ran(first) == set(STAGES), first[-3000:]
    assert "promoted to champion" in first
    registration = json.loads((repo / "outputs/decision/registration.json").read_text())
    assert registration["promoted"] is True
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (dep,) = [d for d in lock["stages"]["validate"]["deps"] if d["path"] == "data"]
    assert dep["md5"] == packed_remote.md5
    assert dep["nfiles"] == 1 + sum(len(s["shards"]) for s in packed_remote.index["splits"].values())

    assert_loop_outputs(repo / "outputs", str(registration["version"]))

    status = sh(repo, sys.executable, "-m", "headstart.cli", "status", "--json")
    champion = json.loads(status)["champion"]
    assert champion["version"] == str(registration["version"])
    assert champion["data"] == packed_remote.md5  # the registered version points at the pulled shards
    client = MlflowClient(shared_mlflow.url)
    version = client.get_model_version_by_alias(model, "champion")
    assert version.tags["decision"] == "promoted" and version.tags["git.commit"] == packed_remote.rev
    for role in ("finetune", "scratch"):
        metrics = json.loads((repo / "outputs" / role / "metrics.json").read_text())
        assert metrics["first_step_seconds"] > 0, role
        run = client.get_run(metrics["run_id"]).data
        assert run.params["data_loading"] == "stream" and run.params["loader_workers"] == "1", role
        assert run.params["train_images"] == str(packed_remote.index["splits"]["train"]["count"]), role
        assert (repo / "outputs" / role / "model" / "model.safetensors").is_file()

    second = _repro(repo)
    assert _ran(second) == {"champion"}, second  # always runs; the champion it promoted is no change

    # one candidate's knob: the other stays cached. A dry run names the stages a changed param reaches without
    # running them; the stages after train_finetune (evaluate, register) re-run once its model changes, which a
    # dry run cannot show (their deps have not changed yet) and the first repro above proved
    params["train"]["finetune"]["lr_head"] *= 2
    _write_params(repo, params)
    weights = repo / "outputs" / "finetune" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    third = _repro(repo, "--dry")
    assert _ran(third) == {"champion", "train_finetune"}, third
    assert "Stage 'train_scratch' didn't change" in third and "Stage 'validate' didn't change" in third, third
    assert weights.stat().st_mtime_ns == before  # nothing ran
