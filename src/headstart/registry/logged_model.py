"""The winner in MLflow: logged as a pyfunc (code + safetensors, no pickle) with pinned requirements, its
dataset input and its numbers, and the decision record logged beside it once the gate has decided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.config import TrackingConfig
from headstart.errors import RegistryError
from headstart.registry import model_registry as registry


def log_model(tracking: TrackingConfig, model_dir: Path, card_run: str | None, sample: list[Path],
              data_dir: Path, data_tags: dict[str, str], numbers: dict[str, float]) -> tuple[str, str, str]:
    """Log the winner as a pyfunc (code + safetensors, no pickle); returns (model URI, run id, experiment id).

    The gate's numbers are logged as metrics of the logged model (MLflow 3's LoggedModel, which the
    registered version's source points at) and so also of its run: MLflow's registry keeps tags on a
    version, not metrics."""
    import mlflow
    import pandas as pd

    import headstart
    from headstart import tracking as trk
    from headstart.serving import ARTIFACT_KEY, MODEL_CODE, Classifier

    classifier = Classifier(model_dir)
    example = pd.DataFrame({"image": [p.read_bytes() for p in sample[:2]]})
    signature = mlflow.models.infer_signature(example, classifier.predict(example))
    exp_id = registry.retry("connecting to the tracking server", lambda: trk.configure(tracking))

    def attempt() -> tuple[str, str, str]:
        with mlflow.start_run(run_id=card_run) if card_run else trk.start(exp_id, "register") as active:
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(MODEL_CODE), artifacts={ARTIFACT_KEY: str(model_dir)},
                code_paths=[str(Path(headstart.__file__).parent)], signature=signature, input_example=example,
                pip_requirements=pip_requirements(),
            )
            frame = pd.DataFrame({"dataset": [str(data_dir)], **{k: [v] for k, v in data_tags.items()}})
            mlflow.log_input(mlflow.data.from_pandas(frame, source=str(data_dir), name="imagefolder"), context="test")
            if numbers:
                mlflow.log_metrics(numbers, model_id=info.model_id)
            return info.model_uri, active.info.run_id, active.info.experiment_id

    if card_run and not registry.exists("looking up the training run", lambda: mlflow.get_run(card_run)):
        raise RegistryError(
            f"{model_dir / 'model.json'}: its training run {card_run} is not in this MLflow tracking store. "
            "The model was trained against another store, or DVC restored it from its run cache after the store "
            "was reset. Re-train against this store (dvc repro -f train_finetune train_scratch), or point "
            "tracking.tracking_uri / MLFLOW_TRACKING_URI at the store it was trained with.")
    registry.stage("log_model")
    return registry.retry("logging the model", attempt)


def public_version(version: str) -> str:
    """`2.14.1+cpu` -> `2.14.1`. A PEP 440 local label names one build (a CPU or CUDA wheel from a
    vendor index) that no public index serves, so a pin that keeps it cannot be installed."""
    return version.split("+", 1)[0]


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["torch", "torchvision", "timm", "safetensors", "numpy", "pillow", "pandas", "mlflow", "pydantic",
            "pyyaml", "tqdm"]
    return [f"{p}=={public_version(version(p))}" for p in pkgs]


def model_numbers(models: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Every evaluated model's test accuracy and macro-F1 (finetune, scratch, champion) as numbers, for the
    logged model's metrics (charted by MLflow), beside the `metric.*` text tags on the version."""
    return {f"{name}_test_{m}": float(v[m]) for name, v in models.items() for m in ("accuracy", "macro_f1")
            if isinstance(v.get(m), int | float)}


def log_decision(tracking: TrackingConfig, version: str, run_id: str, out_dir: Path) -> None:
    """The decision record as run artifacts, and a tag on the version pointing at them."""
    from mlflow import MlflowClient

    registry.stage("decision_record")
    c = MlflowClient()
    for name in ("decision.json", "decision.md", "decision.html", "report.html"):
        registry.retry(f"logging {name}", lambda n=name: c.log_artifact(run_id, str(out_dir / n), "decision"))
    registry.set_version_tags(tracking, version, {"headstart.decision_record": f"runs:/{run_id}/decision"})
