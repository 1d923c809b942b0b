"""MLflow side of validation: log the reports as a run named "validate", find the last accepted one.

MLflow is imported and pointed at the tracking URI only inside these functions, never at import.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from headstart.config import TrackingConfig
from headstart.errors import RegistryError
from headstart.validation.result import ValidationResult

ACCEPTED_TAG = "headstart.validation.accepted"
MANIFEST_TAG = "headstart.validation.manifest_sha256"
MANIFEST_RUN_TAG = "headstart.validation.manifest_run"  # the run whose artifacts hold this manifest
ARTIFACT_DIR = "validation"
REPORT_FILES = ("report.json", "report.html", "summary.json")


def log_run(tracking: TrackingConfig, out_dir: Path, result: ValidationResult) -> str:
    """Log the reports, counts and the verdict; returns the run id.

    The manifest (about 10 MB at 70,000 images) is logged only when no earlier validate run in the
    experiment logged the same one (same sha256): each run logs manifest.json (digest, rows, where the
    manifest is) instead. The Great Expectations Data Docs (about 3.5 MB, mostly static files they need
    beside them) stay in the local report folder; report.json holds every expectation's result."""
    import mlflow

    from headstart.tracking import configure, start

    manifest = out_dir / "manifest.csv"
    try:
        experiment_id = configure(tracking)
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
        earlier = _manifest_run(experiment_id, digest) if digest else None
        with start(experiment_id, "validate") as run:
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
            if digest:
                held_by = earlier or run.info.run_id
                if earlier is None:
                    mlflow.log_artifact(str(manifest), ARTIFACT_DIR)
                mlflow.set_tags({MANIFEST_TAG: digest, MANIFEST_RUN_TAG: held_by})
                mlflow.log_dict({"sha256": digest, "rows": result.n_images, "bytes": manifest.stat().st_size,
                                 "manifest": f"runs:/{held_by}/{ARTIFACT_DIR}/manifest.csv"},
                                f"{ARTIFACT_DIR}/manifest.json")
            return run.info.run_id
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(
            f"{tracking.resolved_uri()}: could not log the validate run to MLflow ({exc})"
        ) from exc


def _manifest_run(experiment_id: str, digest: str) -> str | None:
    """The earlier validate run that logged this very manifest, if any."""
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.`{MANIFEST_TAG}` = '{digest}'",
                              max_results=1, output_format="list")
    return runs[0].data.tags.get(MANIFEST_RUN_TAG) if runs else None


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
