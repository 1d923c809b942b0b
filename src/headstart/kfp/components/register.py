"""KFP component: register the winner and run the gate (headstart.steps.register, promote=False)."""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def register_and_gate(
    dataset: Input[Dataset],
    finetune: Input[Model],
    scratch: Input[Model],
    evaluation: Input[Artifact],
    params_json: str,
    overrides: list,
    min_accuracy: float,
    min_gain_over_baseline: float,
    max_regression: float,
    max_class_recall_drop: float,
    registered_model: str,
    decision_files: Output[Artifact],
    decision_record: Output[Markdown],
    gate_metrics: Output[Metrics],
    report: Output[HTML],
) -> NamedTuple("Outputs", decision=str, version=str, winner=str):
    """Register a new model version and decide; the champion alias is left to the promote task. The
    gate's numbers (accuracy, NFR/PFR/NFI with intervals, alpha_run and the window), `gate_passed` (1/0: the
    promote task then moves the alias) and `version` go to `gate_metrics`; the evaluation report with the
    decision to `report`."""
    from headstart.kfp import bodies

    return bodies.register_and_gate(
        dataset=dataset, finetune=finetune, scratch=scratch, evaluation=evaluation, params_json=params_json,
        overrides=overrides, min_accuracy=min_accuracy, min_gain_over_baseline=min_gain_over_baseline,
        max_regression=max_regression, max_class_recall_drop=max_class_recall_drop, registered_model=registered_model,
        decision_files=decision_files, decision_record=decision_record, gate_metrics=gate_metrics, report=report,
    )
