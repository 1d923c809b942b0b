"""Run the whole pipeline on this machine with kfp.local: no cluster.

Two runners: `subprocess` (every task in this Python environment; the quick path) and `docker` (every task in
the component images, as the image's user, under kfp.local.DockerRunner; see headstart.kfp.containers).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.config import DEFAULT_PARAMS, load_params
from headstart.errors import ConfigError, HeadstartError, ValidationFailed
from headstart.kfp.settings import MLFLOW_KEYS, S3_KEYS, PipelineSettings, package_version, settings_from_params
from headstart.kfp.spec import build

DEFAULT_ROOT = Path("pipelines/local_root")
RUNNERS = ("subprocess", "docker")
LOCAL_IMAGE = "localhost/headstart"  # what `make images` tags; podman lists local builds under localhost/


@dataclass
class LocalRun:
    run_dir: Path
    decision: dict[str, Any] | None
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    containers: list[dict[str, Any]] = field(default_factory=list)  # docker runner: one entry per container


def find_output(run_dir: Path, name: str) -> Path | None:
    """An output of any task in a local run (kfp.local writes <root>/<run>/<task>/<output>)."""
    return next(iter(sorted(run_dir.glob(f"*/{name}"))), None)


def default_image() -> str:
    """The CPU image `make images` builds for this version (the CUDA variant is `<image>-cuda`)."""
    return f"{LOCAL_IMAGE}:{package_version()}"


def secret_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables the Kubernetes secrets give the pods (S3 and MLflow credentials), from this process's
    environment: all the docker runner passes into a container besides the task's own inputs."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in (*S3_KEYS.names, *MLFLOW_KEYS.names) if environ.get(k)}


def run_local(
    pipeline_root: Path = DEFAULT_ROOT,
    *,
    params_file: Path = DEFAULT_PARAMS,
    overrides: list[str] | None = None,
    arguments: dict[str, Any] | None = None,
    runner: str = "subprocess",
    image: str | None = None,
) -> LocalRun:
    """Run every task of the compiled pipeline here.

    runner="subprocess": each task is a subprocess in this Python environment (the images are not used).
    runner="docker": each task runs in the component image (`image`, default `default_image()`; training in
    `<image>-cuda`) under kfp.local.DockerRunner, as the image's user, on the host's network (so it reaches
    services on 127.0.0.1 as a pod reaches the cluster's), with only its inputs and the secrets' variables.
    It runs as root, which gives the pipeline root and workspace to the image's user and to no other
    (`containers.give_to_image`).

    Credentials and MLFLOW_TRACKING_URI come from this process's environment, as the Kubernetes
    secrets provide them on a cluster. The run's workspace (checkpoints) is <root>/workspace while it runs.
    """
    if runner not in RUNNERS:
        raise ConfigError(f"--runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    params = load_params(params_file, overrides)
    # kfp.local has no training operator and cannot merge If/Else outputs (dsl.OneOf): local runs train in-pod,
    # and evaluate runs as one task (on this machine's GPU when it has one)
    update: dict[str, Any] = {"multi_node_training": False, "gpu_evaluation": False}
    if runner == "docker":
        update.update(image=image or default_image(), gpu_image="")
    settings: PipelineSettings = settings_from_params(params).model_copy(update=update)
    pipeline = build(params, settings)
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    workspace = root / "workspace"  # kfp.local deletes it after the run, as KFP deletes the run's volume
    workspace.mkdir(exist_ok=True)
    if runner == "subprocess":
        return _run(pipeline, root, workspace, local_runner=None, arguments=arguments)
    from headstart.kfp import containers

    containers.give_to_image(root, workspace)  # the root first: then nobody else can swap the workspace
    with containers.engine():
        import docker

        # before the first task: a missing image is named at once, not after the earlier tasks ran
        with contextlib.closing(docker.from_env()) as client:
            for ref in {settings.cpu_image(), settings.cuda_image()}:
                containers.local_image(client, ref)
        runs = containers.Runs()
        from kfp import local

        docker_runner = local.DockerRunner(network_mode="host", environment=secret_env())
        with containers.task_runner(runs):
            result = _run(pipeline, root, workspace, local_runner=docker_runner, arguments=arguments, runs=runs)
    return result


def _run(pipeline: Any, root: Path, workspace: Path, *, local_runner: Any, arguments: dict[str, Any] | None,
         runs: Any = None) -> LocalRun:
    from kfp import local

    before = {p.name for p in root.iterdir()}
    local.init(
        runner=local_runner or local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        workspace_root=str(workspace),
        raise_on_error=True,
    )
    error: Exception | None = None
    with warnings.catch_warnings():
        # Expected here: resources, GPU and images only mean something on a cluster.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        warnings.filterwarnings("ignore", message=".*non-Python base image")
        try:
            pipeline(**(arguments or {}))
        except RuntimeError as exc:  # kfp.local reports a failed task this way; the task's log is above
            error = exc
    new = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime
    )
    if not new:
        failed = ""
        if runs is not None and runs.records:
            last = runs.records[-1]
            failed = f"; the last container ({last.function}, attempt {last.attempt}) exited with {last.exit_code}"
        raise HeadstartError(f"the local pipeline run failed before any task wrote under {root}: {error}{failed}")
    run_dir = new[-1]
    records = runs.as_json() if runs is not None else []
    if records:
        (run_dir / "containers.json").write_text(json.dumps(records, indent=2))
        logs = run_dir / "logs"
        logs.mkdir(exist_ok=True)
        for i, r in enumerate(runs.records):
            (logs / f"{i:02d}-{r.function}-{r.attempt}.log").write_text(r.log)
    if error is not None:
        validated = run_dir / "validate-data" / "executor_output.json"
        if validated.is_file() and json.loads(validated.read_text()).get("parameterValues", {}).get("Output") is False:
            raise ValidationFailed(
                f"the dataset failed validation; see {find_output(run_dir, 'report')}. "
                "No training was started."
            )
        raise HeadstartError(
            f"the local pipeline run failed ({error}); the task's log is above, its outputs under {run_dir}"
        )
    decision = find_output(run_dir, "decision_files/decision.json")
    artifacts = {d.name: sorted(p.name for p in d.iterdir()) for d in sorted(run_dir.iterdir()) if d.is_dir()}
    return LocalRun(run_dir=run_dir, decision=json.loads(decision.read_text()) if decision else None,
                    artifacts=artifacts, containers=records)
