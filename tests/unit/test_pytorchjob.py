"""The PyTorchJob Headstart creates: valid against the training operator's CRD schema, with the GPU pool's
placement; and create / wait / logs against a small fake Kubernetes API on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema
import pytest
import yaml

from headstart.cluster import bundle, pytorchjob
from headstart.config import load_params
from headstart.data import shards
from headstart.errors import StorageError
from headstart.kfp.settings import settings_from_params

from ..conftest import make_imagefolder

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "tests" / "data" / "schemas" / "kubeflow.org_pytorchjobs.yaml"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def _request(**kw: Any) -> pytorchjob.JobRequest:
    params = load_params(ROOT / "params.yaml")
    base = dict(name="headstart-finetune-abc123", namespace="kubeflow-user", role="finetune", params=params,
                staging_uri="s3://bucket/staging/headstart-finetune-abc123", nodes=3, gpus_per_node=4)
    return pytorchjob.JobRequest(**{**base, **kw})


def _job(**kw: Any) -> dict[str, Any]:
    req = _request(**kw)
    return pytorchjob.manifest(req, settings_from_params(req.params))


def _undeclared(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would prune silently: keys the structural schema does not declare."""
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        if props is None and extra is None:
            return []  # the root `metadata` is ObjectMeta, checked by the API server itself
        out = []
        for key, item in value.items():
            sub = (props or {}).get(key, extra if isinstance(extra, dict) else None)
            out += [f"{path}.{key}"] if sub is None else _undeclared(item, sub, f"{path}.{key}")
        return out
    if isinstance(value, list):
        items = schema.get("items", {})
        return [p for i, item in enumerate(value) for p in _undeclared(item, items, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("nodes", [1, 3])
def test_manifest_is_valid_for_the_training_operator_crd(schema, nodes: int):
    job = _job(nodes=nodes, checkpoint_claim="headstart-ckpt" if nodes > 1 else "", service_account="trainer")
    jsonschema.validate(job, schema)
    assert _undeclared(job, schema) == []


def test_the_schema_check_is_live(schema):
    job = _job()
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "2"
    with pytest.raises(jsonschema.ValidationError, match="'2' is not of type 'integer'"):
        jsonschema.validate(job, schema)
    job = _job()
    del job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError, match="'name' is a required property"):
        jsonschema.validate(job, schema)
    job = _job()
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["tolerationz"] = []
    assert _undeclared(job, schema) == [".spec.pytorchReplicaSpecs.Master.template.spec.tolerationz"]


def test_master_and_workers_run_on_the_gpu_pool_with_its_secrets_and_labels():
    params = load_params(ROOT / "params.yaml")
    pool = params["pipeline"]
    job = _job(nodes=3, gpus_per_node=4)
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    assert job["spec"]["nprocPerNode"] == "4"
    for replica in specs.values():
        pod = replica["template"]
        assert pod["metadata"]["labels"] == {"headstart.io/pipeline": "true",
                                             "headstart.io/distributed-training": "true"}
        spec = pod["spec"]
        assert spec["nodeSelector"] == {pool["gpu_node_selector_key"]: pool["gpu_node_selector_value"]}
        assert spec["tolerations"] == [{"key": pool["gpu_toleration_key"], "operator": "Equal",
                                        "value": pool["gpu_toleration_value"],
                                        "effect": pool["gpu_toleration_effect"]}]
        (container,) = spec["containers"]
        assert container["name"] == "pytorch"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "4"
        assert container["envFrom"] == [{"secretRef": {"name": "headstart-s3"}},
                                        {"secretRef": {"name": "headstart-mlflow"}}]
        assert container["image"].endswith("-cuda")
    assert "Worker" not in _job(nodes=1)["spec"]["pytorchReplicaSpecs"]


def test_pods_run_headstart_train_under_torchrun_with_the_operators_variables():
    req = _request(overrides=["train.shared.epochs=2"])
    container = _job(overrides=req.overrides)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "containers"][0]
    shell, flag, script = container["command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    subprocess.run(["sh", "-n", "-c", script], check=True)  # it parses
    assert "python -m torch.distributed.run --nnodes=3 --nproc-per-node=4" in script
    assert '--node-rank="$NODE_RANK" --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT"' in script
    assert "-m headstart.cli train finetune" in script
    assert "--set train.shared.epochs=2 --set train.finetune.checkpoint_dir=/checkpoints" in script
    assert req.data_uri() in script and req.outputs_uri() in script and "$(" not in script
    env = {e["name"]: e["value"] for e in container["env"]}
    assert json.loads(env["HEADSTART_PARAMS"]) == req.params


def test_bundle_round_trip_and_refuses_paths_outside_the_target(tmp_path: Path):
    src = tmp_path / "src"
    (src / "model").mkdir(parents=True)
    (src / "model" / "w.bin").write_bytes(b"\x00\x01")
    (src / "metrics.json").write_text("{}")
    bundle.put(src, str(tmp_path / "staging" / "out.tar.gz"))  # a path works as well as s3://
    dest = bundle.get(str(tmp_path / "staging" / "out.tar.gz"), tmp_path / "dest")
    assert (dest / "model" / "w.bin").read_bytes() == b"\x00\x01" and (dest / "metrics.json").exists()

    import tarfile

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(src / "metrics.json", arcname="../escaped.json")
    with pytest.raises(StorageError, match="not a readable"):
        bundle.unpack(evil, tmp_path / "dest2")
    assert not (tmp_path / "escaped.json").exists()


# --- create / wait / logs against a fake Kubernetes API -------------------------------------------


class FakeKube(BaseHTTPRequestHandler):
    """PyTorchJobs (created, then conditions advance one step per GET; "Error" answers 500, "Reset" drops the
    connection, "Hang" answers nothing until the test ends; deleted), pods and logs."""

    jobs: dict[str, dict[str, Any]] = {}
    script: dict[str, list[tuple[str, str]]] = {}
    seen: list[str] = []
    deleted: list[tuple[str, Any]] = []
    undeletable: set[str] = set()
    released = threading.Event()

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(f"POST {self.path}")
        self.jobs[job["metadata"]["name"]] = job
        self._send(201, job)

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        self.seen.append(f"GET {self.path}")
        if parts[:3] == ["apis", "kubeflow.org", "v1"] and parts[-2] == "pytorchjobs":
            name = parts[-1]
            if name not in self.jobs:
                return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            steps = self.script[name]
            kind, message = steps.pop(0) if len(steps) > 1 else steps[0]
            if kind == "Error":
                return self._send(500, {"kind": "Status", "code": 500, "message": message})
            if kind in ("Reset", "Hang"):
                if kind == "Hang":
                    self.released.wait(30)
                self.close_connection = True
                return self.connection.shutdown(socket.SHUT_RDWR)
            job = {**self.jobs[name], "status": {"conditions": [
                {"type": "Created", "status": "True"}, {"type": kind, "status": "True", "message": message}]}}
            return self._send(200, job)
        if url.path.endswith("/pods"):
            selector = parse_qs(url.query)["labelSelector"][0]
            name = selector.split("=")[1]
            items = [{"metadata": {"name": f"{name}-{r}", "namespace": parts[3]}}
                     for r in ("master-0", "worker-0")]
            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
        if parts[-2] == "pods":  # one pod, read by name (the launcher looking itself up by hostname)
            meta = {"name": parts[-1], "namespace": parts[3], "uid": f"uid-of-{parts[-1]}"}
            return self._send(200, {"kind": "Pod", "apiVersion": "v1", "metadata": meta})
        if url.path.endswith("/log"):
            query = parse_qs(url.query)
            return self._send(200, f"{parts[-2]} log ({query['container'][0]}, last {query['tailLines'][0]})",
                              "text/plain")
        return self._send(404, {"kind": "Status", "code": 404})

    def do_DELETE(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append(f"DELETE {self.path}")
        name = urlparse(self.path).path.rstrip("/").split("/")[-1]
        if name in self.undeletable:
            return self._send(500, {"kind": "Status", "code": 500, "message": "admission webhook down"})
        if self.jobs.pop(name, None) is None:
            return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        self.deleted.append((name, body))
        return self._send(200, {"kind": "Status", "status": "Success"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kube(monkeypatch) -> Iterator[Any]:
    from kubernetes import client

    monkeypatch.setattr(pytorchjob, "RETRY_BASE_S", 0.001, raising=False)  # the backoff's waits, shortened

    FakeKube.jobs, FakeKube.script, FakeKube.seen, FakeKube.deleted, FakeKube.undeletable = {}, {}, [], [], set()
    FakeKube.released = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKube)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    with client.ApiClient(cfg) as api:
        yield api
    FakeKube.released.set()
    server.shutdown()
    server.server_close()


def test_create_wait_until_succeeded_and_fetch_every_pods_log(kube):
    job = _job()
    name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
    FakeKube.script[name] = [("Running", ""), ("Running", ""), ("Succeeded", "PyTorchJob succeeded")]
    created = pytorchjob.create(job, kube)
    assert created["spec"] == job["spec"]
    assert FakeKube.seen[0] == f"POST /apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs"
    assert pytorchjob.wait(name, ns, kube, timeout_s=10, poll_s=0.01) == "PyTorchJob succeeded"
    logs = pytorchjob.logs(name, ns, kube, tail_lines=50)
    assert logs == {f"{name}-master-0": f"{name}-master-0 log (pytorch, last 50)",
                    f"{name}-worker-0": f"{name}-worker-0 log (pytorch, last 50)"}
    assert any("labelSelector=training.kubeflow.org%2Fjob-name%3D" in s for s in FakeKube.seen)


def test_wait_raises_on_failed_and_on_timeout(kube):
    failing, stuck = _job(name="failing"), _job(name="stuck")
    FakeKube.script["failing"] = [("Running", ""), ("Failed", "worker-0 exited with code 1")]
    FakeKube.script["stuck"] = [("Running", "")]
    pytorchjob.create(failing, kube)
    pytorchjob.create(stuck, kube)
    with pytest.raises(pytorchjob.TrainingJobFailed, match="failed: worker-0 exited with code 1"):
        pytorchjob.wait("failing", "kubeflow-user", kube, timeout_s=10, poll_s=0.01)
    with pytest.raises(pytorchjob.TrainingJobFailed, match="still Running after 0s"):
        pytorchjob.wait("stuck", "kubeflow-user", kube, timeout_s=0.05, poll_s=0.01)


# --- item 13: the job never outlives its launcher --------------------------------------------------


def _launch(kube: Any, name: str, steps: list[tuple[str, str]], timeout_s: float = 10, **kw: Any) -> list[str]:
    """Run `launch` on a job whose conditions follow `steps`; return what it printed."""
    FakeKube.script[name] = steps
    req = _request(name=name)
    printed: list[str] = []
    pytorchjob.launch(req, settings_from_params(req.params), kube, timeout_s, poll_s=0.01, echo=printed.append,
                      **kw)
    return printed


def _deleted_with_its_pods(name: str) -> bool:
    return [(n, (b or {}).get("propagationPolicy")) for n, b in FakeKube.deleted] == [(name, "Background")]


def test_pytorchjob_is_deleted_when_the_launcher_times_out(kube):
    with pytest.raises(pytorchjob.TrainingJobFailed, match="still Running"):
        _launch(kube, "stuck", [("Running", "")], timeout_s=0.05)
    assert _deleted_with_its_pods("stuck") and "stuck" not in FakeKube.jobs


def test_pytorchjob_is_deleted_when_it_fails_and_its_logs_are_printed_first(kube):
    with pytest.raises(pytorchjob.TrainingJobFailed, match="worker-0 exited"):
        _launch(kube, "failing", [("Running", ""), ("Failed", "worker-0 exited with code 1")])
    assert _deleted_with_its_pods("failing")
    reads = [s for s in FakeKube.seen if s.startswith(("GET /api/v1", "DELETE"))]
    assert reads[-1].startswith("DELETE /apis/kubeflow.org/v1/namespaces/kubeflow-user/pytorchjobs/failing")
    assert any(s.endswith("/log?container=pytorch&tailLines=200") for s in reads[:-1])  # logs before delete


def test_pytorchjob_is_deleted_when_the_api_stays_down_until_the_timeout(kube):
    with pytest.raises(pytorchjob.TrainingJobFailed, match=r"still unknown after 0s; last poll: .*etcd unavailable"):
        _launch(kube, "broken", [("Running", ""), ("Error", "etcd unavailable")], timeout_s=0.2)
    assert _deleted_with_its_pods("broken")


def _polls_and_deletes(name: str) -> list[str]:
    return [s.split(" ")[0] for s in FakeKube.seen if s.split("?")[0].endswith(f"/pytorchjobs/{name}")]


@pytest.mark.parametrize("blip", [["Error"], ["Reset"] * 5])  # urllib3 itself tries a reset GET 4 times
def test_a_transient_api_error_while_waiting_does_not_delete_the_running_job(kube, blip: list[str]):
    """A 500 (etcdserver: leader changed) or a dropped connection says nothing about the job: keep polling."""
    steps = [("Running", ""), *((b, "etcdserver: leader changed") for b in blip), ("Running", ""),
             ("Succeeded", "PyTorchJob succeeded")]
    printed = _launch(kube, "blip", steps)
    assert "created PyTorchJob kubeflow-user/blip: 3 node(s) x 4 GPU(s)" in printed
    calls = _polls_and_deletes("blip")
    assert calls[-1] == "DELETE" and calls.count("DELETE") == 1  # only once it had succeeded
    assert calls[:-1] == ["GET"] * (len(calls) - 1) and len(calls) >= 5


def test_a_hung_api_connection_times_out_and_is_tried_again(kube, monkeypatch):
    monkeypatch.setattr(pytorchjob, "REQUEST_TIMEOUT", (0.3, 0.3), raising=False)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(_launch(
        kube, "hung", [("Running", ""), ("Hang", ""), ("Succeeded", "PyTorchJob succeeded")], timeout_s=20)),
        daemon=True)
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "launch still blocked on a connection that never answers"
    assert result and _deleted_with_its_pods("hung")  # returned normally, then cleaned up


def test_every_kubernetes_api_call_has_a_request_timeout(kube, monkeypatch):
    timeouts: list[tuple[str, Any]] = []
    call_api = kube.call_api

    def recording(path: str, method: str, *args: Any, **kw: Any) -> Any:
        timeouts.append((f"{method} {path}", kw.get("_request_timeout")))
        return call_api(path, method, *args, **kw)

    monkeypatch.setattr(kube, "call_api", recording)
    _launch(kube, "timed", [("Running", ""), ("Succeeded", "")])
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "launcher", "POD_NAMESPACE": "kubeflow-user"}
    pytorchjob.owner_reference(env, "kubeflow-user", kube)
    methods = {call.split(" ")[0] for call, _ in timeouts}
    assert methods == {"POST", "GET", "DELETE"} and len(timeouts) >= 7  # create, polls, pods, 2 logs, delete
    assert [call for call, t in timeouts if not t] == []
    assert {t for _, t in timeouts} == {pytorchjob.REQUEST_TIMEOUT}


def test_a_transient_api_error_is_tried_again_with_backoff_a_bounded_number_of_times():
    from kubernetes.client.rest import ApiException

    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ApiException(status=503, reason="etcdserver: leader changed")
        return "ok"

    assert pytorchjob._retry(flaky, waits.append) == "ok" and waits == [1.0, 2.0]
    waits.clear()
    with pytest.raises(ApiException) as info:  # bounded: the last error goes on
        pytorchjob._retry(lambda: (_ for _ in ()).throw(ApiException(status=500)), waits.append)
    assert info.value.status == 500 and waits == [1.0, 2.0, 4.0, 8.0]
    waits.clear()
    with pytest.raises(ApiException):  # a 403 is not transient: no second try
        pytorchjob._retry(lambda: (_ for _ in ()).throw(ApiException(status=403)), waits.append)
    assert waits == []


def test_pytorchjob_is_deleted_on_success_too(kube):
    printed = _launch(kube, "done", [("Running", ""), ("Succeeded", "PyTorchJob succeeded")])
    assert _deleted_with_its_pods("done")
    assert "----- done-master-0 -----\ndone-master-0 log (pytorch, last 200)" in printed


def test_pytorchjob_is_deleted_on_sigterm(kube):
    import os
    import signal
    import threading

    caught: list[int] = []
    outer = signal.signal(signal.SIGTERM, lambda s, f: caught.append(s))  # a safety net: never kill pytest
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        with pytest.raises(pytorchjob.Terminated) as info:
            _launch(kube, "cancelled", [("Running", "")], timeout_s=30)
        assert info.value.code == 143  # the exit status of a process ended by SIGTERM
        assert _deleted_with_its_pods("cancelled") and caught == []
        assert not any(s.endswith("tailLines=200") for s in FakeKube.seen)  # no log reading in the grace period
        handler = signal.getsignal(signal.SIGTERM)
        assert handler is not None and getattr(handler, "__name__", "") == "<lambda>"  # put back as it was
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, outer)


def test_a_failed_delete_does_not_hide_the_real_error_and_says_what_to_do(kube):
    FakeKube.undeletable = {"sticky"}
    with pytest.raises(pytorchjob.TrainingJobFailed, match="failed: boom"):  # not the DELETE's 500
        _launch(kube, "sticky", [("Failed", "boom")])
    assert FakeKube.deleted == [] and any(s.startswith("DELETE") for s in FakeKube.seen)


def test_a_failed_delete_is_reported_with_the_kubectl_command(kube):
    FakeKube.undeletable = {"sticky"}
    printed = _launch(kube, "sticky", [("Succeeded", "")])
    assert any("kubectl -n kubeflow-user delete pytorchjob sticky" in line for line in printed)


def test_manifest_names_the_launcher_pod_as_owner(kube):
    owner = pytorchjob.owner_reference({"POD_NAME": "launcher-x", "POD_UID": "1234-abcd",
                                        "POD_NAMESPACE": "kubeflow-user"}, "kubeflow-user", kube)
    assert owner == {"apiVersion": "v1", "kind": "Pod", "name": "launcher-x", "uid": "1234-abcd",
                     "controller": False, "blockOwnerDeletion": False}
    _launch(kube, "owned", [("Succeeded", "")], owner=owner)
    posted = [s for s in FakeKube.seen if s.startswith("POST")]
    assert posted == ["POST /apis/kubeflow.org/v1/namespaces/kubeflow-user/pytorchjobs"]
    assert _deleted_with_its_pods("owned")
    job = _job(name="owned")
    job["metadata"]["ownerReferences"] = [owner]
    assert pytorchjob.manifest(_request(name="owned"), settings_from_params(_request().params), owner) == job


def test_owner_from_the_pods_hostname_and_none_across_namespaces(kube):
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "headstart-run-abc-1234", "POD_NAMESPACE": "ns"}
    owner = pytorchjob.owner_reference(env, "ns", kube)
    assert owner is not None and (owner["name"], owner["uid"]) == ("headstart-run-abc-1234",
                                                                  "uid-of-headstart-run-abc-1234")
    assert "GET /api/v1/namespaces/ns/pods/headstart-run-abc-1234" in FakeKube.seen
    # an owner in another namespace counts as absent: the garbage collector would delete the job at once
    assert pytorchjob.owner_reference({**env, "POD_NAME": "p", "POD_UID": "u"}, "elsewhere", kube) is None
    assert pytorchjob.owner_reference({"POD_NAMESPACE": "ns"}, "ns", kube) is None  # outside a cluster


def test_owner_reference_survives_the_crd_schema(schema):
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u", "controller": False,
             "blockOwnerDeletion": False}
    job = pytorchjob.manifest(_request(), settings_from_params(_request().params), owner)
    jsonschema.validate(job, schema)
    assert job["metadata"]["ownerReferences"] == [owner]


@pytest.mark.parametrize("staging", ["", "/tmp/staging", "staging"])
def test_empty_or_local_staging_uri_is_refused(staging: str):
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError, match=r"staging_uri=.*s3:// folder.*distributed_nodes to 0"):
        pytorchjob.staging_folder(staging, "headstart-finetune-1")
    assert pytorchjob.staging_folder("s3://b/stage/", "job-1") == "s3://b/stage/job-1"


class Art:
    """A KFP artifact as a component body sees it: a path and metadata."""

    def __init__(self, path: Path, metadata: dict | None = None) -> None:
        self.path, self.metadata = str(path), metadata or {}


def test_the_launcher_component_refuses_empty_staging_before_creating_anything(kube, tmp_path, monkeypatch):
    from headstart.errors import ConfigError
    from headstart.kfp.bodies import train_distributed

    monkeypatch.setattr(pytorchjob, "api_client", lambda: kube)
    data = tmp_path / "dataset"
    data.mkdir()
    with pytest.raises(ConfigError, match="staging_uri"):
        train_distributed(
            role="finetune", dataset=Art(data), params_json=json.dumps(load_params(ROOT / "params.yaml")),
            overrides=[], backbone="small_cnn", weights="", image_size=32, epochs=1, images_per_class=0,
            lr_head=0.01, lr_backbone=0.01, nodes=2, gpus_per_node=1, staging_uri="", job_image="img",
            namespace="kubeflow-user", timeout_s=5, model=Art(tmp_path / "m"), metrics=Art(tmp_path / "x"),
            learning_curve=Art(tmp_path / "c"))
    assert FakeKube.seen == []


def test_staging_twice_sends_the_dataset_once_and_a_partial_upload_again(tmp_path: Path, monkeypatch):
    packed = tmp_path / "packed"
    shards.pack(make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 1, "test": 1}, size=16), packed)
    sent: list[str] = []
    put_folder = bundle.put_folder
    monkeypatch.setattr(bundle, "put_folder", lambda folder, uri: (sent.append(uri), put_folder(folder, uri))[1])
    staging = str(tmp_path / "staging" / "data-1")
    uri = pytorchjob.stage(packed, staging)
    assert pytorchjob.stage(packed, staging) == uri and sent == [uri]  # the run's second candidate: nothing sent
    (Path(uri) / "test" / "test-000000.tar").unlink()  # an upload cut short
    assert pytorchjob.stage(packed, staging) == uri and sent == [uri, uri]
    assert pytorchjob.unstage(uri) == len(list(packed.rglob("*.*"))) and not Path(staging).exists()
    for nothing in ("", "."):
        with pytest.raises(StorageError, match="refusing to delete the working directory"):
            pytorchjob.unstage(nothing)


def test_every_pod_of_the_job_gets_the_loop_id_of_the_data_version_from_the_launcher(kube, tmp_path, monkeypatch):
    """The launcher component hands its loop id (the Dataset's data version) to the job, so rank 0's MLflow run
    joins the loop's group."""
    import os

    from headstart.kfp.bodies import train_distributed
    from headstart.tracking import LOOP_ENV

    class Launched(Exception):
        pass

    def launch(req, settings, api, timeout_s, owner=None):
        jobs.append(pytorchjob.manifest(req, settings, owner))
        raise Launched

    jobs: list[dict[str, Any]] = []
    monkeypatch.setenv(LOOP_ENV, "before")  # restored after the test
    monkeypatch.setattr(pytorchjob, "api_client", lambda: kube)
    monkeypatch.setattr(pytorchjob, "launch", launch)
    monkeypatch.setattr(pytorchjob, "unstage", lambda *a, **k: 0)
    with pytest.raises(Launched):
        train_distributed(
            role="finetune", dataset=Art(tmp_path, {"rev": "c0ffee", "md5": "9a1b.dir"}),
            params_json=json.dumps(load_params(ROOT / "params.yaml")),
            overrides=[], backbone="small_cnn", weights="", image_size=32, epochs=1, images_per_class=0,
            lr_head=0.01, lr_backbone=0.01, nodes=3, gpus_per_node=1, staging_uri="s3://bucket/staging",
            job_image="img", namespace="kubeflow-user", timeout_s=5, model=Art(tmp_path / "m"),
            metrics=Art(tmp_path / "x"), learning_curve=Art(tmp_path / "c"),
            staged_data="s3://bucket/staging/data.tar.gz")
    (job,) = jobs
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        env = {e["name"]: e["value"] for e in replica["template"]["spec"]["containers"][0]["env"]}
        assert env[LOOP_ENV] == "c0ffee-9a1b.dir"
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    assert os.environ[LOOP_ENV] == "c0ffee-9a1b.dir"


def test_train_on_cluster_deletes_its_own_staging_folder_however_the_job_ends(tmp_path, monkeypatch):
    """A failed job still leaves nothing of its own behind; the run's shared copy (`staged_data`) is left for
    unstage_data, and the owner comes from the launcher's environment."""
    from headstart.errors import ConfigError

    seen: dict[str, Any] = {}

    def launch(req, settings, api, timeout_s, owner=None):
        seen.update(req=req, owner=owner, timeout_s=timeout_s)
        raise pytorchjob.TrainingJobFailed("PyTorchJob failed")

    deleted: list[str] = []
    monkeypatch.setattr(pytorchjob, "api_client", lambda: "api")
    monkeypatch.setattr(pytorchjob, "owner_reference", lambda env, ns, api: {"name": env["POD_NAME"], "ns": ns})
    monkeypatch.setattr(pytorchjob, "launch", launch)
    monkeypatch.setattr(pytorchjob, "unstage", lambda staging, echo=None: deleted.append(staging) or 0)
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(pytorchjob.TrainingJobFailed):
        pytorchjob.train_on_cluster(
            "scratch", params, tmp_path / "data", tmp_path / "model", nodes=2, gpus_per_node=4,
            staging_uri="s3://b/staging/", image="img", timeout_s=60, namespace="team",
            staged_data="s3://b/staging/data-1/data.tar.gz", loop_id="c0ffee-9a1b.dir", environ={"POD_NAME": "p"})
    req = seen["req"]
    assert req.name.startswith("headstart-scratch-") and req.namespace == "team" and req.image == "img"
    assert (req.nodes, req.gpus_per_node, req.loop_id, seen["timeout_s"]) == (2, 4, "c0ffee-9a1b.dir", 60)
    assert req.data_uri() == "s3://b/staging/data-1/data.tar.gz" and seen["owner"] == {"name": "p", "ns": "team"}
    assert deleted == [f"s3://b/staging/{req.name}"]
    with pytest.raises(ConfigError, match="staging_uri"):
        pytorchjob.train_on_cluster("scratch", params, tmp_path, tmp_path / "m", nodes=2, gpus_per_node=1,
                                    staging_uri="", image="img", timeout_s=1, namespace="team")
    assert len(deleted) == 1  # refused before anything was created
