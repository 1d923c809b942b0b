"""KFP component: evaluate both candidates and the champion on one test split (headstart.steps.evaluate)."""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


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
    from headstart.kfp import bodies

    return bodies.evaluate_candidates(
        dataset=dataset, finetune=finetune, scratch=scratch, params_json=params_json, overrides=overrides,
        registered_model=registered_model, evaluation=evaluation, report=report, finetune_metrics=finetune_metrics,
        scratch_metrics=scratch_metrics, champion_metrics=champion_metrics, comparison=comparison,
        finetune_confusion=finetune_confusion, scratch_confusion=scratch_confusion,
        champion_confusion=champion_confusion,
    )
