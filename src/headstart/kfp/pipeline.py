"""The Headstart retraining pipeline for Kubeflow Pipelines v2: wiring only.

Compile it with `headstart pipeline compile` (writes pipelines/headstart_pipeline.yaml); the steps live in
headstart.steps, the components in headstart.kfp.components and what their bodies run in headstart.kfp.bodies.
`from kfp import ...` is the kfp package: absolute imports never resolve to this package, headstart.kfp.
"""

import json
from functools import partial
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.graph_component import GraphComponent

from headstart.cluster.pytorchjob import POD_NAME_ENV, POD_NAMESPACE_ENV, POD_UID_ENV
from headstart.kfp.components import evaluate, fetch, promote, register, train, train_distributed, validate
from headstart.kfp.settings import MLFLOW_KEYS, S3_KEYS, PipelineSettings, SecretKeys

# The downward API gives the PyTorchJob launcher its own pod, which the job names as its owner.
OWNER_FIELDS = (
    (POD_NAME_ENV, "metadata.name"),
    (POD_UID_ENV, "metadata.uid"),
    (POD_NAMESPACE_ENV, "metadata.namespace"),
)


NAME = "headstart-retraining"
DESCRIPTION = (
    "Retrain the Headstart image classifier on a pinned dataset version: validate the data, fine-tune a "
    "pre-trained backbone and train the same architecture from scratch in parallel on the GPU pool, "
    "evaluate both and the current champion on the same test split, register the winner in MLflow and "
    "promote it to `champion` only if the gate passes. Results: Metrics, confusion matrices, HTML reports "
    "and the decision record on each task's artifacts."
)


class _Sections:
    """The pipeline's sections: each method adds one section's tasks to the pipeline being defined."""

    def __init__(self, params: dict[str, Any], s: PipelineSettings) -> None:
        self.gpu = s.cuda_image()
        # the images hold the package and its kfp: a component installs nothing
        cpu = partial(dsl.component, base_image=s.cpu_image(), install_kfp_package=False)
        gpu = partial(dsl.component, base_image=self.gpu, install_kfp_package=False)
        self.resolve_op, self.fetch_op = cpu(fetch.resolve_data_rev), cpu(fetch.fetch_data)
        self.validate_op, self.rejected_op = cpu(validate.validate_data), cpu(validate.data_rejected)
        self.train_op, self.evaluate_op = gpu(train.train_candidate), cpu(evaluate.evaluate_candidates)
        self.evaluate_gpu_op = gpu(evaluate.evaluate_candidates)
        self.distributed_op = cpu(train_distributed.train_distributed)
        self.stage_op, self.unstage_op = cpu(train_distributed.stage_data), cpu(train_distributed.unstage_data)
        self.register_op, self.promote_op = cpu(register.register_and_gate), cpu(promote.act_on_decision)
        self.s, self.params_json = s, json.dumps(params, sort_keys=True)
        self.s3, self.mlflow = (s.s3_secret, S3_KEYS), (s.mlflow_secret, MLFLOW_KEYS)
        self.checkpoint_root = dsl.WORKSPACE_PATH_PLACEHOLDER if s.workspace_size else ""

    def on_cpu(self, task: PipelineTask, name: str, *secrets: tuple[str, SecretKeys],
               cache: bool = False) -> PipelineTask:
        s = self.s
        task.set_cpu_request(s.cpu_request).set_cpu_limit(s.cpu_limit)
        task.set_memory_request(s.memory_request).set_memory_limit(s.memory_limit)
        return self._common(task, name, cache, *secrets)

    def on_gpu(self, task: PipelineTask, name: str, cache: bool = False) -> PipelineTask:
        """One GPU of the pool (training and GPU evaluation): the training pod's CPU and memory, the pool's
        toleration and node label, both secrets, and retries, since a spot node may be taken away mid-task."""
        s = self.s
        self.retry(task, s.train_retries)
        task.set_accelerator_type(s.accelerator_type).set_accelerator_limit(s.accelerator_limit)
        task.set_cpu_request(s.train_cpu_request).set_cpu_limit(s.train_cpu_limit)
        task.set_memory_request(s.train_memory_request).set_memory_limit(s.train_memory_limit)
        kubernetes.add_toleration(task, key=s.gpu_toleration_key, operator="Equal", value=s.gpu_toleration_value,
                                  effect=s.gpu_toleration_effect)
        kubernetes.add_node_selector(task, label_key=s.gpu_node_selector_key, label_value=s.gpu_node_selector_value)
        return self._common(task, name, cache, self.s3, self.mlflow)

    def _common(self, task: PipelineTask, name: str, cache: bool, *secrets: tuple[str, SecretKeys]) -> PipelineTask:
        task.set_caching_options(cache).set_display_name(name)
        kubernetes.add_pod_label(task, self.s.pod_label_key, self.s.pod_label_value)
        for secret, keys in secrets:
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={k: k for k in keys.required})
            if keys.optional:  # a key the secret lacks leaves the variable unset instead of stopping the pod
                kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={k: k for k in keys.optional},
                                             optional=True)
        return task

    def retry(self, task: PipelineTask, retries: int) -> PipelineTask:
        s = self.s
        return task.set_retry(num_retries=retries, backoff_duration=s.retry_backoff,
                              backoff_factor=s.retry_backoff_factor, backoff_max_duration=s.retry_backoff_max)

    def fetch_and_validate(self, data_repo: Any, data_rev: Any, dvc_remote: Any,
                           overrides: Any) -> tuple[Any, PipelineTask]:
        """The fetched dataset, and the task that validates it."""
        # A branch name as fetch's cache key would return its first download forever: the uncached
        # resolver turns it into the commit, and fetch is cached on that.
        resolved = self.on_cpu(self.resolve_op(data_repo=data_repo, data_rev=data_rev), "resolve-data-rev")
        fetched = self.fetch_op(
            data_repo=data_repo, data_rev=resolved.output, dvc_remote=dvc_remote, params_json=self.params_json
        )
        self.on_cpu(fetched, "fetch-data", self.s3, cache=True)
        for task in (resolved, fetched):
            self.retry(task, self.s.fetch_retries)
        dataset = fetched.outputs["dataset"]
        checked = self.validate_op(dataset=dataset, params_json=self.params_json, overrides=overrides)
        return dataset, self.on_cpu(checked, "validate-data", self.mlflow, cache=True)

    def train_in_pod(self, knobs: dict[str, Any], role: str) -> PipelineTask:
        return self.on_gpu(self.train_op(**knobs, checkpoint_root=self.checkpoint_root), f"train-{role}", cache=True)

    def train(self, dataset: Any, knobs: dict[str, dict[str, Any]], distributed_nodes: Any, gpus_per_node: Any,
              staging_uri: Any) -> dict[str, Any]:
        """Both candidates' models, by role: trained in the pipeline pod, or as PyTorchJobs when offered."""
        if not self.s.multi_node_training:
            return {role: self.train_in_pod(knobs[role], role).outputs["model"] for role in knobs}
        jobs, tasks = {}, {}
        # one group for both roles: the dataset is staged once per run for both PyTorchJobs and deleted
        # after both (a task may not read outputs of a sibling dsl.If group)
        with dsl.If(distributed_nodes > 1, name="multi-node"):
            staged = self.on_cpu(self.stage_op(dataset=dataset, staging_uri=staging_uri), "stage-data", self.s3)
            for role in knobs:
                jobs[role] = job = self.distributed_op(
                    **knobs[role], nodes=distributed_nodes, gpus_per_node=gpus_per_node,
                    staging_uri=staging_uri, staged_data=staged.output, job_image=self.gpu, namespace="",
                    timeout_s=self.s.distributed_timeout_s,
                )
                self.on_cpu(job, f"train-{role}-job", self.s3, self.mlflow, cache=True)
                for env, path in OWNER_FIELDS:  # the PyTorchJob names this pod as its owner
                    kubernetes.use_field_path_as_env(job, env, path)
            unstaged = self.unstage_op(staged_data=staged.output).after(*jobs.values()).ignore_upstream_failure()
            self.on_cpu(unstaged, "unstage-data", self.s3)
        with dsl.Else(name="in-pod"):
            for role in knobs:
                tasks[role] = self.train_in_pod(knobs[role], role)
        return {role: dsl.OneOf(jobs[role].outputs["model"], tasks[role].outputs["model"]) for role in knobs}

    def evaluate(self, scoring: dict[str, Any], evaluate_gpu: Any) -> Any:
        """The evaluation artifact: scored on the CPU, or on one GPU of the pool when offered and asked for."""
        if not self.s.gpu_evaluation:
            return self.on_cpu(self.evaluate_op(**scoring), "evaluate", self.s3, self.mlflow).outputs["evaluation"]
        with dsl.If(evaluate_gpu == False, name="evaluate-on-cpu"):  # noqa: E712 - a KFP condition
            on_cpu = self.on_cpu(self.evaluate_op(**scoring), "evaluate", self.s3, self.mlflow)
        with dsl.Else(name="evaluate-on-gpu"):  # CUDA image, one GPU of the pool
            on_gpu = self.on_gpu(self.evaluate_gpu_op(**scoring), "evaluate")
        return dsl.OneOf(on_cpu.outputs["evaluation"], on_gpu.outputs["evaluation"])

    def gate(self, scoring: dict[str, Any], evaluation: Any, **thresholds: Any) -> None:
        """Register the winner and judge it; then promote it, or record the rejection."""
        gated = self.register_op(**scoring, evaluation=evaluation, **thresholds)
        self.on_cpu(gated, "register-and-gate", self.mlflow)
        acting = dict(decision=gated.outputs["decision_files"], params_json=self.params_json,
                      overrides=scoring["overrides"], registered_model=scoring["registered_model"])
        with dsl.If(gated.outputs["decision"] == "promoted", name="gate-passed"):
            self.on_cpu(self.promote_op(**acting), "promote-champion", self.mlflow)
        with dsl.Else(name="gate-failed"):
            self.on_cpu(self.promote_op(**acting), "record-rejection", self.mlflow)

    def stop(self, checked: PipelineTask) -> None:
        self.on_cpu(self.rejected_op(report=checked.outputs["report"]), "stop-on-invalid-data")


def build(params: dict[str, Any], s: PipelineSettings) -> GraphComponent:
    """The pipeline for these params.yaml contents and settings (images, pool, resources)."""
    from headstart.config import section
    from headstart.steps import register as register_step
    from headstart.steps import train as train_step

    sections = _Sections(params, s)
    # The run parameters' defaults, read through the step configs so they match a local run.
    ft, sc = train_step.config_from_params(params, "finetune"), train_step.config_from_params(params, "scratch")
    gate, data = register_step.configs_from_params(params)[1], section(params, "fetch")
    repo, rev, remote = data.get("repo", ""), data.get("rev", ""), data.get("remote", "")
    model_name = section(params, "tracking").get("registered_model", "headstart-classifier")
    config = dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(
        size=s.workspace_size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=s.pvc_patch()),
    )) if s.workspace_size else None

    def headstart(
        data_repo: str = repo,
        data_rev: str = rev,
        dvc_remote: str = remote,
        backbone: str = ft.backbone,
        weights: str = ft.weights or "none",
        image_size: int = ft.image_size,
        epochs: int = ft.epochs,
        images_per_class: int = ft.images_per_class or 0,
        finetune_lr_head: float = ft.lr_head,
        finetune_lr_backbone: float = ft.lr_backbone,
        scratch_lr_head: float = sc.lr_head,
        scratch_lr_backbone: float = sc.lr_backbone,
        min_accuracy: float = gate.min_accuracy,
        min_gain_over_baseline: float = -1.0 if gate.min_gain_over_baseline is None else gate.min_gain_over_baseline,
        max_regression: float = gate.max_regression,
        max_class_recall_drop: float = gate.max_class_recall_drop,
        registered_model: str = model_name,
        overrides: list = [],  # noqa: B006 - KFP reads the default; the function is only traced
        distributed_nodes: int = 0,
        gpus_per_node: int = 1,
        staging_uri: str = "",
        evaluate_gpu: bool = False,
    ) -> None:
        """Headstart retraining.

        Args:
            data_repo: Git URL of the Headstart repository whose data.dvc pins the dataset. Empty: the working
                copy (local runs).
            data_rev: Git commit, tag or branch of data_repo; its data.dvc is the dataset version. Resolved to
                a commit at the start of every run, so a branch fetches its newest data. Empty: the default
                branch.
            dvc_remote: DVC remote URL holding the data, e.g. s3://bucket/dvcstore. Empty: the remote
                configured in the repository.
            backbone: Architecture of both candidates (efficientnet_lite0, small_cnn, or a torchvision model
                name).
            weights: Pre-trained weights of the fine-tuned candidate (imagenet, a torchvision enum, a path or
                s3:// URI). The scratch candidate always starts from random weights.
            image_size: Input size in pixels, both candidates.
            epochs: Maximum training epochs, both candidates (early stopping may end sooner).
            images_per_class: Training images per class, both candidates. 0: all.
            finetune_lr_head: Learning rate of the classifier head, fine-tuned candidate.
            finetune_lr_backbone: Learning rate of the pre-trained backbone, fine-tuned candidate.
            scratch_lr_head: Learning rate of the head, scratch candidate.
            scratch_lr_backbone: Learning rate of the backbone, scratch candidate.
            min_accuracy: Gate: the winner's test accuracy must reach this.
            min_gain_over_baseline: Gate: the fine-tuned model must beat scratch by more than this (CI lower
                bound); -1 lets any gain pass.
            max_regression: Gate: the winner may trail the champion by at most this (CI lower bound).
            max_class_recall_drop: Gate: no class's recall may drop by more than this versus the champion.
            registered_model: MLflow registered model name; the alias `champion` marks the production version.
            overrides: More params.yaml settings as KEY=VALUE strings, e.g. ["train.shared.batch_size=32"];
                applied last.
            distributed_nodes: 0 or 1: train inside the pipeline pod (one node). 2 or more: each candidate
                trains as a Kubeflow PyTorchJob on this many GPU nodes (needs the training operator).
            gpus_per_node: GPUs per node of a distributed training job.
            staging_uri: s3:// folder where a distributed job's dataset and outputs are staged; required when
                distributed_nodes is 2 or more.
            evaluate_gpu: Score the test split on one GPU of the pool (CUDA image, bf16) instead of the CPU.
                kfp.local runs evaluate as one task, on the machine's GPU when it has one.
        """
        dataset, checked = sections.fetch_and_validate(data_repo, data_rev, dvc_remote, overrides)
        with dsl.If(checked.outputs["Output"] == True, name="data-valid"):  # noqa: E712 - a KFP condition
            knobs = {}
            for role, lr_head, lr_backbone, role_weights in (
                ("finetune", finetune_lr_head, finetune_lr_backbone, weights),
                ("scratch", scratch_lr_head, scratch_lr_backbone, ""),
            ):
                knobs[role] = dict(
                    role=role, dataset=dataset, params_json=sections.params_json, overrides=overrides,
                    backbone=backbone, weights=role_weights, image_size=image_size, epochs=epochs,
                    images_per_class=images_per_class, lr_head=lr_head, lr_backbone=lr_backbone,
                )
            trained = sections.train(dataset, knobs, distributed_nodes, gpus_per_node, staging_uri)
            scoring = dict(
                dataset=dataset, finetune=trained["finetune"], scratch=trained["scratch"],
                params_json=sections.params_json, overrides=overrides, registered_model=registered_model,
            )
            sections.gate(scoring, sections.evaluate(scoring, evaluate_gpu), min_accuracy=min_accuracy,
                       min_gain_over_baseline=min_gain_over_baseline, max_regression=max_regression,
                       max_class_recall_drop=max_class_recall_drop)
        with dsl.Else(name="data-invalid"):
            sections.stop(checked)

    return dsl.pipeline(
        name=NAME, description=DESCRIPTION, display_name="Headstart retraining", pipeline_config=config
    )(headstart)
