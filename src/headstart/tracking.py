"""MLflow set-up done inside functions, never at import: URI, experiment and artifact location."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from headstart.config import TrackingConfig
from headstart.errors import RegistryError


def _is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def artifact_location(tracking: TrackingConfig) -> str | None:
    """Where a new experiment keeps its artifacts: `artifact_root` for a local store; None (the server's
    own `--artifacts-destination`) for a tracking server, since a path in this process means nothing to
    the server or to the other pods that read the artifacts back."""
    if not _is_local_store(tracking.resolved_uri()):
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
        exp = mlflow.get_experiment_by_name(tracking.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return mlflow.create_experiment(tracking.experiment, artifact_location=artifact_location(tracking))
        except MlflowException:
            exp = mlflow.get_experiment_by_name(tracking.experiment)  # created meanwhile by another step
            if exp is None:
                raise
            return exp.experiment_id
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {uri}: {exc.message}") from exc


@contextlib.contextmanager
def run(tracking: TrackingConfig, name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
    """Start an MLflow run in the Headstart experiment and yield its id."""
    import mlflow

    experiment_id = configure(tracking)
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags or {}) as active:
        yield active.info.run_id


def ui_command(tracking: TrackingConfig) -> str:
    return f"mlflow ui --backend-store-uri {tracking.resolved_uri()} --port 5000"
