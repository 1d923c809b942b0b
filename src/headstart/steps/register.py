"""Register the winner, run the gate, and promote it only when every check passes.

Order matters for "nothing is half done" (see headstart.registry): the model is logged, then the version
is created in one request with all its tags and marked pending; the serving check and the decision record
follow, then the version is marked complete, the last write before promotion moves the champion alias.
A run that fails before that leaves the champion unchanged and at most a pending version, which nothing
uses; the next run registers a new version.

The gate's schedule state (headstart.gate.ScheduleState) is read from the registry before anything is
registered, so a corrupt one stops the run with nothing written; the run is counted in it later, under
the registry lock, by headstart.steps.promote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from headstart import registry
from headstart.config import Frozen, TrackingConfig, from_section
from headstart.errors import HeadstartError, RegistryError
from headstart.gate import Decision, GateThresholds, choose_winner, decide, thresholds_from_params
from headstart.steps.evaluate import champion_for_gate, eval_for_gate
from headstart.tracking import git_head


class RegisterConfig(Frozen):
    """The `register` section of params.yaml, which holds each knob's one default (none here)."""

    serving_check_images: int = Field(ge=1)  # drawn round-robin over the classes
    serving_check_timeout_s: float = Field(gt=0)  # the fresh process loading and predicting
    description: str  # the registered model's, set when register creates it


class ServingCheckTimeout(HeadstartError):
    """The serving-check process did not finish in `register.serving_check_timeout_s`: the version is
    rejected (a model that cannot be loaded and asked in time is not served), nothing is promoted."""


def config_from_params(params: dict[str, Any], **changes: Any) -> RegisterConfig:
    """The `register` section; `changes`, for tests and benchmarks, apply last."""
    return from_section(RegisterConfig, params, "register", **changes)


def configs_from_params(params: dict[str, Any]) -> tuple[RegisterConfig, GateThresholds]:
    """What register reads: its own section and the gate's."""
    return config_from_params(params), thresholds_from_params(params)


@dataclass
class RegisterResult:
    model_name: str
    version: str
    winner: str
    promoted: bool
    alias: str | None
    previous_champion: str | None
    decision: dict[str, Any]


def lineage(data_dir: Path) -> dict[str, str]:
    """data.dvc md5 and git commit, so a registered version points back at code and data."""
    from headstart.data.pin import pinned_md5

    tags = {}
    md5 = pinned_md5(data_dir)
    if md5:
        tags["data.dvc_md5"] = md5
    tags["git.commit"] = os.environ.get("HEADSTART_GIT_COMMIT") or git_head() or "unknown"
    return tags


def gate_numbers(record: dict[str, Any]) -> dict[str, float]:
    """The decision record's numbers, flat, for MLflow and the KFP Metrics: accuracy, macro-F1, the flips
    against the champion with their intervals, and the schedule (alpha_run, the run's place in its window)."""
    checks = {c["name"]: c for c in record.get("checks", [])}
    out: dict[str, Any] = {"test_accuracy": (checks.get("accuracy_floor") or {}).get("value"),
                           "test_macro_f1": (checks.get("macro_f1_floor") or {}).get("value")}
    flips = record.get("flips") or {}
    for key in ("nfr", "pfr", "nfi"):
        out[key] = flips.get(key)
        low, high = flips.get(f"{key}_ci") or (None, None)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = low, high
    out["negative_flips"], out["positive_flips"] = flips.get("negative_flips"), flips.get("positive_flips")
    schedule = record.get("schedule") or {}
    out["alpha_run"] = schedule.get("alpha_run")
    after = schedule.get("recorded") or schedule.get("after") or {}
    if schedule.get("alpha_run") is not None:
        out.update({"gate_window": after.get("window"), "gate_window_runs": after.get("window_runs"),
                    "gate_horizon_runs": after.get("horizon_runs"), "gate_alpha_spent": after.get("alpha_spent")})
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def decision_numbers(record: dict[str, Any]) -> dict[str, float]:
    """gate_numbers plus the verdict (`gate_passed` 1/0) and the version, for the KFP Metrics: Kubeflow's
    Compare runs lists them. In the pipeline the promote task moves the alias, so this says the gate passed."""
    extra = {"gate_passed": float(record["decision"] == "promoted")}
    if str(record.get("version", "")).isdigit():
        extra["version"] = float(record["version"])
    return {**gate_numbers(record), **extra}


def _log_model(tracking: TrackingConfig, model_dir: Path, card_run: str | None, sample: list[Path],
               data_dir: Path, data_tags: dict[str, str], numbers: dict[str, float]) -> tuple[str, str, str]:
    """Log the winner as a pyfunc (code + safetensors, no pickle); returns (model URI, run id, experiment id).

    The gate's numbers are logged as metrics of the logged model (MLflow 3's LoggedModel, which the
    registered version's source points at) and so also of its run: MLflow's registry keeps tags on a
    version, not metrics."""
    import mlflow
    import pandas as pd

    import headstart
    from headstart import tracking as trk
    from headstart.serving import ARTIFACT_KEY, MODEL_CODE, Classifier

    classifier = Classifier(model_dir)
    example = pd.DataFrame({"image": [p.read_bytes() for p in sample[:2]]})
    signature = mlflow.models.infer_signature(example, classifier.predict(example))
    exp_id = registry.retry("connecting to the tracking server", lambda: trk.configure(tracking))

    def attempt() -> tuple[str, str, str]:
        with mlflow.start_run(run_id=card_run) if card_run else trk.start(exp_id, "register") as active:
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(MODEL_CODE), artifacts={ARTIFACT_KEY: str(model_dir)},
                code_paths=[str(Path(headstart.__file__).parent)], signature=signature, input_example=example,
                pip_requirements=pip_requirements(),
            )
            frame = pd.DataFrame({"dataset": [str(data_dir)], **{k: [v] for k, v in data_tags.items()}})
            mlflow.log_input(mlflow.data.from_pandas(frame, source=str(data_dir), name="imagefolder"), context="test")
            if numbers:
                mlflow.log_metrics(numbers, model_id=info.model_id)
            return info.model_uri, active.info.run_id, active.info.experiment_id

    if card_run and not _run_exists(card_run):
        raise RegistryError(
            f"{model_dir / 'model.json'}: its training run {card_run} is not in this MLflow tracking store. "
            "The model was trained against another store, or DVC restored it from its run cache after the store "
            "was reset. Re-train against this store (dvc repro -f train_finetune train_scratch), or point "
            "tracking.tracking_uri / MLFLOW_TRACKING_URI at the store it was trained with.")
    registry.stage("log_model")
    return registry.retry("logging the model", attempt)


def _run_exists(run_id: str) -> bool:
    import mlflow

    try:
        registry.retry("looking up the training run", lambda: mlflow.get_run(run_id))
    except RegistryError as exc:
        if getattr(exc.__cause__, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def public_version(version: str) -> str:
    """`2.14.1+cpu` -> `2.14.1`. A PEP 440 local label names one build (a CPU or CUDA wheel from a
    vendor index) that no public index serves, so a pin that keeps it cannot be installed."""
    return version.split("+", 1)[0]


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["torch", "torchvision", "timm", "safetensors", "numpy", "pillow", "pandas", "mlflow", "pydantic",
            "pyyaml", "tqdm"]
    return [f"{p}=={public_version(version(p))}" for p in pkgs]


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
    from headstart.examples import image_files

    dest.mkdir(parents=True, exist_ok=True)
    return image_files(data_dir, names, dest)


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


def lineage_from_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """The data version the KFP fetch task resolved (its Dataset's metadata): a pod has neither git nor data.dvc."""
    tags = {"data.dvc_md5": str(metadata["md5"])} if metadata.get("md5") else {}
    if metadata.get("rev"):
        tags.update({"git.commit": str(metadata["rev"]), "data.source": str(metadata.get("source", ""))})
    return tags


def run(cfg: RegisterConfig, thresholds: GateThresholds, data_dir: Path, candidates: dict[str, Path],
        eval_dir: Path, out_dir: Path, tracking: TrackingConfig, promote: bool = True,
        data_version: dict[str, str] | None = None) -> RegisterResult:
    """Pick the winner, register it, decide, check serving, then promote or record the rejection.

    With promote=False the alias is left alone and the caller runs headstart.steps.promote on the
    decision record (the Kubeflow pipeline does this inside a dsl.If on the decision). `data_version`
    (lineage tags) replaces what this working copy says (lineage(data_dir)), e.g. in a pod.
    """
    from headstart import decision_record, modelio, report

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    evaluated_champion = metrics.get("champion_version")
    finetune, scratch = eval_for_gate(eval_dir, "finetune"), eval_for_gate(eval_dir, "scratch")
    if finetune is None or scratch is None:
        raise RegistryError(f"{eval_dir}: evaluation lacks the finetune or scratch predictions; re-run evaluate")
    registry.repair(tracking)  # record a champion move that a killed run committed but did not finish
    current = registry.champion(tracking)
    if (current.version if current else None) != evaluated_champion:
        raise RegistryError(
            f"the champion changed since evaluation (evaluated v{evaluated_champion}, now "
            f"v{current.version if current else None}); re-run evaluate so the gate compares against it"
        )
    schedule = registry.read_schedule(tracking)  # corrupt: RegistryError before anything is registered
    champ = champion_for_gate(eval_dir, evaluated_champion)
    winner, _ = choose_winner(finetune, scratch)
    decision = decide(winner, scratch, champ, thresholds, schedule=schedule)
    card = modelio.load_card(candidates[winner.name])
    preds = np.load(eval_dir / "predictions.npz")
    sample = serving_sample(preds["y_true"], cfg.serving_check_images)
    staged = tempfile.TemporaryDirectory(prefix="headstart-serving-")  # removed below, or when `run` ends
    paths = serving_images(data_dir, [str(preds["paths"][i]) for i in sample], Path(staged.name))
    from headstart.serving.check import expected_labels  # made on the device and precision serving uses

    expected = [card.classes[i] for i in expected_labels(eval_dir, winner.name, candidates[winner.name], sample, paths)]
    data_tags = {**lineage(data_dir), **(data_version or {})}
    tags = {**data_tags, "headstart.winner": winner.name,
            "headstart.finetune_run_id": modelio.load_card(candidates["finetune"]).run_id or "",
            "headstart.scratch_run_id": modelio.load_card(candidates["scratch"]).run_id or "",
            "headstart.pretraining_paid": str(decision.pretraining_paid),
            **{f"metric.{k}.{m}": f"{v[m]:.4f}" for k, v in metrics["models"].items()
               for m in ("accuracy", "macro_f1")},
            "params.arch": card.arch, "params.image_size": str(card.preset.image_size)}
    model_uri, run_id, experiment_id = _log_model(
        tracking, candidates[winner.name], card.run_id, paths, data_dir,
        {k: v for k, v in data_tags.items() if k.startswith("data")},
        {**gate_numbers(decision.to_dict()), **model_numbers(metrics["models"])})
    version = registry.create_version(tracking, model_uri, tags)
    try:
        failure = serving_check(tracking, version, paths, expected, cfg.serving_check_timeout_s)
    except ServingCheckTimeout as exc:  # recorded as a failed check: the version is rejected, not left pending
        failure = str(exc)
    staged.cleanup()
    decision = replace(_with_serving(decision, failure), candidate_version=version)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = decision_record.mlflow_refs(tracking.resolved_uri(), experiment_id, run_id, tracking.registered_model,
                                       version)
    record = decision_record.complete(
        {**decision.to_dict(), "model_name": tracking.registered_model, "version": version, "winner": winner.name,
         "champion_version": evaluated_champion}, version, data_tags, refs)
    history = report.version_history(tracking, current=version)
    _write_record(out_dir, eval_dir, decision, record, history)
    _log_decision(tracking, version, run_id, out_dir)
    registry.describe(tracking, version, decision_record.version_description(record, metrics["models"]),
                      decision_record.model_description(cfg.description, card.arch, card.preset.image_size,
                                                         list(card.classes)))
    registry.mark_complete(tracking, version)
    previous, promoted = None, False
    if promote:
        from headstart.steps import promote as promote_step

        outcome = promote_step.run(out_dir / "decision.json", tracking)
        previous, promoted = outcome.previous_champion, outcome.promoted
        if outcome.promoted != decision.promote:  # the champion moved while this run was gated
            record.update(decision="rejected", summary=outcome.reason)
        if outcome.schedule is not None:  # as counted under the lock: another pipeline may have counted too
            record["schedule"] = {**record["schedule"], "recorded": outcome.schedule}
        if outcome.promoted or outcome.promoted != decision.promote or outcome.schedule is not None:
            if outcome.promoted:  # the champion mark moves here, not by reading the registry again: past the
                history = [{**h, "champion": h["version"] == version} for h in history]  # commit, a read may fail
            _write_record(out_dir, eval_dir, decision, record, history)
    result = RegisterResult(model_name=tracking.registered_model, version=version, winner=winner.name,
                            promoted=promoted, alias=registry.CHAMPION if promoted else None,
                            previous_champion=previous, decision=record)
    (out_dir / "registration.json").write_text(json.dumps(asdict(result), indent=2, sort_keys=True) + "\n")
    return result


def _write_record(out_dir: Path, eval_dir: Path, decision: Decision, record: dict[str, Any],
                  history: list[dict[str, Any]]) -> None:
    """decision.json, decision.md, decision.html and the evaluation report with the decision, all from `record`."""
    from headstart import decision_record, report

    (out_dir / "decision.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    markdown = decision_record.to_markdown(decision, record)
    (out_dir / "decision.md").write_text(markdown)
    (out_dir / "decision.html").write_text(decision_record.to_html(markdown, f"decision: v{record['version']}"))
    report.write(eval_dir, out_dir / "report.html", record, history, record["links"])


def model_numbers(models: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Every evaluated model's test accuracy and macro-F1 (finetune, scratch, champion) as numbers, for the
    logged model's metrics (charted by MLflow), beside the `metric.*` text tags on the version."""
    return {f"{name}_test_{m}": float(v[m]) for name, v in models.items() for m in ("accuracy", "macro_f1")
            if isinstance(v.get(m), int | float)}


def _with_serving(decision: Decision, failure: str | None) -> Decision:
    """Add the serving check to the decision record; a failure rejects the version."""
    from headstart.gate import Check

    check = Check(name="serving_check", passed=failure is None, applies=True,
                  detail=failure or "the registered version loads through mlflow.pyfunc in a fresh process "
                  "and reproduces the evaluation's predictions")
    reasons = decision.reasons + ((failure,) if failure else ())
    return replace(decision, checks=decision.checks + (check,), promote=decision.promote and failure is None,
                   reasons=reasons)


def _log_decision(tracking: TrackingConfig, version: str, run_id: str, out_dir: Path) -> None:
    """The decision record as run artifacts, and a tag on the version pointing at them."""
    from mlflow import MlflowClient

    registry.stage("decision_record")
    c = MlflowClient()
    for name in ("decision.json", "decision.md", "decision.html", "report.html"):
        registry.retry(f"logging {name}", lambda n=name: c.log_artifact(run_id, str(out_dir / n), "decision"))
    registry.set_version_tags(tracking, version, {"headstart.decision_record": f"runs:/{run_id}/decision"})

