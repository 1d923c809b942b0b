"""KFP component: evaluate both candidates and the champion on one test split (headstart.steps.evaluate)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from kfp.dsl.python_component import PythonComponent


def evaluate_candidates(
    dataset: Input[Dataset],
    finetune: Input[Model],
    scratch: Input[Model],
    params_json: str,
    overrides: list,
    registered_model: str,
    evaluation: Output[Artifact],
    report: Output[HTML],
    finetune_metrics: Output[Metrics],
    scratch_metrics: Output[Metrics],
    champion_metrics: Output[Metrics],
    comparison: Output[Metrics],
    finetune_confusion: Output[ClassificationMetrics],
    scratch_confusion: Output[ClassificationMetrics],
    champion_confusion: Output[ClassificationMetrics],
) -> str:
    """Metrics, confusion matrices and the paired comparison for the UI; returns the champion version."""
    from pathlib import Path

    from headstart.pipeline import kfp_io
    from headstart.steps import evaluate

    kfp_io.use_loop(dict(dataset.metadata))
    p = kfp_io.params(params_json, overrides, {"tracking.registered_model": registered_model})
    out = Path(evaluation.path)
    models = {"finetune": Path(finetune.path) / "model", "scratch": Path(scratch.path) / "model"}
    result = evaluate.run(evaluate.config_from_params(p), Path(dataset.path), models, out, kfp_io.tracking(p))
    for name, metrics, confusion in (("finetune", finetune_metrics, finetune_confusion),
                                     ("scratch", scratch_metrics, scratch_confusion),
                                     ("champion", champion_metrics, champion_confusion)):
        kfp_io.log_model_metrics(metrics, result.models, name, result.champion_version)
        kfp_io.log_confusion(confusion, out, name)
    kfp_io.log_metrics(comparison, result.comparison)
    kfp_io.copy_text(report.path, out / "report.html")  # headstart.report's page, the same as local and MLflow
    return result.champion_version or ""


def component(image: str) -> PythonComponent:
    return dsl.component(evaluate_candidates, base_image=image, install_kfp_package=False)
