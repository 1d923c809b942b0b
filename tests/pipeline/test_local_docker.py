"""The docker runner's side of the host: who may write the pipeline root, and what reaches the containers.

The runs stop at the container engine (DOCKER_HOST names a socket nobody listens on), after the pipeline root and
workspace are prepared, so no engine or image is needed here; tests/containers runs the real thing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headstart.errors import ConfigError
from headstart.kfp.local import run_local, secret_env
from tests.pipeline.conftest import ROOT

IMAGE_UID = 10001  # docker/Dockerfile*: USER 10001:10001
OTHER_UID = 4242  # another user of the machine
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another uid needs root")


def _run_docker(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root.parent}/no-engine.sock")
    run_local(root, params_file=ROOT / "params.yaml", runner="docker", image="localhost/headstart:test")


@as_root
def test_docker_run_gives_root_and_workspace_to_the_image_user_and_no_one_else(tmp_path, monkeypatch):
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="no Docker API answers"):
        _run_docker(root, monkeypatch)
    for folder in (root, root / "workspace"):
        st = folder.stat()
        assert (st.st_uid, st.st_gid) == (IMAGE_UID, IMAGE_UID), folder
        assert st.st_mode & 0o7777 == 0o755, f"{folder}: {oct(st.st_mode)}"


@as_root
@pytest.mark.parametrize("planted", ["workspace/checkpoints/finetune/last.pt", ".kfp_cache/0a1b.json", "."])
def test_a_pipeline_root_holding_another_users_files_is_refused(tmp_path, monkeypatch, planted):
    """A root left open to everyone (chmod 1777, as earlier versions made it) where another user planted a
    checkpoint that training would resume from, a cache entry kfp.local would take for a task's outputs, or the
    root itself made by that user."""
    root = tmp_path / "root"
    (root / "workspace").mkdir(parents=True)
    for folder in (root, root / "workspace"):
        folder.chmod(0o1777)
    path = root / planted
    path.parent.mkdir(parents=True, exist_ok=True)
    if path != root:
        path.write_bytes(b"planted")
    while True:  # what that user made: the file and the folders above it, up to the root's and workspace's
        os.chown(path, OTHER_UID, OTHER_UID)
        if path == root or path.parent in (root, root / "workspace"):
            break
        path = path.parent
    with pytest.raises(ConfigError, match=f"owned by uid {OTHER_UID}"):
        _run_docker(root, monkeypatch)
    if path == root:
        assert root.stat().st_uid == OTHER_UID  # another user's folder is not taken over
    else:
        assert not root.stat().st_mode & 0o002  # and that user can plant nothing more


def test_docker_run_by_a_user_other_than_root_is_refused_with_what_to_do(tmp_path, monkeypatch):
    """Only root can give the folders to uid 10001; anyone else would have to open them to every user."""
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() or 1000)
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match=r"as root \(sudo\)"):
        _run_docker(root, monkeypatch)
    assert not root.stat().st_mode & 0o002


def test_docker_runner_passes_the_s3_endpoint_session_token_region_and_attempts():
    """What data/remote.py tells people to export (AWS_ENDPOINT_URL_S3), temporary keys' token, the region and
    the retry bound reach the containers, as the Kubernetes secret gives them to the pods."""
    environ = {
        "AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "tok",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_MAX_ATTEMPTS": "3", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "HOME": "/root", "PATH": "/bin",
    }
    passed = secret_env(environ)
    assert passed == {k: v for k, v in environ.items() if k not in ("HOME", "PATH")}
    assert secret_env({"AWS_SESSION_TOKEN": ""}) == {}  # unset and empty are the same


def test_a_task_whose_function_name_is_a_path_logs_under_a_plain_name():
    """The container's command names its log file (<run>/logs/NN-FUNCTION-ATTEMPT.log): no way out of logs/."""
    from headstart.kfp.containers import _function

    assert _function(["sh", "-c", "python -m kfp.dsl.executor_main --function_to_execute train_candidate"]) == (
        "train_candidate")
    for name in ("../../etc/cron.d/x", "/tmp/x", "a/b"):
        assert _function(["python", "--function_to_execute", name]) == "?"
