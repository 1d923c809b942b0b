"""The whole loop end to end on tiny data, against a SQLite MLflow store.

Trains once per module (1 epoch, 32 px) into a template store; each test works in its own copy, with no
version registered yet or with v1 as the champion, so it passes alone, in any order, and asserts the exact
decision. Exercised: registration, promotion, the pyfunc model, and a failed gate that must leave the champion
where it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from headstart.config import TrackingConfig, load_params
from headstart.evaluation.gate import GateThresholds
from headstart.models import modelio
from headstart.registry import model_registry as registry
from headstart.serving import verify
from headstart.steps import evaluate, register, train
from headstart.training.engine import predict_logits

from ..conftest import CLASSES, make_imagefolder
from ..helpers import copy_store, params_cfg, serving_check_in_process

pytestmark = pytest.mark.slow  # trains EfficientNet-Lite0 and registers a dozen versions: over a minute
ROOT = Path(__file__).resolve().parents[2]

LENIENT = params_cfg("gate", min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0,
                     max_class_recall_drop=0.99, max_negative_flip_rate=None)


class Loop(NamedTuple):
    root: Path
    data: Path
    tracking: TrackingConfig
    cands: dict[str, Path]


def _loop(root: Path) -> Loop:
    """The data, store and both candidates a template (or a copy of it) holds under `root`."""
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "art"),
                          registered_model="tiny-classifier")
    cands = {role: next((root / role).glob("**/model.json")).parent for role in ("finetune", "scratch")}
    return Loop(root, root / "data", tracking, cands)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template: both candidates trained once, logged in a store where no version is registered yet."""
    root = tmp_path_factory.mktemp("trained")
    data = make_imagefolder(root / "data")
    tracking = params_cfg("tracking", tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "art"),
                          registered_model="tiny-classifier")
    for role, weights in (("finetune", "imagenet"), ("scratch", "none")):
        cfg = train.config_from_params(load_params(ROOT / "params.yaml"), role, weights=weights, image_size=32,
                                       epochs=1, images_per_class=None, val_images_per_class=None,
                                       checkpoint_dir=None, probe_epochs=0, lr_backbone=1e-3,
                                       tta="flip" if role == "finetune" else "none")
        train.run(cfg, data, root / role, tracking)
    return root


@pytest.fixture(scope="module")
def first_promotion(trained: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the template after a first lenient run: v1 is the champion."""
    loop = _loop(copy_store(trained, tmp_path_factory.mktemp("promoted")))
    return loop, _evaluate_and_register(loop, "first", LENIENT)


@pytest.fixture
def fresh(trained: Path, tmp_path: Path) -> Loop:
    """This test's own store: both candidates trained, nothing registered."""
    return _loop(copy_store(trained, tmp_path / "loop"))


@pytest.fixture
def loop(first_promotion, tmp_path: Path) -> Loop:
    """This test's own store: both candidates trained, v1 (one of them) the champion."""
    return _loop(copy_store(first_promotion[0].root, tmp_path / "loop"))


@pytest.fixture
def serving_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests about the registry and the gate: the serving check runs in this process. The first promotion,
    the class sampling and the timeout below keep the real subprocess."""
    monkeypatch.setattr(verify, "_run_check", serving_check_in_process)


def _evaluate_and_register(loop: Loop, name: str, thresholds: GateThresholds):
    root, data, tracking, cands = loop
    evaluate.run(params_cfg("evaluate", bootstrap_samples=200), data, cands, root / f"eval-{name}", tracking)
    return register.run(params_cfg("register", serving_check_images=8), thresholds, data, cands,
                        root / f"eval-{name}", root / f"decision-{name}", tracking)


def test_first_run_promotes_and_champion_serves_training_predictions(first_promotion):
    (root, data, tracking, cands), result = first_promotion
    registry.client(tracking)  # the models:/ URIs below resolve against this store
    assert result.decision["decision"] == "promoted" and result.promoted
    assert result.version == "1" and result.alias == "champion"
    record = json.loads((root / "decision-first" / "decision.json").read_text())
    assert record["first_run"] is True
    accuracy = next(c["value"] for c in record["checks"] if c["name"] == "accuracy_floor")
    assert accuracy > 1 / 3  # above chance: a constant or label-shuffled model gets 6 of 18 (1 epoch gets 8)
    assert {c["name"] for c in record["checks"]} >= {"accuracy_floor", "beats_baseline", "serving_check"}
    assert (root / "decision-first" / "decision.md").read_text().strip()

    import mlflow

    served = mlflow.pyfunc.load_model(f"models:/{tracking.registered_model}@champion")
    model, card = modelio.load(cands[result.winner])
    paths = sorted((data / "test").rglob("*.png"))
    got = served.predict(pd.DataFrame({"image": [p.read_bytes() for p in paths]}))
    x = np.stack([card.preset.decode(p) for p in paths])
    import torch

    assert card.tta == ("flip" if result.winner == "finetune" else "none")
    expected = predict_logits(model, card.preset, torch.from_numpy(x), tta=card.tta).argmax(1).numpy()
    assert got["class_index"].tolist() == expected.tolist()
    scored = np.load(root / "eval-first" / "predictions.npz")  # evaluation scored what is now served
    order = [str(Path(p).relative_to(data)) if Path(p).is_absolute() else p for p in scored["paths"]]
    by_path = dict(zip(order, scored[f"pred_{result.winner}"].tolist(), strict=True))
    assert [by_path[str(p.relative_to(data))] for p in paths] == expected.tolist()
    assert got["label"].tolist() == [card.classes[i] for i in expected]

    mv = mlflow.MlflowClient().get_model_version(tracking.registered_model, "1")
    assert mv.tags["decision"] == "promoted"
    assert mv.tags["headstart.winner"] == result.winner
    assert mv.tags["headstart.finetune_run_id"] and mv.tags["headstart.scratch_run_id"]
    assert "git.commit" in mv.tags


def test_failed_gate_leaves_the_champion_where_it_was(loop, serving_in_process):
    root, data, tracking, cands = loop
    before = registry.champion(tracking)
    assert before.version == "1"
    strict = LENIENT.model_copy(update={"min_accuracy": 1.0})
    result = _evaluate_and_register(loop, "strict", strict)
    assert result.decision["decision"] == "rejected" and not result.promoted and result.alias is None
    after = registry.champion(tracking)
    assert after is not None and after.version == before.version
    import mlflow

    mv = mlflow.MlflowClient().get_model_version(tracking.registered_model, result.version)
    assert mv.tags["decision"] == "rejected"
    assert "accuracy_floor" in mv.tags["decision_reason"]
    metrics = json.loads((root / "eval-strict" / "metrics.json").read_text())
    assert "champion" in metrics["models"] and metrics["champion_version"] == before.version


def test_second_promotion_keeps_previous_champion_alias(loop, serving_in_process):
    root, data, tracking, cands = loop
    before = registry.champion(tracking)
    result = _evaluate_and_register(loop, "second", LENIENT)
    assert result.decision["decision"] == "promoted" and result.version == "2"
    assert result.previous_champion == before.version == "1"
    import mlflow

    client = mlflow.MlflowClient()
    previous = client.get_model_version_by_alias(tracking.registered_model, "previous-champion")
    assert str(previous.version) == before.version
    history = registry.history(tracking)
    assert [h["version"] for h in history][-1] == result.version
    # judged against a champion: flips recorded, the run counted under the lock, the numbers in MLflow
    record = json.loads((root / "decision-second" / "decision.json").read_text())
    flips = record["flips"]
    assert flips["n"] == 18 and flips["nfr"] == flips["negative_flips"] / 18 and record["schedule"]["alpha_run"] > 0
    assert record["schedule"]["recorded"] == json.loads(client.get_registered_model(
        tracking.registered_model).tags[registry.SCHEDULE_TAG])
    mv = client.get_model_version(tracking.registered_model, result.version)
    numbers = {m.key: m.value for m in client.get_logged_model(mv.source.removeprefix("models:/")).metrics}
    assert numbers["nfr"] == pytest.approx(flips["nfr"]) and numbers["pfr"] == pytest.approx(flips["pfr"])
    assert numbers["alpha_run"] == pytest.approx(record["schedule"]["alpha_run"])
    assert numbers["test_accuracy"] == pytest.approx(record["checks"][0]["value"]) and "test_macro_f1" in numbers


def test_register_refuses_a_stale_evaluation(loop):
    from headstart.errors import RegistryError

    root, data, tracking, cands = loop
    evaluate.run(params_cfg("evaluate", bootstrap_samples=200), data, cands, root / "eval-stale", tracking)
    c = registry.client(tracking)  # another run registers v2 and promotes it meanwhile
    v2 = c.create_model_version(tracking.registered_model, str(root / "elsewhere"),
                                tags={registry.REGISTRATION_TAG: registry.COMPLETE})
    registry.move_champion(tracking, str(v2.version), "test", "simulate another run promoting meanwhile")
    with pytest.raises(RegistryError, match="champion changed since evaluation"):
        register.run(params_cfg("register"), LENIENT, data, cands, root / "eval-stale", root / "d", tracking)


def test_a_model_whose_training_run_is_not_in_the_store_is_refused_clearly(loop):
    """DVC's run cache can restore outputs/ after the MLflow store was reset: say so, register nothing."""
    import shutil

    from headstart.errors import RegistryError

    root, data, tracking, cands = loop
    orphans = {}
    for role, folder in cands.items():
        copy = root / "orphan" / role
        shutil.copytree(folder, copy)
        card = json.loads((copy / "model.json").read_text())
        card["run_id"] = "0" * 32
        (copy / "model.json").write_text(json.dumps(card))
        orphans[role] = copy
    before = registry.history(tracking)
    evaluate.run(params_cfg("evaluate", bootstrap_samples=200), data, orphans, root / "eval-orphan", tracking)
    with pytest.raises(RegistryError, match=r"model\.json: its training run 0{32} is not in this MLflow"):
        register.run(params_cfg("register"), LENIENT, data, orphans, root / "eval-orphan", root / "d-o", tracking)
    assert registry.history(tracking) == before


@pytest.fixture(scope="module")
def cpu_build_registration(first_promotion, tmp_path_factory: pytest.TempPathFactory):
    """One registration in an environment whose torch is a local `+cpu` build (as in a CPU image),
    recording the images and labels the serving check is handed."""
    import importlib.metadata

    real_version, real_check = importlib.metadata.version, verify.serving_check
    seen: dict[str, list] = {}

    def recording_check(tracking, version, images, expected, *args, **kwargs):
        seen.update(images=list(images), expected=list(expected))
        return real_check(tracking, version, images, expected, *args, **kwargs)

    loop = _loop(copy_store(first_promotion[0].root, tmp_path_factory.mktemp("cpu-build")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.metadata, "version",
                   lambda name: real_version(name) + ("+cpu" if name == "torch" else ""))
        mp.setattr(verify, "serving_check", recording_check)
        result = _evaluate_and_register(loop, "cpu-build", LENIENT)
    return loop, result, seen, real_version("torch").split("+")[0]


def test_serving_check_samples_every_class(cpu_build_registration):
    """The test paths are sorted by class: the first 8 of 3 x 6 would be 6 circles and 2 squares."""
    loop, result, seen, _ = cpu_build_registration
    root, data, _, _ = loop
    assert result.decision["decision"] == "promoted" and result.version == "2"
    assert len(seen["images"]) == 8
    assert {Path(p).parent.name for p in seen["images"]} == set(CLASSES)
    scored = np.load(root / "eval-cpu-build" / "predictions.npz")
    pred = dict(zip(scored["paths"].tolist(), scored[f"pred_{result.winner}"].tolist(), strict=True))
    card = modelio.load_card(loop.cands[result.winner])
    assert seen["expected"] == [card.classes[pred[str(Path(p).relative_to(data))]] for p in seen["images"]]
    check = next(c for c in result.decision["checks"] if c["name"] == "serving_check")
    assert check["passed"], check


def test_logged_requirements_pin_public_versions_only(cpu_build_registration):
    import mlflow

    loop, result, _, torch_public = cpu_build_registration
    tracking = loop.tracking
    registry.client(tracking)
    reqs = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{tracking.registered_model}/{result.version}"))
    lines = [ln.strip() for ln in reqs.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert f"torch=={torch_public}" in lines, lines
    assert not [ln for ln in lines if "+" in ln], lines


def test_serving_check_timeout_rejects_the_version_and_names_the_step(loop, tmp_path, monkeypatch):
    """The serving-check process is made slow at start-up (a sitecustomize that sleeps); the real
    timeout path must kill it, and the gate record it as failed: nothing promoted, nothing left pending."""
    import os
    import time

    import mlflow

    root, data, tracking, cands = loop
    before = registry.champion(tracking)
    assert before.version == "1"
    slow = tmp_path / "slow-python"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\ntime.sleep(120)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")])))
    evaluate.run(params_cfg("evaluate", bootstrap_samples=200), data, cands, root / "eval-slow", tracking)
    start = time.monotonic()
    result = register.run(params_cfg("register", serving_check_images=8, serving_check_timeout_s=2), LENIENT,
                          data, cands, root / "eval-slow", root / "decision-slow", tracking)
    assert time.monotonic() - start < 60  # killed at 2 s, not waited for
    assert not result.promoted and result.alias is None
    assert registry.champion(tracking).version == before.version
    record = json.loads((root / "decision-slow" / "decision.json").read_text())
    check = next(c for c in record["checks"] if c["name"] == "serving_check")
    assert not check["passed"] and f"serving check of v{result.version} timed out after 2s" in check["detail"]
    assert record["decision"] == "rejected"
    mv = mlflow.MlflowClient().get_model_version(tracking.registered_model, result.version)
    assert mv.tags["decision"] == "rejected" and "timed out after 2s" in mv.tags["decision_reason"]
    assert mv.tags[registry.REGISTRATION_TAG] == registry.COMPLETE
    with pytest.raises(verify.ServingCheckTimeout, match=rf"serving check of v{result.version} timed out after 1s"):
        verify.serving_check(tracking, result.version, [data / "test/circle/test_0000.png"], ["circle"], 1)


def test_a_changed_label_set_is_named_and_not_promoted_on_its_own(loop, serving_in_process, tmp_path):
    """Champion trained on 3 classes, candidates on 4: the gate must not take the run for a first one."""
    import mlflow
    import yaml
    from typer.testing import CliRunner

    from headstart.cli import app

    root, _, tracking, _ = loop
    before = registry.champion(tracking)
    assert before.version == "1"
    data4 = make_imagefolder(root / "data4", classes=(*CLASSES, "ring"), seed=1)
    cands4 = {}
    for role in ("finetune", "scratch"):
        cfg = train.config_from_params(load_params(ROOT / "params.yaml"), role, backbone="small_cnn", weights="none",
                                       channels=1, image_size=32, epochs=1, images_per_class=None,
                                       val_images_per_class=None, checkpoint_dir=None, tta="none")
        cands4[role] = Path(train.run(cfg, data4, root / f"{role}-4", tracking).model_dir)
    ecfg = params_cfg("evaluate", bootstrap_samples=200)
    evaluate.run(ecfg, data4, cands4, root / "eval-4", tracking)
    result = register.run(params_cfg("register", serving_check_images=8), LENIENT, data4, cands4,
                          root / "eval-4", root / "decision-4", tracking)
    assert not result.promoted and registry.champion(tracking).version == before.version
    metrics = json.loads((root / "eval-4" / "metrics.json").read_text())
    assert "champion" not in metrics["models"] and metrics["champion_version"] == before.version
    assert metrics["champion_classes"] == list(CLASSES)
    record = json.loads((root / "decision-4" / "decision.json").read_text())
    assert record["first_run"] is False and record["champion"]["version"] == before.version
    assert record["label_change"]["added"] == ["ring"] and record["label_change"]["removed"] == []
    assert record["label_change"]["champion"] == list(CLASSES)
    label = next(c for c in record["checks"] if c["name"] == "label_set")
    assert label["applies"] and not label["passed"] and "ring" in label["detail"]
    assert "label_set" in (root / "decision-4" / "decision.md").read_text()
    mv = mlflow.MlflowClient().get_model_version(tracking.registered_model, result.version)
    assert mv.tags["decision"] == "rejected" and "label_set changed" in mv.tags["decision_reason"]

    # the explicit way through: `headstart promote --version N --reason ...`, then the gate compares again
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tracking": tracking.model_dump()}))
    out = CliRunner().invoke(app, ["promote", "--version", result.version, "--reason", "class ring added",
                                   "--params", str(params)], env={"MLFLOW_TRACKING_URI": ""})
    assert out.exit_code == 0, out.output
    assert registry.champion(tracking).version == result.version
    evaluate.run(ecfg, data4, cands4, root / "eval-4-again", tracking)
    again = json.loads((root / "eval-4-again" / "metrics.json").read_text())
    assert "champion" in again["models"] and again["champion_classes"] == again["classes"]


def test_the_decision_record_names_the_version_the_data_version_and_the_mlflow_run(loop, serving_in_process,
                                                                                  monkeypatch):
    """decision.json/.md name what they are about; MLflow gets the descriptions, the report and every model's
    test numbers as metrics of the logged model."""
    import mlflow

    root, data, tracking, cands = loop
    monkeypatch.setenv("HEADSTART_GIT_COMMIT", "c0ffee12")
    pin = root / "data.dvc"  # `dvc add data` writes it beside the data
    pin.write_text("outs:\n- md5: 0123abcd.dir\n  path: data\n")
    result = _evaluate_and_register(loop, "named", LENIENT)
    out = root / "decision-named"
    record = json.loads((out / "decision.json").read_text())
    assert record["candidate"] == {"name": result.winner, "version": result.version}
    assert record["data_version"] == {"git_commit": "c0ffee12", "data_md5": "0123abcd.dir"}
    run_id = modelio.load_card(cands[result.winner]).run_id  # the version's model is logged in its training run
    assert record["mlflow"]["run_id"] == run_id and record["mlflow"]["version"] == result.version
    assert record["mlflow"]["ui_command"] == f"mlflow ui --backend-store-uri {tracking.resolved_uri()} --port 5000"
    md = (out / "decision.md").read_text()
    assert record["decision"] == "promoted" and record["champion"]["version"] == "1"
    assert md.startswith(f"# `{tracking.registered_model}` v{result.version}: promoted")
    assert "git commit `c0ffee12`, data.dvc md5 `0123abcd.dir`" in md and f"run `{run_id}`" in md
    assert f"{tracking.registered_model} v{result.version}" in (out / "report.html").read_text()
    c = registry.client(tracking)
    mv = c.get_model_version(tracking.registered_model, result.version)
    assert mv.description.startswith(f"v{result.version}: {result.winner}, test accuracy ")
    assert "gate passed: " in mv.description
    assert c.get_registered_model(tracking.registered_model).description.startswith("Headstart image classifier: ")
    assert mv.source.startswith("models:/m-")  # the logged model (a SQL store keeps no model_id on the version)
    metrics = mlflow.get_logged_model(mv.source.removeprefix("models:/")).metrics
    logged = {m.key: m.value for m in metrics}
    evaluated = json.loads((root / "eval-named" / "metrics.json").read_text())["models"]
    for model in ("finetune", "scratch"):
        assert logged[f"{model}_test_accuracy"] == pytest.approx(evaluated[model]["accuracy"])
        assert logged[f"{model}_test_macro_f1"] == pytest.approx(evaluated[model]["macro_f1"])
    assert {"decision/decision.json", "decision/decision.md", "decision/report.html"} <= {
        a.path for a in c.list_artifacts(run_id, "decision")}
    (root / "dl").mkdir()  # the record logged is this run's, not the first promotion's this store was copied with
    logged = Path(c.download_artifacts(run_id, "decision/decision.json", str(root / "dl")))
    logged_record = json.loads(logged.read_text())
    assert logged_record["candidate"] == record["candidate"] == {"name": result.winner, "version": "2"}


def test_the_kfp_register_task_logs_the_verdict_and_version_and_writes_the_report(loop, serving_in_process,
                                                                                 monkeypatch):
    """The component body, as kfp.local runs it: gate_passed/version in its Metrics, the report as its HTML,
    the data version from the fetch task's Dataset metadata (a pod has no git nor data.dvc)."""
    from types import SimpleNamespace

    from headstart.kfp.bodies import register_and_gate

    root, data, tracking, cands = loop
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.resolved_uri())
    monkeypatch.delenv("HEADSTART_GIT_COMMIT", raising=False)
    evaluate.run(params_cfg("evaluate", bootstrap_samples=200), data, cands, root / "eval-kfp", tracking)
    logged: dict[str, float] = {}
    kfp = root / "kfp"
    for name in ("decision_files", "decision_record", "report"):
        (kfp / name).parent.mkdir(parents=True, exist_ok=True)
    result = register_and_gate(
        dataset=SimpleNamespace(path=str(data), metadata={"md5": "feed.dir", "rev": "0a1b2c3", "source": "git"}),
        finetune=SimpleNamespace(path=str(cands["finetune"].parent)),
        scratch=SimpleNamespace(path=str(cands["scratch"].parent)),
        evaluation=SimpleNamespace(path=str(root / "eval-kfp")),
        params_json=json.dumps(load_params(ROOT / "params.yaml")),
        overrides=["gate.bootstrap_samples=200", "register.serving_check_images=8",
                   f"tracking.artifact_root={root / 'art'}"],
        min_accuracy=0.0, min_gain_over_baseline=-1.0, max_regression=1.0, max_class_recall_drop=0.99,
        registered_model=tracking.registered_model,
        decision_files=SimpleNamespace(path=str(kfp / "decision_files")),
        decision_record=SimpleNamespace(path=str(kfp / "decision_record")),
        gate_metrics=SimpleNamespace(log_metric=logged.__setitem__),
        report=SimpleNamespace(path=str(kfp / "report")),
    )
    assert result.decision == "promoted" and logged["gate_passed"] == 1.0
    assert logged["version"] == float(result.version)
    record = json.loads((kfp / "decision_files" / "decision.json").read_text())
    assert record["data_version"] == {"git_commit": "0a1b2c3", "data_md5": "feed.dir"}
    page = (kfp / "report").read_text()
    assert page.startswith("<!doctype html>") and f"v{result.version}" in page
    assert (kfp / "decision_record").read_text().startswith(f"# `{tracking.registered_model}` v{result.version}")
