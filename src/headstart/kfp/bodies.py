"""What each KFP component runs: one typed function per component, called with the component's own arguments.

A lightweight component's source is copied into the spec and runs in the image, where only the installed
package is importable; so a component (headstart.kfp.components) is a signature and one call into this module,
and everything here can be tested without KFP. Artifacts are duck-typed (kfp_io's protocols): a test passes any
object with a `path`, `uri` or `metadata`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

from headstart.config import tracking_from_params
from headstart.kfp import kfp_io
from headstart.kfp.kfp_io import ArtifactLike, ConfusionLike, MetricsLike


class GateOutputs(NamedTuple):
    """register_and_gate's outputs: the decision ("promoted" or "rejected"), the version and the winner."""

    decision: str
    version: str
    winner: str


def resolve_data_rev(data_repo: str, data_rev: str) -> str:
    """The commit `data_rev` names in `data_repo` now. Never cached: its output is fetch's cache key."""
    from headstart.data.git_refs import resolve_rev

    commit = resolve_rev(data_repo, data_rev)
    print(f"data_rev {data_rev or '(default branch)'} of {data_repo or 'the working copy'}: {commit or '-'}")
    return commit


def fetch_data(data_repo: str, data_rev: str, dvc_remote: str, params_json: str, dataset: ArtifactLike) -> None:
    """Download the dataset data.dvc pins at `data_rev`; its version (rev, md5) goes to the Dataset's metadata."""
    from headstart.steps import fetch

    p = kfp_io.params(params_json, knobs={"fetch.repo": data_repo, "fetch.rev": data_rev, "fetch.remote": dvc_remote})
    result = fetch.run(fetch.config_from_params(p), Path(dataset.path))
    dataset.metadata.update(dataclasses.asdict(result))


def validate_data(dataset: ArtifactLike, params_json: str, overrides: list[str], validation: ArtifactLike,
                  report: ArtifactLike, summary: MetricsLike) -> bool:
    """Run every data check; the report goes to the UI. Returns whether training may start."""
    from headstart.steps import validate

    kfp_io.use_loop(dict(dataset.metadata))
    p = kfp_io.validate_params(params_json, overrides)
    out = Path(validation.path)
    result = validate.run(validate.config_from_params(p), Path(dataset.path), out, tracking_from_params(p))
    kfp_io.copy_text(report.path, out / "report.html")
    kfp_io.log_metrics(summary, kfp_io.validation_metrics(result.to_dict()))
    return result.passed


def data_rejected(report: ArtifactLike) -> None:
    """Fail the run on purpose, after the report is saved, so a scheduled run with bad data shows red."""
    from headstart.errors import ValidationFailed

    raise ValidationFailed(f"the dataset failed validation; see the report ({report.uri}). No training was started.")


def train_candidate(role: str, dataset: ArtifactLike, params_json: str, overrides: list[str], backbone: str,
                    weights: str, image_size: int, epochs: int, images_per_class: int, lr_head: float,
                    lr_backbone: float, checkpoint_root: str, model: ArtifactLike, metrics: MetricsLike,
                    learning_curve: ArtifactLike) -> None:
    """Train with the shared engine in this pod; a retried task resumes from the last checkpoint."""
    from headstart.steps import train

    kfp_io.use_loop(dict(dataset.metadata))
    p = kfp_io.train_params(
        params_json, overrides, role, backbone=backbone, weights=weights, image_size=image_size, epochs=epochs,
        images_per_class=images_per_class, lr_head=lr_head, lr_backbone=lr_backbone,
        checkpoints=kfp_io.checkpoint_dir(checkpoint_root, model.path),
    )
    result = train.run(train.config_from_params(p, role), Path(dataset.path), Path(model.path), tracking_from_params(p))
    _trained(role, backbone, model, metrics, learning_curve, dataclasses.asdict(result))


def train_distributed(role: str, dataset: ArtifactLike, params_json: str, overrides: list[str], backbone: str,
                      weights: str, image_size: int, epochs: int, images_per_class: int, lr_head: float,
                      lr_backbone: float, nodes: int, gpus_per_node: int, staging_uri: str, job_image: str,
                      namespace: str, timeout_s: int, model: ArtifactLike, metrics: MetricsLike,
                      learning_curve: ArtifactLike, staged_data: str = "") -> None:
    """Train on several GPU nodes as a PyTorchJob (headstart.cluster.pytorchjob.train_on_cluster) and hand its outputs
    on as this task's Model, with the MLflow run id and the job's name in the metadata."""
    from headstart.cluster import pytorchjob

    p = kfp_io.train_params(
        params_json, overrides, role, backbone=backbone, weights=weights, image_size=image_size, epochs=epochs,
        images_per_class=images_per_class, lr_head=lr_head, lr_backbone=lr_backbone, checkpoints="/checkpoints",
    )
    req = pytorchjob.train_on_cluster(
        role, p, Path(dataset.path), Path(model.path), nodes=nodes, gpus_per_node=gpus_per_node,
        staging_uri=staging_uri, image=job_image, namespace=namespace, timeout_s=timeout_s, staged_data=staged_data,
        loop_id=kfp_io.use_loop(dict(dataset.metadata)),  # the pods' MLflow run joins the loop's parent
    )
    result = json.loads((Path(model.path) / "metrics.json").read_text())
    _trained(role, backbone, model, metrics, learning_curve, result, pytorchjob=f"{req.namespace}/{req.name}",
             world=f"{nodes}x{gpus_per_node}")


def _trained(role: str, backbone: str, model: ArtifactLike, metrics: MetricsLike, learning_curve: ArtifactLike,
             result: dict, **metadata: str) -> None:
    """A trained candidate for the UI: its metrics and learning curve; the run id and `metadata` on the Model."""
    kfp_io.log_metrics(metrics, result)
    kfp_io.write_png_html(learning_curve.path, Path(model.path) / "learning_curve.png", f"{role}: learning curve")
    model.metadata.update(role=role, backbone=backbone, mlflow_run_id=result.get("run_id") or "", **metadata)


def stage_data(dataset: ArtifactLike, staging_uri: str) -> str:
    """Stage the dataset once for both candidates' PyTorchJobs; returns where it is (their `staged_data`)."""
    from headstart.cluster import pytorchjob

    return pytorchjob.stage(Path(dataset.path), pytorchjob.run_staging(staging_uri, dataset.uri))


def unstage_data(staged_data: str = "") -> None:
    """Delete what `stage_data` staged; "" (stage_data never ran or failed) leaves nothing to do."""
    from headstart.cluster import pytorchjob

    if staged_data:
        pytorchjob.unstage(staged_data)


def evaluate_candidates(dataset: ArtifactLike, finetune: ArtifactLike, scratch: ArtifactLike, params_json: str,
                        overrides: list[str], registered_model: str, evaluation: ArtifactLike, report: ArtifactLike,
                        finetune_metrics: MetricsLike, scratch_metrics: MetricsLike, champion_metrics: MetricsLike,
                        comparison: MetricsLike, finetune_confusion: ConfusionLike, scratch_confusion: ConfusionLike,
                        champion_confusion: ConfusionLike) -> str:
    """Both candidates and the champion on one test split: metrics, confusion matrices and the paired comparison
    for the UI, the report page. Returns the champion's version ("" if none)."""
    from headstart.steps import evaluate

    kfp_io.use_loop(dict(dataset.metadata))
    p = kfp_io.params(params_json, overrides, {"tracking.registered_model": registered_model})
    out = Path(evaluation.path)
    models = {"finetune": Path(finetune.path) / "model", "scratch": Path(scratch.path) / "model"}
    result = evaluate.run(evaluate.config_from_params(p), Path(dataset.path), models, out, tracking_from_params(p))
    for name, metrics, confusion in (("finetune", finetune_metrics, finetune_confusion),
                                     ("scratch", scratch_metrics, scratch_confusion),
                                     ("champion", champion_metrics, champion_confusion)):
        kfp_io.log_model_metrics(metrics, result.models, name, result.champion_version)
        kfp_io.log_confusion(confusion, out, name)
    kfp_io.log_metrics(comparison, result.comparison)
    # headstart.evaluation.report's page, the same as local and MLflow
    kfp_io.copy_text(report.path, out / "report.html")
    return result.champion_version or ""


def register_and_gate(dataset: ArtifactLike, finetune: ArtifactLike, scratch: ArtifactLike, evaluation: ArtifactLike,
                      params_json: str, overrides: list[str], min_accuracy: float, min_gain_over_baseline: float,
                      max_regression: float, max_class_recall_drop: float, registered_model: str,
                      decision_files: ArtifactLike, decision_record: ArtifactLike, gate_metrics: MetricsLike,
                      report: ArtifactLike) -> GateOutputs:
    """Register a new model version and decide; the champion alias is left to the promote task. The gate's
    numbers and `gate_passed` (1/0) go to `gate_metrics`, the decision record and the report to the UI."""
    from headstart.registry import decision_record as record
    from headstart.registry import lineage
    from headstart.steps import register

    kfp_io.use_loop(dict(dataset.metadata))
    p = kfp_io.gate_params(
        params_json, overrides, min_accuracy=min_accuracy, min_gain_over_baseline=min_gain_over_baseline,
        max_regression=max_regression, max_class_recall_drop=max_class_recall_drop, registered_model=registered_model,
    )
    cfg, thresholds = register.configs_from_params(p)
    models = {"finetune": Path(finetune.path) / "model", "scratch": Path(scratch.path) / "model"}
    out = Path(decision_files.path)
    result = register.run(
        cfg, thresholds, Path(dataset.path), models, Path(evaluation.path), out, tracking_from_params(p), promote=False,
        data_version=lineage.lineage_from_metadata(dict(dataset.metadata)),  # a pod has no git nor data.dvc
    )
    kfp_io.copy_text(decision_record.path, out / "decision.md")
    kfp_io.copy_text(report.path, out / "report.html")
    kfp_io.log_metrics(gate_metrics, record.decision_numbers(result.decision))
    return GateOutputs(result.decision["decision"], result.version, result.winner)


def act_on_decision(decision: ArtifactLike, params_json: str, overrides: list[str], registered_model: str) -> str:
    """Move the `champion` alias to a promoted version, or tag a rejected one with the reasons (steps.promote).
    Returns the previous champion version ("" if none or not moved)."""
    from headstart.steps import promote

    p = kfp_io.params(params_json, overrides, {"tracking.registered_model": registered_model})
    result = promote.run(Path(decision.path) / "decision.json", tracking_from_params(p))
    return result.previous_champion or ""
