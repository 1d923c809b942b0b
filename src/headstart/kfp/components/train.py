"""KFP component: train one candidate, finetune or scratch (headstart.steps.train)."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


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
    from headstart.kfp import bodies

    bodies.train_candidate(
        role=role, dataset=dataset, params_json=params_json, overrides=overrides, backbone=backbone, weights=weights,
        image_size=image_size, epochs=epochs, images_per_class=images_per_class, lr_head=lr_head,
        lr_backbone=lr_backbone, checkpoint_root=checkpoint_root, model=model, metrics=metrics,
        learning_curve=learning_curve,
    )
