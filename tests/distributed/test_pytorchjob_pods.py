"""The PyTorchJob's pod script, run here as two "nodes" on loopback with the variables the training
operator sets (MASTER_ADDR, MASTER_PORT, RANK, PET_NODE_RANK): staging in, two-node torchrun with gloo,
rank 0's outputs and MLflow run out. Everything but Kubernetes itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from headstart.cluster import bundle, pytorchjob
from headstart.kfp.settings import settings_from_params

from ..conftest import make_imagefolder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_pods_train_together_and_node_0_hands_the_outputs_back(tmp_path: Path):
    import mlflow

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["shared"].update(images_per_class=None, val_images_per_class=None, epochs=2,
                                     batch_size=12, patience=10)
    params["train"]["scratch"].update(backbone="small_cnn", channels=1, image_size=32)
    params["tracking"].update(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              artifact_root=str(tmp_path / "art"))
    staging = tmp_path / "staging"
    req = pytorchjob.JobRequest(name="job", namespace="ns", role="scratch", params=params,
                                staging_uri=str(staging), nodes=2, gpus_per_node=1,
                                checkpoint_dir=str(tmp_path / "ckpt"))
    bundle.put(make_imagefolder(tmp_path / "data"), req.data_uri())
    job = pytorchjob.manifest(req, settings_from_params(params))
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    pod_env = {e["name"]: e["value"] for e in container["env"]}

    port = _free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `python` is this venv's
    base = {**os.environ, **pod_env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
            "PATH": path, "HEADSTART_DIST_TIMEOUT": "60"}
    base.pop("MLFLOW_TRACKING_URI", None)
    pods = [subprocess.Popen(container["command"], env={**base, "RANK": str(r), "PET_NODE_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in pods]
    assert [p.returncode for p in pods] == [0, 0], "\n\n".join(o[-3000:] for o in outs)

    out = bundle.get(req.outputs_uri(), tmp_path / "model_artifact")
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "learning_curve.png", "metrics.json",
                                                     "model"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    mlflow.set_tracking_uri(params["tracking"]["tracking_uri"])
    runs = mlflow.search_runs(experiment_names=["headstart"])
    loop = runs[runs["tags.headstart.step"] == "loop"]  # the parent run grouping the job's one run
    runs = runs[runs["tags.headstart.step"] != "loop"]
    assert list(runs["run_id"]) == [metrics["run_id"]]
    assert list(runs["tags.mlflow.parentRunId"]) == list(loop["run_id"])
    assert runs.iloc[0]["params.world_size"] == "2"
    checkpoints = sorted(p.name for p in (tmp_path / "ckpt" / "scratch").glob("*/*.pt"))  # <fingerprint>/
    assert checkpoints == ["epoch-0002.pt"]  # a finished run keeps only its final checkpoint
