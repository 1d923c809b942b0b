"""Run the whole pipeline on this machine with kfp.local: no cluster, no containers."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.config import DEFAULT_PARAMS, load_params
from headstart.errors import HeadstartError, ValidationFailed
from headstart.pipeline.settings import settings_from_params
from headstart.pipeline.spec import build

DEFAULT_ROOT = Path("pipelines/local_root")


@dataclass
class LocalRun:
    run_dir: Path
    decision: dict[str, Any] | None
    artifacts: dict[str, list[str]] = field(default_factory=dict)


def _task_dirs(run_dir: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.name for p in d.iterdir()) for d in sorted(run_dir.iterdir()) if d.is_dir()}


def _validation_rejected(run_dir: Path) -> bool:
    out = run_dir / "validate-data" / "executor_output.json"
    return out.is_file() and json.loads(out.read_text()).get("parameterValues", {}).get("Output") is False


def find_output(run_dir: Path, name: str) -> Path | None:
    """An output of any task in a local run (kfp.local writes <root>/<run>/<task>/<output>)."""
    return next(iter(sorted(run_dir.glob(f"*/{name}"))), None)


def run_local(
    pipeline_root: Path = DEFAULT_ROOT,
    *,
    params_file: Path = DEFAULT_PARAMS,
    overrides: list[str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> LocalRun:
    """Every task as a subprocess in this Python environment (the images are not used).

    Credentials and MLFLOW_TRACKING_URI come from this process's environment, as the Kubernetes
    secrets provide them on a cluster. The run's workspace (checkpoints) is <root>/workspace while it runs.
    """
    from kfp import local

    params = load_params(params_file, overrides)
    # kfp.local has no training operator and cannot merge If/Else outputs (dsl.OneOf): local runs train in-pod
    pipeline = build(params, settings_from_params(params).model_copy(update={"multi_node_training": False}))
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    workspace = root / "workspace"  # kfp.local deletes it after the run, as KFP deletes the run's volume
    workspace.mkdir(exist_ok=True)
    before = {p.name for p in root.iterdir()}
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
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
        raise HeadstartError(f"the local pipeline run wrote nothing under {root}: {error}")
    run_dir = new[-1]
    if error is not None:
        if _validation_rejected(run_dir):
            raise ValidationFailed(
                f"the dataset failed validation; see {find_output(run_dir, 'report')}. "
                "No training was started."
            )
        raise HeadstartError(
            f"the local pipeline run failed ({error}); the task's log is above, its outputs under {run_dir}"
        )
    decision_file = find_output(run_dir, "decision_files")
    decision = None
    if decision_file and (decision_file / "decision.json").is_file():
        decision = json.loads((decision_file / "decision.json").read_text())
    return LocalRun(run_dir=run_dir, decision=decision, artifacts=_task_dirs(run_dir))
