"""KFP component: train one candidate on several GPU nodes through a Kubeflow PyTorchJob.

The same step as train_candidate (headstart.steps.train, via `headstart train` under torchrun in the
job's pods); this task only creates the job, waits for it, prints its pods' logs and hands the job's
outputs on as its own Model artifact, with the MLflow run id in the metadata.

The dataset is staged once per run by `stage_data`, which both candidates' tasks read (`staged_data`), and
deleted by `unstage_data` once both are done; a task given no `staged_data` stages its own copy. Each task
deletes its job's staging folder (its outputs, and its own copy of the data) when it ends.
"""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


def train_distributed(
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
    nodes: int,
    gpus_per_node: int,
    staging_uri: str,
    job_image: str,
    namespace: str,
    timeout_s: int,
    model: Output[Model],
    metrics: Output[Metrics],
    learning_curve: Output[HTML],
    staged_data: str = "",
):
    """Create the PyTorchJob, wait for Succeeded (fail the task on Failed or timeout), pass its model on.

    The job is deleted however this task ends, and names this pod as its owner (POD_NAME, POD_UID).
    """
    from headstart.kfp import bodies

    bodies.train_distributed(
        role=role, dataset=dataset, params_json=params_json, overrides=overrides, backbone=backbone, weights=weights,
        image_size=image_size, epochs=epochs, images_per_class=images_per_class, lr_head=lr_head,
        lr_backbone=lr_backbone, nodes=nodes, gpus_per_node=gpus_per_node, staging_uri=staging_uri,
        job_image=job_image, namespace=namespace, timeout_s=timeout_s, model=model, metrics=metrics,
        learning_curve=learning_curve, staged_data=staged_data,
    )


def stage_data(dataset: Input[Dataset], staging_uri: str) -> str:
    """Stage the dataset once for both candidates' PyTorchJobs; returns where it is (their `staged_data`)."""
    from headstart.kfp import bodies

    return bodies.stage_data(dataset=dataset, staging_uri=staging_uri)


def unstage_data(staged_data: str = ""):
    """Delete what `stage_data` staged, once both candidates' jobs have read it; "" (stage_data never ran or
    failed: the default lets this task run after a failed upstream) leaves nothing to do."""
    from headstart.kfp import bodies

    bodies.unstage_data(staged_data=staged_data)
