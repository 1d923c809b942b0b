"""Multi-node training on Kubernetes through the Kubeflow training operator (kubeflow.org/v1 PyTorchJob).

`manifest` builds the job: one Master and `nodes - 1` Workers, each running `headstart train` under
torchrun with `gpus_per_node` processes. The operator sets MASTER_ADDR, MASTER_PORT, RANK (the pod's
rank) and PET_NODE_RANK in every pod; torchrun turns them into one rank per GPU. The pods share no disk
with the pipeline step, so the dataset comes in and the outputs go out as bundles under `staging_uri`
(headstart.bundle); rank 0 (in the Master pod) writes the outputs and the MLflow run.
`create`, `wait` and `logs` drive the job with the `kubernetes` client.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.errors import HeadstartError
from headstart.pipeline.settings import PipelineSettings

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER = "pytorch"  # the operator finds the training container by this name
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
DISTRIBUTED_LABEL = "headstart.io/distributed-training"


class TrainingJobFailed(HeadstartError):
    """The PyTorchJob ended Failed, or did not finish in time."""


@dataclass(frozen=True)
class JobRequest:
    """What one distributed training run needs; `params` is the merged params (JSON goes in the pod env)."""

    name: str
    namespace: str
    role: str
    params: dict[str, Any]
    staging_uri: str  # s3://bucket/prefix: <staging>/data.tar.gz in, <staging>/outputs.tar.gz out
    nodes: int = 2
    gpus_per_node: int = 1
    image: str = ""  # "" = the settings' CUDA image
    checkpoint_claim: str = ""  # a PVC for the checkpoints that outlives the Master pod; "" = emptyDir
    checkpoint_dir: str = "/checkpoints"  # where that volume is mounted; only rank 0 reads and writes it
    backoff_limit: int = 3
    service_account: str = ""
    overrides: list[str] = field(default_factory=list)

    def data_uri(self) -> str:
        return f"{self.staging_uri.rstrip('/')}/data.tar.gz"

    def outputs_uri(self) -> str:
        return f"{self.staging_uri.rstrip('/')}/outputs.tar.gz"


def command(req: JobRequest) -> list[str]:
    """The pod's shell script: fetch the data, torchrun `headstart train`, then node 0 uploads the outputs.

    torchrun's static rendezvous gets the node rank and the master's address from the variables the
    operator sets (PET_NODE_RANK, or RANK in operators before v1.7; MASTER_ADDR, MASTER_PORT).
    """
    overrides = [*req.overrides, f"train.{req.role}.checkpoint_dir={req.checkpoint_dir}"]
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    script = "\n".join([
        "set -eu",
        "WORK=`mktemp -d`",  # backticks: Kubernetes would read $(...) as a variable reference
        'printf "%s" "$HEADSTART_PARAMS" > "$WORK/params.yaml"',
        f'python -m headstart.bundle get {shlex.quote(req.data_uri())} "$WORK/data"',
        'NODE_RANK="${PET_NODE_RANK:-$RANK}"',
        f"python -m torch.distributed.run --nnodes={req.nodes} --nproc-per-node={req.gpus_per_node} "
        '--node-rank="$NODE_RANK" --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" '
        f'-m headstart.cli train {shlex.quote(req.role)} --data "$WORK/data" --out "$WORK/out" '
        f'--params "$WORK/params.yaml" {sets}',
        'if [ "$NODE_RANK" = 0 ]; then',
        f'  python -m headstart.bundle put "$WORK/out" {shlex.quote(req.outputs_uri())}',
        "fi",
    ])
    return ["/bin/sh", "-c", script]


def _pod(req: JobRequest, s: PipelineSettings) -> dict[str, Any]:
    gpus = str(req.gpus_per_node)
    requests = {"cpu": s.train_cpu_request, "memory": s.train_memory_request, s.accelerator_type: gpus}
    limits = {"cpu": s.train_cpu_limit, "memory": s.train_memory_limit, s.accelerator_type: gpus}
    container = {
        "name": CONTAINER,
        "image": req.image or s.cuda_image(),
        "command": command(req),
        "env": [{"name": "HEADSTART_PARAMS", "value": json.dumps(req.params, sort_keys=True)},
                {"name": "HEADSTART_NO_PROGRESS", "value": "1"}],
        "envFrom": [{"secretRef": {"name": s.s3_secret}}, {"secretRef": {"name": s.mlflow_secret}}],
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - NCCL needs shared memory
                         {"name": "checkpoints", "mountPath": req.checkpoint_dir}],
    }
    checkpoints = ({"persistentVolumeClaim": {"claimName": req.checkpoint_claim}} if req.checkpoint_claim
                   else {"emptyDir": {}})  # emptyDir survives container restarts within the pod
    spec: dict[str, Any] = {
        "containers": [container],
        "nodeSelector": {s.gpu_node_selector_key: s.gpu_node_selector_value},
        "tolerations": [{"key": s.gpu_toleration_key, "operator": "Equal", "value": s.gpu_toleration_value,
                         "effect": s.gpu_toleration_effect}],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}},
                    {"name": "checkpoints", **checkpoints}],
    }
    if req.service_account:
        spec["serviceAccountName"] = req.service_account
    labels = {s.pod_label_key: s.pod_label_value, DISTRIBUTED_LABEL: "true"}
    return {"metadata": {"labels": labels}, "spec": spec}


def manifest(req: JobRequest, settings: PipelineSettings) -> dict[str, Any]:
    """The PyTorchJob: a Master plus `nodes - 1` Workers from one pod template."""
    if req.nodes < 1 or req.gpus_per_node < 1:
        raise HeadstartError(f"nodes={req.nodes}, gpus_per_node={req.gpus_per_node}: both must be at least 1")
    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "OnFailure", "template": _pod(req, settings)}

    replicas = {"Master": replica(1), **({"Worker": replica(req.nodes - 1)} if req.nodes > 1 else {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PyTorchJob",
        "metadata": {"name": req.name, "namespace": req.namespace,
                     "labels": {settings.pod_label_key: settings.pod_label_value, DISTRIBUTED_LABEL: "true"}},
        "spec": {
            "nprocPerNode": str(req.gpus_per_node),
            "pytorchReplicaSpecs": replicas,
            "runPolicy": {"backoffLimit": req.backoff_limit, "cleanPodPolicy": "None"},
        },
    }


def current_namespace(default: str = "kubeflow") -> str:
    """The namespace of the pod this runs in (a pipeline step's), else `default`."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else default


def api_client() -> Any:
    """In a pod, its service account; elsewhere, the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def create(job: dict[str, Any], api: Any) -> dict[str, Any]:
    from kubernetes import client

    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, job["metadata"]["namespace"], PLURAL, job)


def state(name: str, namespace: str, api: Any) -> tuple[str, str]:
    """("Succeeded" | "Failed" | the latest condition | "Pending", its message)."""
    from kubernetes import client

    job = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for final in ("Failed", "Succeeded"):
        for c in conditions:
            if c.get("type") == final:
                return final, c.get("message", "")
    return (conditions[-1]["type"], conditions[-1].get("message", "")) if conditions else ("Pending", "")


def wait(name: str, namespace: str, api: Any, timeout_s: float, poll_s: float = 15.0) -> str:
    """Poll the job's conditions until Succeeded; raise TrainingJobFailed on Failed or timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        current, message = state(name, namespace, api)
        if current == "Succeeded":
            return message
        if current == "Failed":
            raise TrainingJobFailed(f"PyTorchJob {namespace}/{name} failed: {message}")
        if time.monotonic() >= deadline:
            raise TrainingJobFailed(f"PyTorchJob {namespace}/{name} still {current} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def logs(name: str, namespace: str, api: Any, tail_lines: int = 200) -> dict[str, str]:
    """The last lines of the training container of every pod of the job, by pod name."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items
    return {p.metadata.name: core.read_namespaced_pod_log(p.metadata.name, namespace, container=CONTAINER,
                                                         tail_lines=tail_lines) for p in pods}
