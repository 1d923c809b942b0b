"""Multi-node training on Kubernetes through the Kubeflow training operator (kubeflow.org/v1 PyTorchJob).

`manifest` builds the job: one Master and `nodes - 1` Workers, each running `headstart train` under
torchrun with `gpus_per_node` processes. The operator sets MASTER_ADDR, MASTER_PORT, RANK (the pod's
rank) and PET_NODE_RANK in every pod; torchrun turns them into one rank per GPU. The pods share no disk
with the pipeline step, so the dataset comes in and the outputs go out as bundles under `staging_uri`
(headstart.cluster.bundle; a packed dataset's shards are copied as they are, `stage_dataset`); rank 0 (in the
Master pod) writes the outputs and the MLflow run.
`create`, `wait`, `logs` and `delete` drive the job with the `kubernetes` client; `launch` runs them so
that no job outlives its launcher. Every API call has a timeout, and a transient error (5xx, reset,
timeout) is tried again, never read as the job's end (`_retry`, `wait`).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from headstart import storage
from headstart.errors import ConfigError, HeadstartError, StorageError
from headstart.kfp.settings import PipelineSettings, settings_from_params
from headstart.tracking import LOOP_ENV

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER = "pytorch"  # the operator finds the training container by this name
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
DISTRIBUTED_LABEL = "headstart.io/distributed-training"


# Downward-API variables the pipeline sets on the launcher task (headstart.kfp.components.train_distributed).
POD_NAME_ENV, POD_UID_ENV, POD_NAMESPACE_ENV = "POD_NAME", "POD_UID", "POD_NAMESPACE"
REQUEST_TIMEOUT = (10, 30)  # (connect, read) s, every API call: the client has no default and ignores a float
API_ATTEMPTS, RETRY_BASE_S = 5, 1.0  # a call meeting transient errors: 5 tries, 1+2+4+8 s apart


class TrainingJobFailed(HeadstartError):
    """The PyTorchJob ended Failed, or did not finish in time."""


class Terminated(SystemExit):
    """SIGTERM arrived (KFP cancels a run by terminating its pods): unwinds through `finally`, exits 143."""


def check_staging_uri(staging_uri: str) -> None:
    """Refuse what the job's pods could not read: they share no disk with the launcher, so anything but an
    s3:// folder (the run parameter's default is "") would be a local path of the launcher pod."""
    if not storage.is_s3(staging_uri):
        raise ConfigError(
            f"staging_uri={staging_uri!r}: a multi-node PyTorchJob's pods share no disk with the pipeline "
            "step, so its dataset and outputs are staged on object storage. Set the run parameter staging_uri "
            "to an s3:// folder readable with the headstart-s3 secret (e.g. --arg staging_uri=s3://bucket/"
            "headstart-staging), or distributed_nodes to 0 to train inside the pipeline pod"
        )


def staging_folder(staging_uri: str, name: str) -> str:
    """`<staging_uri>/<name>`: one job's folder under the run parameter, checked first."""
    check_staging_uri(staging_uri)
    return f"{staging_uri.rstrip('/')}/{name}"


@dataclass(frozen=True)
class JobRequest:
    """What one distributed training run needs; `params` is the merged params (JSON goes in the pod env)."""

    name: str
    namespace: str
    role: str
    params: dict[str, Any]
    staging_uri: str  # s3://bucket/prefix: <staging>/data.tar.gz (or data/, shards) in, outputs.tar.gz out
    nodes: int = 2
    gpus_per_node: int = 1
    image: str = ""  # "" = the settings' CUDA image
    checkpoint_claim: str = ""  # a PVC for the checkpoints that outlives the Master pod; "" = emptyDir
    checkpoint_dir: str = "/checkpoints"  # where that volume is mounted; only rank 0 reads and writes it
    service_account: str = ""
    overrides: list[str] = field(default_factory=list)
    data: str = ""  # the staged dataset (`stage`): a packed one's folder (.../data/) or a .tar.gz; "" = the job's
    loop_id: str = ""  # HEADSTART_LOOP_ID in the pods: rank 0's MLflow run joins the pipeline run's parent run

    def data_uri(self) -> str:
        return self.data or f"{self.staging_uri.rstrip('/')}/data.tar.gz"

    @property
    def sharded(self) -> bool:
        """A packed dataset, staged as its files (a folder), not as one tar.gz."""
        return self.data_uri().endswith("/")

    def outputs_uri(self) -> str:
        return f"{self.staging_uri.rstrip('/')}/outputs.tar.gz"


def stage(folder: Path, staging: str) -> str:
    """Put the dataset under the folder `staging` where a job's pods fetch it, once; returns its URI.

    A packed dataset's shards and index are uploaded as they are, concurrently (its shards are the staging
    format); an ImageFolder, hundreds of thousands of small files, goes up as one .tar.gz, whole or absent.
    Called again with the same dataset (the run's other candidate), it finds the upload there and sends
    nothing: the .tar.gz exists, or every file is there with its size and the same index (whose sha256s
    name the shards)."""
    from headstart.cluster import bundle
    from headstart.data.dataset import open_dataset
    from headstart.data.shards import INDEX

    base = staging.rstrip("/")
    if open_dataset(folder).form != "packed":
        if not storage.exists(f"{base}/data.tar.gz"):
            bundle.put(folder, f"{base}/data.tar.gz")
        return f"{base}/data.tar.gz"
    uri = f"{base}/data/"
    there = storage.sizes(uri) == storage.sizes(folder)
    if not (there and storage.read_bytes(uri + INDEX)[0] == (folder / INDEX).read_bytes()):
        bundle.put_folder(folder, uri)
    return uri


def stage_dataset(folder: Path, req: JobRequest) -> JobRequest:
    """`req` with its dataset staged in its own folder (`stage`)."""
    return replace(req, data=stage(folder, req.staging_uri))


def run_staging(staging_uri: str, source: str) -> str:
    """The folder that one run's candidates share for the dataset `source` (the pipeline's artifact URI):
    the same source maps to the same folder, so a rerun with a cached dataset keeps the training tasks' cache
    keys, and the candidates never upload it twice."""
    return staging_folder(staging_uri, f"data-{hashlib.sha256(source.encode()).hexdigest()[:16]}")


def unstage(staging: str, echo: Callable[[str], None] | None = None) -> int:
    """Delete a staging folder (a job's outputs and own data) or a dataset `stage` returned (its folder);
    returns how many objects went. With `echo`, a failure is a warning (it must not hide the real error)."""
    folder = staging.rstrip("/").rsplit("/", 1)[0] if staging.endswith(("/data/", "/data.tar.gz")) else staging
    try:
        return storage.delete_folder(folder)
    except StorageError as exc:
        if echo is None:
            raise
        echo(f"warning: staged files left behind ({exc}); delete {folder} by hand or with a lifecycle rule")
        return 0


def train_on_cluster(
    role: str,
    params: dict[str, Any],
    dataset: Path,
    model: Path,
    *,
    nodes: int,
    gpus_per_node: int,
    staging_uri: str,
    image: str,
    timeout_s: float,
    namespace: str = "",
    staged_data: str = "",
    loop_id: str = "",
    environ: Mapping[str, str] | None = None,
) -> JobRequest:
    """Train one candidate as a PyTorchJob and download its outputs (model, metrics.json) into `model`.

    `staging_uri` is checked before anything is created. The dataset is staged in the job's own folder unless
    `staged_data` names the run's shared copy (`stage`, left for `unstage` once both candidates are done). The
    job names the launcher pod (POD_NAME, POD_UID in `environ`) as its owner and is deleted however this ends;
    so is the job's staging folder (its outputs, its own copy of the data). Returns the job's request.
    """
    import os
    import uuid

    from headstart.cluster import bundle

    name = f"headstart-{role}-{uuid.uuid4().hex[:8]}"
    staging = staging_folder(staging_uri, name)  # before any work: "" is not readable by the pods
    ns = namespace or current_namespace()
    req = JobRequest(name=name, namespace=ns, role=role, params=params, staging_uri=staging, nodes=nodes,
                     gpus_per_node=gpus_per_node, image=image, data=staged_data, loop_id=loop_id)
    try:
        if not staged_data:
            req = stage_dataset(dataset, req)  # shards as they are, an ImageFolder as a tar.gz
        api = api_client()
        owner = owner_reference(os.environ if environ is None else environ, ns, api)
        launch(req, settings_from_params(params), api, timeout_s, owner=owner)
        bundle.get(req.outputs_uri(), model)
    finally:
        unstage(staging, echo=print)  # this job's folder: its outputs (now in `model`), its own data
    return req


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
        f'python -m headstart.cluster.bundle {"get-folder" if req.sharded else "get"} {shlex.quote(req.data_uri())} '
        '"$WORK/data"',
        'NODE_RANK="${PET_NODE_RANK:-$RANK}"',
        f"python -m torch.distributed.run --nnodes={req.nodes} --nproc-per-node={req.gpus_per_node} "
        '--node-rank="$NODE_RANK" --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" '
        f'-m headstart.cli train {shlex.quote(req.role)} --data "$WORK/data" --out "$WORK/out" '
        f'--params "$WORK/params.yaml" {sets}',
        'if [ "$NODE_RANK" = 0 ]; then',
        f'  python -m headstart.cluster.bundle put "$WORK/out" {shlex.quote(req.outputs_uri())}',
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
                {"name": "HEADSTART_NO_PROGRESS", "value": "1"},
                *([{"name": LOOP_ENV, "value": req.loop_id}] if req.loop_id else [])],
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


def manifest(req: JobRequest, settings: PipelineSettings, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PyTorchJob: a Master plus `nodes - 1` Workers from one pod template; `owner`, an
    ownerReference (see `owner_reference`), makes the cluster delete the job when its owner goes."""
    if req.nodes < 1 or req.gpus_per_node < 1:
        raise HeadstartError(f"nodes={req.nodes}, gpus_per_node={req.gpus_per_node}: both must be at least 1")
    replicas = {kind: {"replicas": count, "restartPolicy": "OnFailure", "template": _pod(req, settings)}
                for kind, count in (("Master", 1), ("Worker", req.nodes - 1)) if count}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PyTorchJob",
        "metadata": {"name": req.name, "namespace": req.namespace,
                     "labels": {settings.pod_label_key: settings.pod_label_value, DISTRIBUTED_LABEL: "true"},
                     **({"ownerReferences": [owner]} if owner else {})},
        "spec": {
            "nprocPerNode": str(req.gpus_per_node),
            "pytorchReplicaSpecs": replicas,
            "runPolicy": {"backoffLimit": 3, "cleanPodPolicy": "None"},
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


def _transient(exc: BaseException) -> bool:
    """An error worth another try: the API server busy or restarting (429, 5xx, e.g. "etcdserver: leader
    changed"), or the connection reset, refused or timed out."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        return exc.status in (0, None, 429) or exc.status >= 500
    return isinstance(exc, (HTTPError, OSError))


def _describe(exc: BaseException) -> str:
    """One line for an API error: the status and the server's message, not the whole response."""
    status = getattr(exc, "status", None)
    if status is None:
        return f"the Kubernetes API did not answer ({type(exc).__name__}: {exc})"
    try:
        why = json.loads(exc.body or "{}").get("message")  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        why = None
    return f"the Kubernetes API answered {status} ({why or getattr(exc, 'reason', '')})"


def _retry(call: Callable[[], Any], sleep: Callable[[float], None] = time.sleep) -> Any:
    """`call()`, tried again after a transient error with exponential backoff (1, 2, 4, 8 s), API_ATTEMPTS
    times in all; other errors, and the last transient one, go on."""
    for attempt in range(1, API_ATTEMPTS + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == API_ATTEMPTS or not _transient(exc):
                raise
            sleep(RETRY_BASE_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def create(job: dict[str, Any], api: Any) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom, ns, name = client.CustomObjectsApi(api), job["metadata"]["namespace"], job["metadata"]["name"]
    tries = 0

    def call() -> dict[str, Any]:
        nonlocal tries
        tries += 1
        try:
            return custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job,
                                                          _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 409 and tries > 1:  # an earlier try got through before its answer was lost
                return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                           _request_timeout=REQUEST_TIMEOUT)
            raise

    return _retry(call)


def state(name: str, namespace: str, api: Any) -> tuple[str, str]:
    """("Succeeded" | "Failed" | the latest condition | "Pending", its message)."""
    from kubernetes import client

    job = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                                    _request_timeout=REQUEST_TIMEOUT)
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    final = next((c for end in ("Failed", "Succeeded") for c in conditions if c.get("type") == end), None)
    latest = final or (conditions[-1] if conditions else {"type": "Pending"})
    return latest["type"], latest.get("message", "")


def wait(name: str, namespace: str, api: Any, timeout_s: float, poll_s: float = 15.0) -> str:
    """Poll the job's conditions until Succeeded; raise TrainingJobFailed on Failed or timeout.

    A poll that meets a transient API error (a 5xx, a reset or a timed-out connection) says nothing about
    the job: the next one comes sooner (1, 2, 4 s... up to `poll_s`) and the job keeps running until it
    ends or `timeout_s` passes, so a blip of the API server never costs the training run."""
    deadline = time.monotonic() + timeout_s
    failures, current, message = 0, "Pending", ""
    while True:
        try:
            current, message = state(name, namespace, api)
            failures = 0
        except Exception as exc:
            if not _transient(exc):
                raise
            failures += 1
            current, message = "unknown", _describe(exc)
        if current == "Succeeded":
            return message
        if current == "Failed":
            raise TrainingJobFailed(f"PyTorchJob {namespace}/{name} failed: {message}")
        if time.monotonic() >= deadline:
            last = f"; last poll: {message}" if failures else ""
            raise TrainingJobFailed(f"PyTorchJob {namespace}/{name} still {current} after {timeout_s:.0f}s{last}")
        time.sleep(min(poll_s, RETRY_BASE_S * 2 ** (failures - 1)) if failures else poll_s)


def logs(name: str, namespace: str, api: Any, tail_lines: int = 200) -> dict[str, str]:
    """The last lines of the training container of every pod of the job, by pod name."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    pods = _retry(lambda: core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}",
                                                   _request_timeout=REQUEST_TIMEOUT).items)
    return {p.metadata.name: _retry(lambda p=p: core.read_namespaced_pod_log(
        p.metadata.name, namespace, container=CONTAINER, tail_lines=tail_lines, _request_timeout=REQUEST_TIMEOUT))
        for p in pods}


def delete(name: str, namespace: str, api: Any) -> bool:
    """Delete the job and, in the background, its pods; False when it was already gone."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        _retry(lambda: client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body=client.V1DeleteOptions(propagation_policy="Background"),
            _request_timeout=REQUEST_TIMEOUT))
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def owner_reference(env: Mapping[str, str], namespace: str, api: Any) -> dict[str, Any] | None:
    """The launcher pod as the job's owner, so the garbage collector deletes the job with the pod.

    The pod's name and uid come from POD_NAME / POD_UID (the downward API, set by the pipeline), else from
    reading the pod named by HOSTNAME inside a cluster. None when neither works, or when the job goes to
    another namespace than the pod's: an owner in another namespace counts as absent, and the garbage
    collector would delete the job at once.
    """
    pod_ns = env.get(POD_NAMESPACE_ENV) or current_namespace(namespace)
    if pod_ns != namespace:
        print(f"warning: PyTorchJob namespace {namespace} is not this pod's ({pod_ns}): no owner reference")
        return None
    name, uid = env.get(POD_NAME_ENV, ""), env.get(POD_UID_ENV, "")
    if not (name and uid) and env.get("KUBERNETES_SERVICE_HOST") and env.get("HOSTNAME"):
        from kubernetes import client

        try:
            pod = client.CoreV1Api(api).read_namespaced_pod(env["HOSTNAME"], pod_ns,
                                                            _request_timeout=REQUEST_TIMEOUT)
            name, uid = pod.metadata.name, pod.metadata.uid
        except Exception as exc:  # noqa: BLE001 - any failure: run without, and say so
            print(f"warning: could not read this pod ({env['HOSTNAME']}) for the owner reference: {exc}")
    if not (name and uid):
        return None
    # blockOwnerDeletion stays false: true would need update permission on pods/finalizers.
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "controller": False,
            "blockOwnerDeletion": False}


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn the first SIGTERM into `Terminated` so the caller's `finally` runs; later ones are ignored
    (they would interrupt the clean-up). Only the main thread can install a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch(req: JobRequest, settings: PipelineSettings, api: Any, timeout_s: float, *,
           owner: dict[str, Any] | None = None, poll_s: float = 15.0,
           echo: Callable[[str], None] = print) -> str:
    """Create the job, wait until it succeeds and delete it, whatever happens in between.

    Failed, timed out, an exception, or SIGTERM (a cancelled run): the pods' logs are printed (not after
    SIGTERM: the grace period is short) and the job is deleted before the error goes on, so no GPU node is
    left training for nobody; a transient API error is none of these. The job's owner reference (the
    launcher pod) makes the cluster delete it even after a SIGKILL. Returns the Succeeded condition's message.
    """
    job = manifest(req, settings, owner)
    where = f"{req.namespace}/{req.name}"
    ours, terminated = True, False
    with _sigterm_raises():
        try:
            try:
                create(job, api)
            except Exception as exc:
                ours = getattr(exc, "status", None) != 409  # 409: the name belongs to another job; leave it
                raise
            echo(f"created PyTorchJob {where}: {req.nodes} node(s) x {req.gpus_per_node} GPU(s)")
            return wait(req.name, req.namespace, api, timeout_s, poll_s)
        except Terminated:
            terminated = True
            echo(f"SIGTERM: deleting PyTorchJob {where}")
            raise
        finally:
            try:
                if ours and not terminated:
                    for pod, text in logs(req.name, req.namespace, api).items():
                        echo(f"----- {pod} -----\n{text}")
            except Exception as exc:  # noqa: BLE001 - logs are a courtesy; the deletion and the real error matter
                echo(f"warning: could not read the logs of PyTorchJob {where}: {exc}")
            try:  # without masking the error that brought us here; say how to finish by hand if it fails
                if ours and delete(req.name, req.namespace, api):
                    echo(f"deleted PyTorchJob {where}")
            except Exception as exc:  # noqa: BLE001
                echo(f"warning: could not delete PyTorchJob {where} ({exc}); delete it with "
                     f"`kubectl -n {req.namespace} delete pytorchjob {req.name}` (its owner reference to the launcher "
                     "pod, when set, lets the cluster remove it once that pod is gone)")
