"""MLflow set-up done inside functions, never at import: URI, experiment and artifact location."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from headstart.config import TrackingConfig
from headstart.errors import RegistryError

LOOP_ENV = "HEADSTART_LOOP_ID"
LOOP_TAG = "headstart.loop_id"
STEP_TAG = "headstart.step"


def artifact_location(tracking: TrackingConfig) -> str | None:
    """Where a new experiment keeps its artifacts: `artifact_root` for a local store; None (the server's
    own `--artifacts-destination`) for a tracking server, since a path in this process means nothing to
    the server or to the other pods that read the artifacts back."""
    uri = tracking.resolved_uri()
    if not uri.startswith(("sqlite:", "file:")) and "://" in uri:  # not a local store
        return None
    root = tracking.artifact_root
    if "://" in root:
        return root
    folder = Path(root).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def configure(tracking: TrackingConfig) -> str:
    """Point MLflow at the store and return the experiment id (created on first use).

    The one place that creates the experiment, for every step: whichever step runs first decides the
    experiment's artifact location for all later runs.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file floods logs
    uri = tracking.resolved_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)  # the registry follows it; no set_registry_uri, which would pin an env var
    try:
        if (exp := mlflow.get_experiment_by_name(tracking.experiment)) is None:
            try:
                return mlflow.create_experiment(tracking.experiment, artifact_location=artifact_location(tracking))
            except MlflowException:  # created meanwhile by another step?
                if (exp := mlflow.get_experiment_by_name(tracking.experiment)) is None:
                    raise
        return exp.experiment_id
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {uri}: {exc.message}") from exc


@contextlib.contextmanager
def run(tracking: TrackingConfig | None, name: str, tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None) -> Iterator[str | None]:
    """Start an MLflow run in the Headstart experiment, under its loop's parent run, log `params` (as text) and
    yield its id; with tracking off (None), yield None and log nothing."""
    if tracking is None:
        yield None
        return
    import mlflow

    experiment_id = configure(tracking)
    with start(experiment_id, name, tags) as active:
        if params:
            mlflow.log_params({k: str(v) for k, v in params.items()})
        yield active.info.run_id


def start(experiment_id: str, name: str, tags: dict[str, str] | None = None) -> Any:
    """mlflow.start_run nested under the loop's parent run (see loop_id), so one loop's validate, trainings,
    evaluate and register are one group in the MLflow UI."""
    import mlflow

    loop = loop_id()
    return mlflow.start_run(experiment_id=experiment_id, run_name=name, tags={LOOP_TAG: loop, **(tags or {})},
                            parent_run_id=_parent_run(experiment_id, loop))


def loop_id() -> str:
    """`HEADSTART_LOOP_ID` when set (the KFP pipeline's job id, or a fresh id per `headstart run`); otherwise
    the code and data version (git commit, data.dvc md5), so the separate processes of `dvc repro` group
    together with nothing passed between them."""
    if env := os.environ.get(LOOP_ENV, "").strip():
        return re.sub(r"[^A-Za-z0-9._:-]", "-", env)[:200]  # it goes into a search filter
    from headstart.data.pin import pinned_md5

    commit = os.environ.get("HEADSTART_GIT_COMMIT") or git_head() or "nogit"
    return f"{commit}-{pinned_md5(Path('data')) or 'nodata'}"


def git_head() -> str | None:
    """The commit of the working directory (the project checkout), if it is a git repo."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _parent_run(experiment_id: str, loop: str) -> str:
    """The loop's parent run, created by whichever step comes first. Two steps creating it at once both
    search again after creating and keep the oldest; the other deletes its own."""
    from mlflow import MlflowClient

    c = MlflowClient()

    def oldest() -> str | None:
        runs = c.search_runs([experiment_id], f"tags.`{LOOP_TAG}` = '{loop}' AND tags.`{STEP_TAG}` = 'loop'",
                             max_results=50)
        return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if runs else None

    if found := oldest():
        return found
    mine = c.create_run(experiment_id, run_name=f"loop {loop[:19]}", tags={LOOP_TAG: loop, STEP_TAG: "loop"})
    c.set_terminated(mine.info.run_id)  # a group, not a process: nothing would ever end it
    kept = oldest() or mine.info.run_id
    if kept != mine.info.run_id:
        c.delete_run(mine.info.run_id)
    return kept


def ui_command(tracking: TrackingConfig) -> str:
    return f"mlflow ui --backend-store-uri {tracking.resolved_uri()} --port 5000"
