"""KFP components: validate the dataset (headstart.steps.validate), and stop the run when it fails."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output


def validate_data(
    dataset: Input[Dataset],
    params_json: str,
    overrides: list,
    validation: Output[Artifact],
    report: Output[HTML],
    summary: Output[Metrics],
) -> bool:
    """Run every data check; the report is shown in the UI. Returns whether training may start."""
    from headstart.kfp import bodies

    return bodies.validate_data(
        dataset=dataset, params_json=params_json, overrides=overrides, validation=validation, report=report,
        summary=summary,
    )


def data_rejected(report: Input[HTML]):
    """Fail the run on purpose, after the report is saved, so a scheduled run with bad data shows red."""
    from headstart.kfp import bodies

    bodies.data_rejected(report=report)
