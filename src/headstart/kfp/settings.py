"""Compile-time settings of the Kubeflow pipeline: images, resources, GPU pool, secrets, retries.

They come from the `pipeline` section of params.yaml (the GPU pool's label and taint must match
infra/terraform) and from `headstart pipeline compile` options. A key params.yaml sets has its one default
there; the others (no pipeline's knob in params.yaml) have theirs here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from headstart.config import from_section
from headstart.storage import DEFAULT_TIMEOUTS

Cpu = Annotated[str, Field(pattern=r"^([0-9]*[.])?[0-9]+m?$", description="cores, or millicores like 500m")]
Memory = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$", description="bytes, e.g. 16Gi")]


def package_version() -> str:
    try:
        return version("headstart")
    except PackageNotFoundError:
        return "0.0.0"


class PipelineSettings(BaseModel):
    """The `pipeline` section; keys other tools keep there are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    image_registry: str = "localhost:5000"
    image_name: str = "headstart"
    image_tag: str = ""  # "" = the package version
    image: str = ""  # full reference; wins over registry/name/tag
    gpu_image: str = ""  # full reference of the CUDA variant; default <image>-cuda

    gpu_node_selector_key: str  # these five: params.yaml's, matching infra/terraform's pool
    gpu_node_selector_value: str
    gpu_toleration_key: str
    gpu_toleration_value: str
    gpu_toleration_effect: str
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = 1

    train_cpu_request: Cpu = "4"
    train_cpu_limit: Cpu = "8"
    train_memory_request: Memory = "16Gi"
    train_memory_limit: Memory = "32Gi"
    cpu_request: Cpu = "1"
    cpu_limit: Cpu = "2"
    memory_request: Memory = "4Gi"
    memory_limit: Memory = "8Gi"

    train_retries: int = 3
    fetch_retries: int = 2
    distributed_timeout_s: int = 6 * 3600  # a multi-node PyTorchJob that runs longer fails the task
    multi_node_training: bool = True  # offer the distributed_nodes switch (PyTorchJob); off for kfp.local
    gpu_evaluation: bool = True  # offer the evaluate_gpu switch (If/Else merged by dsl.OneOf); off for kfp.local
    retry_backoff: str = "60s"
    retry_backoff_factor: float = 2.0
    retry_backoff_max: str = "3600s"

    workspace_size: str = "20Gi"  # per-run PVC that keeps checkpoints across retried pods; "" = none
    workspace_storage_class: str = ""  # "" = the cluster's default for KFP workspaces
    workspace_access_mode: str = ""  # e.g. ReadWriteMany so both trainings can run on different nodes

    # Names of Kubernetes secrets (their values never reach the spec).
    s3_secret: str = "headstart-s3"  # noqa: S105
    mlflow_secret: str = "headstart-mlflow"  # noqa: S105
    pod_label_key: str = "headstart.io/pipeline"
    pod_label_value: str = "true"

    def cpu_image(self) -> str:
        return self.image or f"{self.image_registry}/{self.image_name}:{self.image_tag or package_version()}"

    def cuda_image(self) -> str:
        return self.gpu_image or f"{self.cpu_image()}-cuda"

    def pvc_patch(self) -> dict[str, Any]:
        patch: dict[str, Any] = {}
        if self.workspace_storage_class:
            patch["storageClassName"] = self.workspace_storage_class
        if self.workspace_access_mode:
            patch["accessModes"] = [self.workspace_access_mode]
        return patch


class SecretKeys(NamedTuple):
    """The keys of one Kubernetes secret, each given to the pods as the variable of the same name.

    Every secret holds the required ones (infra/k8s/secrets); an optional one reaches the pod when the secret has
    it. The same names are all the docker runner passes from its environment into a container
    (headstart.kfp.local.secret_env), so a local run sees what a pod sees."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


S3_KEYS = SecretKeys(
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"),
    # temporary keys' token, the S3-only endpoint data/remote.py asks for, the region, and headstart.storage's
    # bounds on a call (attempts, timeouts)
    ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS",
     *DEFAULT_TIMEOUTS),
)
MLFLOW_KEYS = SecretKeys(("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"))


def settings_from_params(params: dict[str, Any], **overrides: Any) -> PipelineSettings:
    """The `pipeline` section plus the compile options that were given (None = not given)."""
    return from_section(PipelineSettings, params, "pipeline", **{k: v for k, v in overrides.items() if v is not None})
