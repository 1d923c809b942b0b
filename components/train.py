"""KFP component: train one candidate, finetune or scratch (headstart.steps.train)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output
from kfp.dsl.python_component import PythonComponent


def train_candidate(
    role: str,
    dataset: Input[Dataset],
    params_json: str,
    overrides: list,
    backbone: str,
    weights: str,
    image_size: int,
    epochs: int,
    images_per_class: int,
    lr_head: float,
    lr_backbone: float,
    checkpoint_root: str,
    model: Output[Model],
    metrics: Output[Metrics],
    learning_curve: Output[HTML],
):
    """Train with the shared engine; a retried task resumes from the last checkpoint (epoch end or mid-epoch)."""
    import dataclasses
    from pathlib import Path

    from headstart.pipeline import kfp_io
    from headstart.steps import train

    kfp_io.use_loop(dict(dataset.metadata))
    p = kfp_io.train_params(
        params_json,
        overrides,
        role,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        epochs=epochs,
        images_per_class=images_per_class,
        lr_head=lr_head,
        lr_backbone=lr_backbone,
        checkpoints=kfp_io.checkpoint_dir(checkpoint_root, model.path),
    )
    result = train.run(
        train.config_from_params(p, role), Path(dataset.path), Path(model.path), kfp_io.tracking(p)
    )
    kfp_io.log_metrics(metrics, dataclasses.asdict(result))
    kfp_io.write_png_html(
        learning_curve.path, Path(model.path) / "learning_curve.png", f"{role}: learning curve"
    )
    model.metadata.update(role=role, backbone=backbone, mlflow_run_id=result.run_id or "")


def component(image: str) -> PythonComponent:
    return dsl.component(train_candidate, base_image=image, install_kfp_package=False)
