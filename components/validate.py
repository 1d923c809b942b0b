"""KFP components: validate the dataset (headstart.steps.validate), and stop the run when it fails."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output
from kfp.dsl.python_component import PythonComponent


def validate_data(
    dataset: Input[Dataset],
    params_json: str,
    overrides: list,
    validation: Output[Artifact],
    report: Output[HTML],
    summary: Output[Metrics],
) -> bool:
    """Run every data check; the report is shown in the UI. Returns whether training may start."""
    from pathlib import Path

    from headstart.pipeline import kfp_io
    from headstart.steps import validate

    kfp_io.use_loop(dict(dataset.metadata))
    p = kfp_io.validate_params(params_json, overrides)
    out = Path(validation.path)
    result = validate.run(validate.config_from_params(p), Path(dataset.path), out, kfp_io.tracking(p))
    kfp_io.copy_text(report.path, out / "report.html")
    kfp_io.log_metrics(summary, kfp_io.validation_metrics(result.to_dict()))
    return result.passed


def data_rejected(report: Input[HTML]):
    """Fail the run on purpose, after the report is saved, so a scheduled run with bad data shows red."""
    from headstart.errors import ValidationFailed

    raise ValidationFailed(
        f"the dataset failed validation; see the report ({report.uri}). No training was started."
    )


def component(image: str) -> PythonComponent:
    return dsl.component(validate_data, base_image=image, install_kfp_package=False)


def rejected_component(image: str) -> PythonComponent:
    return dsl.component(data_rejected, base_image=image, install_kfp_package=False)
