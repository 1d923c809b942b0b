"""The pipeline's tasks in the component images on one machine: kfp.local.DockerRunner, made dependable.

kfp 2.17's DockerRunner starts each container with `auto_remove` and asks for its exit code afterwards. Under
podman's Docker API the container is gone before `wait()` answers, so a failed task reads as SUCCESS (or the
driver dies with "no such container"). It also pulls any image it does not find under the exact tag. For the
length of a run, `task_runner()` replaces the one function that starts a container
(`kfp.local.docker_task_handler.run_docker_container`) with `run_container`, which
- never pulls: a missing image is an error that says to run `make images`;
- keeps the container until its exit code is read, then removes it;
- labels each container with the task's function and attempt, and keeps a record of every container it ran.
kfp.local itself re-runs a failed task as the task's retry policy in the spec says (with its backoff), as KFP
re-creates a failed pod; each attempt is a new container.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError, HeadstartError

LABEL_FUNCTION = "headstart.function"
LABEL_ATTEMPT = "headstart.attempt"
IMAGE_USER_UID = 10001  # docker/Dockerfile*: the user every component runs as


@dataclass
class ContainerRecord:
    """One container a run started: what ran, as whom, and how it ended."""

    function: str
    attempt: int
    image: str
    container_id: str
    user: str
    exit_code: int
    seconds: float
    log: str = ""


@dataclass
class Runs:
    """What `run_container` did during one pipeline run."""

    records: list[ContainerRecord] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)  # by the task's command
    echo: Callable[[str], None] = lambda line: print(line, end="")

    def as_json(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in asdict(r).items() if k != "log"} for r in self.records]


class ImageMissing(ConfigError):
    """The component image is not on this machine."""


def _function(command: list[str]) -> str:
    """The component's Python function: kfp's lightweight components pass `--function_to_execute NAME`.

    It names the task's log file, so anything but a Python name (a path, say) reads as "?"."""
    text = " ".join(command)
    marker = "--function_to_execute"
    name = text.split(marker, 1)[1].split()[0].strip("'\"") if marker in text else ""
    return name if name.isidentifier() else "?"


def local_image(client: Any, image: str) -> str:
    """The reference under which the engine holds `image` (podman lists local builds as localhost/NAME:TAG)."""
    import docker

    ref = image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        raise ImageMissing(
            f"component image {ref} is not on this machine; build it with `make images` (tools/images.sh), or "
            "compile for an image this machine has (pipeline.image in params.yaml, --image)"
        ) from None


def run_container(runs: Runs, client: Any, image: str, command: list[str], volumes: dict[str, Any],
                  **run_args: Any) -> int:
    """Run one attempt of a task in its container to the end and return the exit code."""
    import docker

    ref = local_image(client, image)
    function = _function(command)
    run_args.pop("auto_remove", None)
    labels = dict(run_args.pop("labels", None) or {})
    # kfp.local re-runs a failed task with the same command (its executor input); two tasks of one function differ
    attempt = runs.attempts[key] = runs.attempts.get(key := "\0".join(command), 0) + 1
    start = time.monotonic()
    container = client.containers.run(
        image=ref, command=command, volumes=volumes, detach=True, stdout=True, stderr=True,
        labels={**labels, LABEL_FUNCTION: function, LABEL_ATTEMPT: str(attempt)}, **run_args,
    )
    lines: list[str] = []
    try:
        for chunk in container.logs(stream=True, follow=True):
            text = chunk.decode(errors="replace")
            lines.append(text)
            runs.echo(text)
        code = int(container.wait()["StatusCode"])
        user = container.attrs.get("Config", {}).get("User", "")
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    runs.records.append(ContainerRecord(function, attempt, ref, container.id, user, code,
                                        round(time.monotonic() - start, 2), "".join(lines)))
    if code != 0:
        runs.echo(f"[headstart] {function}: container exited with {code} (attempt {attempt})\n")
    return code


@contextlib.contextmanager
def task_runner(runs: Runs) -> Iterator[Runs]:
    """Route kfp.local's DockerRunner through `run_container` while the block runs."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = lambda client, image, command, volumes, **kw: run_container(
        runs, client, image, command, volumes, **kw)
    try:
        yield runs
    finally:
        docker_task_handler.run_docker_container = original


def _answers(host: str) -> bool:
    import docker

    try:
        with contextlib.closing(docker.DockerClient(base_url=host, timeout=5)) as client:
            return bool(client.ping())
    except docker.errors.DockerException:
        return False


@contextlib.contextmanager
def engine() -> Iterator[str]:
    """A Docker API for the run: DOCKER_HOST, else a Docker daemon's socket, else a podman API service started
    here for the length of the run (its socket in a fresh temporary folder) and stopped after it."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        if not _answers(host):
            raise ConfigError(f"DOCKER_HOST={host}: no Docker API answers there; start the engine or unset it")
        yield host
        return
    if Path("/var/run/docker.sock").exists() and _answers("unix:///var/run/docker.sock"):
        yield "unix:///var/run/docker.sock"
        return
    podman = shutil.which("podman")
    if podman is None:
        raise ConfigError("no container engine: neither DOCKER_HOST, a Docker daemon nor podman; `make images` "
                          "installs podman (Debian) and builds the images")
    folder = Path(tempfile.mkdtemp(prefix="headstart-podman-"))
    host = f"unix://{folder}/podman.sock"
    log = open(folder / "service.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([podman, "system", "service", "--time=0", host], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not _answers(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise HeadstartError(f"podman system service did not start: {(folder / 'service.log').read_text()}")
            time.sleep(0.2)
        os.environ["DOCKER_HOST"] = host  # kfp.local's handler calls docker.from_env()
        try:
            yield host
        finally:
            os.environ.pop("DOCKER_HOST", None)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def give_to_image(*folders: Path) -> None:
    """Let the image's user, and no other, write `folders` (the pipeline root and workspace, bind-mounted).

    The containers write their outputs there as uid 10001, and the run reads back what it finds: checkpoints
    that training resumes from, kfp.local's cache entries (.kfp_cache) that stand for a task's outputs. A folder
    every user may write (chmod 1777) would let anyone on the machine plant them. So each folder goes to
    10001:10001, mode 0755 (only root may give it away), and nothing in it may belong to a third user."""
    if os.geteuid() != 0:
        raise ConfigError(
            f"{folders[0]}: the components run as uid {IMAGE_USER_UID} (the image's user) and write their outputs "
            "here; only root can give the folder to that user without letting every user write it. Run the "
            "docker runner as root (sudo), or use --runner subprocess"
        )
    for folder in folders:
        if not stat.S_ISDIR(_owned(folder).st_mode):
            raise ConfigError(f"{folder}: not a folder (a symbolic link?); remove it, or choose a new --root")
    for folder in folders:  # the root first: then no other user can swap the workspace for a link
        os.chown(folder, IMAGE_USER_UID, IMAGE_USER_UID)
        folder.chmod(0o755)
    for folder in folders:  # after the chmod: no other user can add an entry while this looks
        for path in folder.rglob("*"):
            if stat.S_ISDIR((st := _owned(path)).st_mode) and st.st_mode & 0o002:
                raise ConfigError(f"{path}: a folder every user may write; remove it, or choose a new --root")


def _owned(path: Path) -> os.stat_result:
    """Refuse what a third user owns: the run would read it back as its own."""
    st = os.lstat(path)
    if st.st_uid not in (0, IMAGE_USER_UID):
        raise ConfigError(
            f"{path}: owned by uid {st.st_uid}, neither root nor the image's user ({IMAGE_USER_UID}); another "
            "user may have put it there for this run to read back. Remove it (after a look), or choose a new --root"
        )
    return st
