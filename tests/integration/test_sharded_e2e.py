"""A tiny sharded dataset end to end (issue 16): `headstart data pack` -> `dvc add` -> validate -> train both
(streamed from the shards) -> evaluate -> register -> promote, three ways: the CLI against `mlflow server`,
`dvc repro` of the project's dvc.yaml, and kfp.local fetching the shards from a git tag and its DVC remote.

One packed dataset (module fixture) serves all three; each writes its outputs somewhere of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import make_imagefolder
from tests.integration.servers import mlflow_server
from tests.integration.test_cli import _run
from tests.integration.test_dvc_repro import STAGES, _ran, _repro, tiny_params
from tests.pipeline.test_local_e2e import ARGS, TINY, outputs

pytestmark = [pytest.mark.slow, pytest.mark.scale]  # make test-scale (CI runs it after make test)
ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")
SHARD_BYTES = 16 * 1024  # ~4 samples a shard at 28 px: every split gets several shards
TAG = "data-v1"
# Both candidates small_cnn from random weights (as test_local_e2e), streamed through one loader worker.
SMALL = ["train.finetune.backbone=small_cnn", "train.finetune.weights=none", "train.finetune.probe_epochs=0",
         "train.scratch.backbone=small_cnn"]
STREAM_TRAIN = ["train.shared.data_loading=stream", "train.shared.loader_workers=1"]
STREAM_EVAL = ["evaluate.data_loading=stream", "evaluate.loader_workers=1"]


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
    return out.stdout.strip()


def _git_dvc_project(repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    _sh(repo, "git", "init", "-q")
    _sh(repo, DVC, "init", "-q")


def _project_params(*overrides: str) -> dict[str, Any]:
    """test_dvc_repro's tiny params, both candidates small_cnn, validation in one worker; then `overrides`."""
    from headstart.config import apply_override

    params = tiny_params()
    for item in ["validate.workers=1", *SMALL, *overrides]:
        apply_override(params, item)
    return params


def _dvc_md5(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


@dataclass(frozen=True)
class Packed:
    project: Path  # git + DVC project: data/ (the shards, `dvc add`ed), data.dvc and params.yaml, committed
    remote: Path  # the DVC remote (a folder) the shards were pushed to
    rev: str  # the commit tagged TAG
    md5: str  # what data.dvc pins
    index: dict[str, Any]  # data/index.json


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    root = tmp_path_factory.mktemp("sharded")
    images = make_imagefolder(root / "images")  # 3 classes, 12 train / 4 val / 6 test each, 28 px PNG
    project, remote = root / "project", root / "remote"
    _git_dvc_project(project)
    (project / "params.yaml").write_text(yaml.safe_dump(_project_params(), sort_keys=False))
    out = _run(["data", "pack", "--data", str(images), "--out", "data", "--shard-size", str(SHARD_BYTES)],
               cwd=project)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    index = json.loads((project / "data" / "index.json").read_text())
    assert index["classes"] == ["circle", "square", "stripes"]
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        assert index["splits"][split]["count"] == 3 * n, split
        assert len(index["splits"][split]["shards"]) >= 2, split  # streaming has shards to deal out
    assert not any(p.suffix == ".png" for p in (project / "data").rglob("*"))
    _sh(project, DVC, "add", "-q", "data")
    _sh(project, DVC, "remote", "add", "-q", "-d", "store", str(remote))
    _sh(project, DVC, "push", "-q")
    _sh(project, "git", "add", "-A")
    _sh(project, "git", "commit", "-qm", "pin the sharded dataset")
    _sh(project, "git", "tag", TAG)
    md5 = _dvc_md5(project / "data.dvc")
    assert md5.endswith(".dir")
    return Packed(project, remote, _sh(project, "git", "rev-parse", "HEAD"), md5, index)


@pytest.mark.integration
def test_cli_loop_on_shards_against_mlflow_server(packed: Packed, tmp_path: Path):
    """Every step through the real entry point with --data <shards>; training and evaluation stream."""
    from mlflow import MlflowClient

    project = packed.project
    with mlflow_server(tmp_path / "server") as (url, _):
        tracking = _sets([f"tracking.tracking_uri={url}"])
        steps = [
            ["validate", "--data", "data", "--out", "outputs/validation"],
            ["train", "finetune", "--data", "data", "--out", "outputs/finetune", *_sets(STREAM_TRAIN)],
            ["train", "scratch", "--data", "data", "--out", "outputs/scratch", *_sets(STREAM_TRAIN)],
            ["evaluate", "--data", "data", "--out", "outputs/evaluation", *_sets(STREAM_EVAL)],
            ["register", "--data", "data", "--eval", "outputs/evaluation", "--out", "outputs/decision"],
        ]
        logs = {}
        for args in steps:
            out = _run([*args, *tracking], cwd=project)
            assert out.returncode == 0, f"headstart {' '.join(args)}:\n{out.stdout[-2000:]}{out.stderr[-4000:]}"
            logs[args[0]] = out.stderr
        assert "validation passed" in logs["validate"]
        assert "promoted to champion" in logs["register"], logs["register"]

        status = _run(["status", "--json", *tracking], cwd=project)
        assert status.returncode == 0, status.stderr
        champion = json.loads(status.stdout)["champion"]
        registration = json.loads((project / "outputs/decision/registration.json").read_text())
        assert registration["promoted"] is True
        assert champion["version"] == str(registration["version"])
        assert champion["data"] == packed.md5  # the registered version points at the `dvc add`ed shards

        client = MlflowClient(url)
        for role in ("finetune", "scratch"):
            metrics = json.loads((project / "outputs" / role / "metrics.json").read_text())
            assert metrics["first_step_seconds"] > 0, role
            run = client.get_run(metrics["run_id"]).data
            assert run.params["data_loading"] == "stream" and run.params["loader_workers"] == "1", role
            assert run.params["train_images"] == str(packed.index["splits"]["train"]["count"]), role
            assert (project / "outputs" / role / "model" / "model.safetensors").is_file()

    report = json.loads((project / "outputs/validation/report.json").read_text())
    assert report["passed"] is True
    assert (project / "outputs/validation/report.html").is_file()
    evaluation = json.loads((project / "outputs/evaluation/metrics.json").read_text())
    for name in ("finetune", "scratch"):
        assert 0.0 <= evaluation["models"][name]["accuracy"] <= 1.0, name
    assert (project / "outputs/evaluation/report.html").is_file()
    assert (project / "outputs/decision/decision.md").is_file()


def test_dvc_repro_runs_the_loop_on_the_shards(packed: Packed, tmp_path: Path):
    """dvc.yaml as committed, over a `dvc add`ed shard folder at params' data.dir (`data`); training streams
    by params.yaml."""
    repo = tmp_path / "repo"
    _git_dvc_project(repo)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = _project_params(*STREAM_TRAIN, *STREAM_EVAL)
    assert params["data"]["dir"] == "data"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(packed.project / "data", repo / "data")
    _sh(repo, DVC, "add", "-q", "data")
    assert _dvc_md5(repo / "data.dvc") == packed.md5  # the same shards hash the same

    log = _repro(repo)
    assert _ran(log) == set(STAGES), log[-3000:]
    assert "promoted to champion" in log
    assert json.loads((repo / "outputs/decision/registration.json").read_text())["promoted"] is True
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (dep,) = [d for d in lock["stages"]["validate"]["deps"] if d["path"] == "data"]
    assert dep["md5"] == packed.md5
    assert dep["nfiles"] == 1 + sum(len(s["shards"]) for s in packed.index["splits"].values())


@pytest.fixture(scope="module")
def sharded_local_run(packed: Packed, tmp_path_factory: pytest.TempPathFactory):
    """The pipeline under kfp.local with the shards fetched by tag from the project's git and DVC remote
    (its local DVC cache removed, as a pod has none)."""
    from headstart.pipeline import run_local

    shutil.rmtree(packed.project / ".dvc" / "cache", ignore_errors=True)
    tmp = tmp_path_factory.mktemp("kfp-sharded")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mp.chdir(tmp)
    try:
        overrides = [f"tracking.artifact_root={tmp}/artifacts", *TINY, *STREAM_TRAIN, *STREAM_EVAL]
        arguments = {**ARGS, "data_repo": str(packed.project), "data_rev": TAG, "dvc_remote": str(packed.remote)}
        run = run_local(tmp / "root", params_file=ROOT / "params.yaml", overrides=overrides, arguments=arguments)
        yield run, tmp
    finally:
        mp.undo()


def test_kfp_local_pipeline_on_shards_from_a_dvc_remote(packed: Packed, sharded_local_run):
    from mlflow import MlflowClient

    run, tmp = sharded_local_run
    assert run.decision is not None and run.decision["decision"] == "promoted", run
    champion = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db").get_model_version_by_alias(
        "tiny-clf", "champion")
    assert str(champion.version) == str(run.decision["version"])
    assert champion.tags["data.dvc_md5"] == packed.md5 and champion.tags["git.commit"] == packed.rev

    fetched = Path(outputs(run.run_dir, "fetch-data")["dataset"]["uri"])
    assert json.loads((fetched / "index.json").read_text()) == packed.index
    assert sorted(p.name for p in fetched.rglob("*.tar")) == sorted(
        Path(s["file"]).name for split in packed.index["splits"].values() for s in split["shards"])
    assert outputs(run.run_dir, "validate-data")["summary"]["metadata"]["passed"] == 1.0
    for task in ("train-candidate", "train-candidate-2"):
        model = Path(outputs(run.run_dir, task)["model"]["uri"])
        assert (model / "model" / "model.safetensors").is_file(), task
    ev = outputs(run.run_dir, "evaluate-candidates")
    for name in ("finetune", "scratch"):
        matrix = ev[f"{name}_confusion"]["metadata"]["confusionMatrix"]
        assert sum(sum(row["row"]) for row in matrix["rows"]) == packed.index["splits"]["test"]["count"]
