"""The serving check's parent side: which test images the registered version is asked about, the fresh
process that loads it through mlflow.pyfunc (headstart.serving.check, the child side), its time limit, and
how its finding enters the decision. A version that fails, or does not answer in time, is not served."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from headstart.config import TrackingConfig
from headstart.errors import HeadstartError
from headstart.evaluation.gate import Check, Decision
from headstart.registry import model_registry as registry
from headstart.registry.decision_record import SERVING_CHECK


class ServingCheckTimeout(HeadstartError):
    """The serving-check process did not finish in `register.serving_check_timeout_s`: the version is
    rejected (a model that cannot be loaded and asked in time is not served), nothing is promoted."""


def serving_sample(labels: Sequence[int] | np.ndarray, n: int) -> list[int]:
    """Indices of `n` test images taken round-robin over the classes (each class in its own order).

    The test paths are sorted by class, so their first `n` are often one class only. Deterministic; with
    `n` at least the number of classes every class is in; with fewer, the first `n` classes are."""
    ys = np.asarray(labels).ravel().tolist()
    seen: dict[int, int] = {}
    rank = []  # the image's position within its class
    for y in ys:
        rank.append(seen.get(y, 0))
        seen[y] = rank[-1] + 1
    return sorted(range(len(ys)), key=lambda i: (rank[i], ys[i]))[: max(n, 0)]


def serving_images(data_dir: Path, names: list[str], dest: Path) -> list[Path]:
    """The files of the sampled test images (`names` as evaluation lists them, 'test/<class>/<file>'): on disk
    in an ImageFolder; a packed root's streamed out of its test shards into `dest` as <i><ext>, i the name's
    position (examples.image_files, which the report's thumbnails use too)."""
    from headstart.evaluation.examples import image_files

    dest.mkdir(parents=True, exist_ok=True)
    return image_files(data_dir, names, dest)


def sample(eval_dir: Path, data_dir: Path, name: str, model_dir: Path, classes: Sequence[str], n: int,
           dest: Path) -> tuple[list[Path], list[str]]:
    """The `n` test images the check hands model `name` (files under `dest` for a packed root), and the labels
    it must give them: made on the device and precision serving uses (serving.check.expected_labels)."""
    from headstart.serving.check import expected_labels

    preds = np.load(eval_dir / "predictions.npz")
    picked = serving_sample(preds["y_true"], n)
    paths = serving_images(data_dir, [str(preds["paths"][i]) for i in picked], dest)
    return paths, [classes[i] for i in expected_labels(eval_dir, name, model_dir, picked, paths)]


def _run_check(cmd: list[str], timeout_s: float, version: str) -> subprocess.CompletedProcess[str]:
    """Run the serving-check process in its own process group, killing the whole group on timeout
    (a child it started must not keep the pipes, and this step, open)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException as exc:  # the timeout, or this step interrupted: never leave the process running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        raise ServingCheckTimeout(
            f"serving check of v{version} timed out after {timeout_s:g}s (register.serving_check_timeout_s in "
            "params.yaml): loading it through mlflow.pyfunc and predicting did not finish; raise the limit if "
            "this machine is slow"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def serving_check(tracking: TrackingConfig, version: str, images: list[Path], expected: list[str],
                  timeout_s: float = 300.0) -> str | None:
    """Load the version with mlflow.pyfunc in a fresh process; None if it reproduces the labels.

    The version's files are downloaded here first, with retries, so an unreachable server fails the run
    (RegistryError) instead of rejecting a good model. A process running past `timeout_s` raises
    ServingCheckTimeout."""
    import mlflow

    registry.client(tracking)
    registry.stage("serving_check")
    uri = f"models:/{tracking.registered_model}/{version}"
    with tempfile.TemporaryDirectory() as tmp:
        listing, out = Path(tmp) / "images.txt", Path(tmp) / "out.json"
        listing.write_text("\n".join(str(p.resolve()) for p in images))
        local = registry.retry(f"downloading {uri} for the serving check",
                               lambda: mlflow.artifacts.download_artifacts(uri, dst_path=str(Path(tmp) / "model")))
        proc = _run_check([sys.executable, "-m", "headstart.serving.check", "--model-uri", str(local),
                           "--images", str(listing), "--out", str(out)], timeout_s, version)
        if not out.is_file():
            return f"serving check crashed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
        result = json.loads(out.read_text())
    if not result["ok"]:
        return f"serving check: the model does not load through mlflow.pyfunc: {result['error']}"
    wrong = sum(a != b for a, b in zip(result["labels"], expected, strict=True))
    if wrong:
        return f"serving check: pyfunc disagrees with the evaluation on {wrong}/{len(expected)} images"
    return None


def failure(tracking: TrackingConfig, version: str, images: list[Path], expected: list[str],
            timeout_s: float) -> str | None:
    """serving_check's finding, a timeout included: recorded as a failed check, so the version is rejected
    instead of left pending."""
    try:
        return serving_check(tracking, version, images, expected, timeout_s)
    except ServingCheckTimeout as exc:
        return str(exc)


def with_serving(decision: Decision, failure: str | None) -> Decision:
    """Add the serving check to the decision record; a failure rejects the version."""
    check = Check(name=SERVING_CHECK, passed=failure is None, applies=True,
                  detail=failure or "the registered version loads through mlflow.pyfunc in a fresh process "
                  "and reproduces the evaluation's predictions")
    reasons = decision.reasons + ((failure,) if failure else ())
    return replace(decision, checks=decision.checks + (check,), promote=decision.promote and failure is None,
                   reasons=reasons)
