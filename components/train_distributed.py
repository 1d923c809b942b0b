"""KFP component: train one candidate on several GPU nodes through a Kubeflow PyTorchJob.

The same step as train_candidate (headstart.steps.train, via `headstart train` under torchrun in the
job's pods); this task only creates the job, waits for it, prints its pods' logs and hands the job's
outputs on as its own Model artifact, with the MLflow run id in the metadata.

The dataset is staged once per run by `stage_data`, which both candidates' tasks read (`staged_data`), and
deleted by `unstage_data` once both are done; a task given no `staged_data` stages its own copy. Each task
deletes its job's staging folder (its outputs, and its own copy of the data) when it ends.
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output
from kfp.dsl.python_component import PythonComponent


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
    import json
    import os
    import uuid
    from pathlib import Path

    from headstart import bundle, pytorchjob
    from headstart.pipeline import kfp_io
    from headstart.pipeline.settings import settings_from_params

    name = f"headstart-{role}-{uuid.uuid4().hex[:8]}"
    staging = pytorchjob.staging_folder(staging_uri, name)  # before any work: "" is not readable by the pods
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
        checkpoints="/checkpoints",
    )
    ns = namespace or pytorchjob.current_namespace()
    req = pytorchjob.JobRequest(
        name=name, namespace=ns, role=role, params=p, staging_uri=staging,
        nodes=nodes, gpus_per_node=gpus_per_node, image=job_image, data=staged_data,
        loop_id=kfp_io.use_loop(dict(dataset.metadata)),  # the pods' MLflow run joins the loop's parent
    )
    try:
        if not staged_data:
            req = pytorchjob.stage_dataset(Path(dataset.path), req)  # shards as they are, an ImageFolder as a tar.gz
        api = pytorchjob.api_client()
        owner = pytorchjob.owner_reference(os.environ, ns, api)
        pytorchjob.launch(req, settings_from_params(p), api, timeout_s, owner=owner)
        bundle.get(req.outputs_uri(), Path(model.path))
    finally:
        pytorchjob.unstage(staging, echo=print)  # this job's folder: its outputs (now the Model), its own data
    result = json.loads((Path(model.path) / "metrics.json").read_text())
    kfp_io.log_metrics(metrics, result)
    kfp_io.write_png_html(
        learning_curve.path, Path(model.path) / "learning_curve.png", f"{role}: learning curve"
    )
    model.metadata.update(role=role, backbone=backbone, mlflow_run_id=result.get("run_id") or "",
                          pytorchjob=f"{ns}/{name}", world=f"{nodes}x{gpus_per_node}")


def stage_data(dataset: Input[Dataset], staging_uri: str) -> str:
    """Stage the dataset once for both candidates' PyTorchJobs; returns where it is (their `staged_data`)."""
    from pathlib import Path

    from headstart import pytorchjob

    return pytorchjob.stage(Path(dataset.path), pytorchjob.run_staging(staging_uri, dataset.uri))


def unstage_data(staged_data: str = ""):
    """Delete what `stage_data` staged, once both candidates' jobs have read it; "" (stage_data never ran or
    failed: the default lets this task run after a failed upstream) leaves nothing to do."""
    from headstart import pytorchjob

    if staged_data:
        pytorchjob.unstage(staged_data)


def component(image: str) -> PythonComponent:
    return dsl.component(train_distributed, base_image=image, install_kfp_package=False)


def stage_component(image: str) -> PythonComponent:
    return dsl.component(stage_data, base_image=image, install_kfp_package=False)


def unstage_component(image: str) -> PythonComponent:
    return dsl.component(unstage_data, base_image=image, install_kfp_package=False)
