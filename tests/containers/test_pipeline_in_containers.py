"""The production form on one machine: the compiled pipeline under kfp.local.DockerRunner in the
component images `make images` builds, as the image's user, against `mlflow server` on a throw-away PostgreSQL
cluster with S3 artifacts (moto) and basic auth, fetching a DVC-tracked dataset from a git repository and an S3
remote. Run with `make test-containers` (builds or reuses the images first).

One module-scoped run feeds most tests; a second run (after 100 promotions) has its training container killed
mid-run and must resume on retry from the checkpoint, and register a second version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from headstart.config import TrackingConfig
from tests.containers.stack import SECRET_PW, SECRET_S3, Stack, production_stack
from tests.helpers import params_cfg
from tests.integration.servers import ADMIN
from tests.pipeline.conftest import ROOT, TINY

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]

MODEL = "containers-clf"
ARGS = {"backbone": "small_cnn", "weights": "none", "image_size": 32, "epochs": 1, "images_per_class": 0,
        "min_accuracy": 0.0, "min_gain_over_baseline": -1.0, "registered_model": MODEL}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from headstart.kfp.local import default_image

    for ref in (default_image(), default_image() + "-cuda"):  # run_local checks too; this says what to do first
        assert subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0 or os.environ.get(
            "DOCKER_HOST"), f"{ref} is not built; run `make images` (make test-containers does)"
    with production_stack(tmp_path_factory.mktemp("containers")) as st:
        yield st


def run_pipeline(stack: Stack, root: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str] | None = None,
                 runner: str = "docker", **args: object):
    from headstart.kfp.local import run_local

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    arguments = {**ARGS, "data_repo": stack.repo_url, "data_rev": "main", **args}
    return run_local(root, params_file=ROOT / "params.yaml", overrides=[*TINY, *(extra or [])],
                     arguments=arguments, runner=runner)


@pytest.fixture(scope="module")
def first(stack: Stack):
    mp = pytest.MonkeyPatch()
    try:
        yield run_pipeline(stack, stack.tmp / "root", mp)
    finally:
        mp.undo()


def _make_venv(venv: Path, requirements: Path) -> Path:
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(requirements)], check=True, timeout=1800)
    return venv


@pytest.fixture(scope="module", autouse=True)
def served_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Future[Path]]]:
    """A venv made from the requirements a registration logs (logged_model.pip_requirements, the same pins the
    images install), built in the background from the module's start: ~2.5 min of pip beside the pipeline runs.
    The serving test uses it only if the champion's logged requirements.txt lists exactly these."""
    from headstart.registry.logged_model import pip_requirements

    folder = tmp_path_factory.mktemp("served-venv")
    pins = pip_requirements()
    (folder / "requirements.txt").write_text("\n".join(pins) + "\n")
    with ThreadPoolExecutor(1) as pool:
        yield pins, pool.submit(_make_venv, folder / "venv", folder / "requirements.txt")


def _as(stack: Stack, monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> TrackingConfig:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.url)
    return params_cfg("tracking", tracking_uri=stack.url, registered_model=MODEL, experiment="headstart")


def test_every_task_ran_in_the_image_as_its_non_root_user(first):
    functions = [r["function"] for r in first.containers]
    assert set(functions) == {"resolve_data_rev", "fetch_data", "validate_data", "train_candidate",
                              "evaluate_candidates", "register_and_gate", "act_on_decision"}, functions
    assert functions.count("train_candidate") == 2
    assert all(r["exit_code"] == 0 for r in first.containers)
    assert {r["user"] for r in first.containers} == {"10001:10001"}
    from headstart.kfp.local import default_image

    assert {r["image"] for r in first.containers} == {default_image(), default_image() + "-cuda"}
    # the outputs on the bind-mounted pipeline root were written by uid 10001, not by this (the venv's) process
    owners = {p.stat().st_uid for p in first.run_dir.rglob("executor_output.json")}
    assert owners == {10001} and os.getuid() != 10001
    assert len(list(first.run_dir.rglob("executor_output.json"))) >= len(functions) - 1


def test_registered_and_promoted_on_postgres_with_the_servers_artifact_store(first, stack, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    assert first.decision is not None and first.decision["decision"] == "promoted", first.decision
    _as(stack, monkeypatch, "pipeline", SECRET_PW)
    client = MlflowClient(tracking_uri=stack.url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == str(first.decision["version"])
    exp = mlflow.MlflowClient(tracking_uri=stack.url).get_experiment_by_name("headstart")
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # the server's store
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3, aws_access_key_id="k", aws_secret_access_key="s",
                      region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]


def test_no_credential_in_logs_database_or_spec(first, stack, tmp_path):
    logs = list((first.run_dir / "logs").glob("*.log"))
    assert len(logs) == len(first.containers)
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "headstart" in text  # the logs are real
    dump = subprocess.run([str(stack.pg_bindir / "pg_dump"), stack.pg_uri.replace("postgresql+psycopg2", "postgresql")],
                          check=True, capture_output=True, text=True).stdout
    assert "registered_models" in dump
    spec = tmp_path / "spec.yaml"
    subprocess.run([str(Path(sys.executable).parent / "headstart"), "pipeline", "compile", "--out", str(spec)],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, **stack.env})
    for secret in (SECRET_S3, SECRET_PW, ADMIN[1]):
        assert secret not in text
        assert secret not in dump
        assert secret not in spec.read_text()


def test_a_failing_component_fails_the_run(stack, monkeypatch, tmp_path):
    from headstart.errors import HeadstartError

    # the task's retry policy (pipeline.fetch_retries), with a short backoff: kfp.local honours both
    with pytest.raises(HeadstartError, match=r"resolve_data_rev, attempt 2\) exited with 1"):
        run_pipeline(stack, tmp_path / "root", monkeypatch, data_rev="no-such-branch",
             extra=["pipeline.fetch_retries=1", "pipeline.retry_backoff=1s"])


def test_served_model_works_in_a_fresh_env_from_its_logged_requirements(first, stack, served_venv, tmp_path,
                                                                        monkeypatch):
    """The registered champion loads through mlflow.pyfunc in a venv made only from its requirements.txt and
    predicts what the containerized evaluation predicted on the same images."""
    from mlflow.artifacts import download_artifacts

    _as(stack, monkeypatch, "pipeline", SECRET_PW)
    local = Path(download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path / "model")))
    reqs = local / "requirements.txt"
    logged = sorted(line.strip() for line in reqs.read_text().splitlines() if line.strip() and line[0] != "#")
    pins, built = served_venv
    # the venv built meanwhile holds exactly the logged requirements, or one is made from them now
    venv = built.result() if logged == sorted(pins) else _make_venv(tmp_path / "venv", reqs)
    data = stack.tmp / "git" / "data-repo" / "data"
    evaluated = np.load(next(first.run_dir.glob("evaluate-candidates/evaluation/predictions.npz")))
    images = [data / p for p in evaluated["paths"].tolist()]
    classes = sorted(p.name for p in (data / "test").iterdir())  # ImageFolder order
    expected = [classes[i] for i in evaluated[f"pred_{first.decision['winner']}"].tolist()]
    script = tmp_path / "serve.py"
    script.write_text(
        "import json, sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "out = m.predict(pd.DataFrame({'image': [open(p, 'rb').read() for p in sys.argv[2:]]}))\n"
        "print(json.dumps(out['label'].tolist()))\n")
    served = json.loads(subprocess.run([str(venv / "bin" / "python"), str(script), str(local), *map(str, images)],
                                       check=True, capture_output=True, text=True,
                                       env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}).stdout)
    assert served == expected


def test_after_100_promotions_a_killed_training_resumes_and_registers_again(first, stack, monkeypatch):
    """Second run: 100 champion moves on PostgreSQL first; then its training container is killed after its
    first checkpoint, the retry resumes from that checkpoint, and the run registers a second version."""
    import docker

    from headstart.kfp.containers import LABEL_FUNCTION
    from headstart.registry import model_registry as registry

    tracking = _as(stack, monkeypatch, "pipeline", SECRET_PW)
    c = registry.client(tracking)
    versions = [str(first.decision["version"])]
    for _ in range(4):  # more versions, so each move changes the champion; the 100th move ends on the real one
        versions.append(str(c.create_model_version(MODEL, f"s3://{stack.bucket}/placeholder/model",
                                                   tags={registry.REGISTRATION_TAG: "complete"}).version))
    moves = [versions[(i + 1) % len(versions)] for i in range(100)]  # ends on the first version
    for start in range(0, 100, 20):
        with registry.lock(tracking):
            for i in range(start, start + 20):
                registry.move_champion(tracking, moves[i], "promote", f"move {i + 1}")
    root = stack.tmp / "root2"
    killed: list[str] = []

    def killer() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not killed:
            if list((root / "workspace").rglob("epoch-*.pt")):
                client = docker.from_env()
                for ctr in client.containers.list(filters={"label": f"{LABEL_FUNCTION}=train_candidate"}):
                    ctr.kill()
                    killed.append(ctr.id)
                client.close()
            time.sleep(0.2)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    extra = ["train.shared.patience=100", "train.shared.checkpoint_every_steps=1", "pipeline.retry_backoff=1s"]
    second = run_pipeline(stack, root, monkeypatch, extra=extra, epochs=12)
    watcher.join(5)
    assert killed, "the training container was never seen with a checkpoint"
    trains = [r for r in second.containers if r["function"] == "train_candidate"]
    assert [r["exit_code"] for r in trains][:2] == [137, 0], trains
    metrics = [json.loads(p.read_text()) for p in second.run_dir.glob("train-candidate*/executor_output.json")]
    resumed = [m for m in metrics if "resumed_from" in json.dumps(m)]
    assert resumed, metrics
    assert second.decision is not None and int(second.decision["version"]) == int(versions[-1]) + 1
    assert len(registry.history(tracking)) == registry.HISTORY_KEEP
