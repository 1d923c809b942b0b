"""MLflow side of validation: log the reports as a run named "validate", find the last accepted one.

MLflow is imported and pointed at the tracking URI only inside these functions, never at import.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from headstart.config import TrackingConfig
from headstart.errors import RegistryError
from headstart.validation.result import ValidationResult

ACCEPTED_TAG = "headstart.validation.accepted"
ARTIFACT_DIR = "validation"
REPORT_FILES = ("report.json", "report.html", "summary.json", "manifest.csv")


def log_run(tracking: TrackingConfig, out_dir: Path, result: ValidationResult) -> str:
    """Log reports, Data Docs, counts and the verdict; returns the run id."""
    import mlflow

    from headstart.tracking import configure

    try:
        experiment_id = configure(tracking)
        with mlflow.start_run(experiment_id=experiment_id, run_name="validate") as run:
            mlflow.set_tags(
                {
                    "headstart.step": "validate",
                    ACCEPTED_TAG: str(result.passed).lower(),
                    "headstart.validation.fingerprint": result.fingerprint,
                }
            )
            mlflow.log_metrics(
                {
                    "n_images": result.n_images,
                    "n_failed_checks": len(result.failed),
                    "n_warned_checks": len(result.warned),
                }
            )
            for name in REPORT_FILES:
                if (out_dir / name).is_file():
                    mlflow.log_artifact(str(out_dir / name), ARTIFACT_DIR)
            if (out_dir / "data_docs").is_dir():
                mlflow.log_artifacts(str(out_dir / "data_docs"), f"{ARTIFACT_DIR}/data_docs")
            return run.info.run_id
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(
            f"{tracking.resolved_uri()}: could not log the validate run to MLflow ({exc})"
        ) from exc


def load_accepted_from_mlflow(tracking: TrackingConfig) -> dict[str, Any] | None:
    """The summary of the newest accepted `validate` run in the experiment, or None."""
    import mlflow

    try:
        mlflow.set_tracking_uri(tracking.resolved_uri())
        experiment = mlflow.get_experiment_by_name(tracking.experiment)
        if experiment is None:
            return None
        runs = mlflow.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{ACCEPTED_TAG}` = 'true'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        if not runs:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=runs[0].info.run_id, artifact_path=f"{ARTIFACT_DIR}/summary.json", dst_path=tmp
            )
            return json.loads(Path(local).read_text(encoding="utf-8"))
    except Exception as exc:
        raise RegistryError(
            f"{tracking.resolved_uri()}: could not read the last accepted validation ({exc})"
        ) from exc
