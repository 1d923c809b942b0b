"""The whole loop end to end on tiny data, against a SQLite MLflow store in tmp_path.

Trains once per module (1 epoch, 32 px) and then exercises registration, promotion, the
pyfunc model, and a failed gate that must leave the champion where it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from headstart import modelio, registry
from headstart.config import TrackingConfig
from headstart.engine import predict_logits
from headstart.gate import GateThresholds
from headstart.steps import evaluate, register, train

from ..conftest import make_imagefolder

LENIENT = GateThresholds(min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0,
                         max_class_recall_drop=0.99)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("loop")
    data = make_imagefolder(root / "data")
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "art"),
                              registered_model="tiny-classifier")
    cands = {}
    for role, weights in (("finetune", "imagenet"), ("scratch", "none")):
        cfg = train.TrainConfig(role=role, weights=weights, image_size=32, epochs=1, images_per_class=None,
                                val_images_per_class=None, checkpoint_dir=None,
                                tta="flip" if role == "finetune" else "none")
        cands[role] = Path(train.run(cfg, data, root / role, tracking).model_dir)
    return root, data, tracking, cands


def _evaluate_and_register(loop, name: str, thresholds: GateThresholds):
    root, data, tracking, cands = loop
    evaluate.run(evaluate.EvaluateConfig(bootstrap_samples=200), data, cands, root / f"eval-{name}", tracking)
    return register.run(register.RegisterConfig(serving_check_images=8), thresholds, data, cands,
                        root / f"eval-{name}", root / f"decision-{name}", tracking)


def test_first_run_promotes_and_champion_serves_training_predictions(loop):
    root, data, tracking, cands = loop
    result = _evaluate_and_register(loop, "first", LENIENT)
    assert result.promoted and result.version == "1" and result.alias == "champion"
    record = json.loads((root / "decision-first" / "decision.json").read_text())
    assert record["first_run"] is True
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


def test_failed_gate_leaves_the_champion_where_it_was(loop):
    root, data, tracking, cands = loop
    before = registry.champion(tracking)
    assert before is not None
    strict = LENIENT.model_copy(update={"min_accuracy": 1.0})
    result = _evaluate_and_register(loop, "strict", strict)
    assert not result.promoted and result.alias is None
    after = registry.champion(tracking)
    assert after is not None and after.version == before.version
    import mlflow

    mv = mlflow.MlflowClient().get_model_version(tracking.registered_model, result.version)
    assert mv.tags["decision"] == "rejected"
    assert "accuracy_floor" in mv.tags["decision_reason"]
    metrics = json.loads((root / "eval-strict" / "metrics.json").read_text())
    assert "champion" in metrics["models"] and metrics["champion_version"] == before.version


def test_second_promotion_keeps_previous_champion_alias(loop):
    root, data, tracking, cands = loop
    before = registry.champion(tracking)
    result = _evaluate_and_register(loop, "second", LENIENT)
    assert result.promoted and result.previous_champion == before.version
    import mlflow

    client = mlflow.MlflowClient()
    previous = client.get_model_version_by_alias(tracking.registered_model, "previous-champion")
    assert str(previous.version) == before.version
    history = registry.history(tracking)
    assert [h["version"] for h in history][-1] == result.version


def test_register_refuses_a_stale_evaluation(loop):
    from headstart.errors import RegistryError

    root, data, tracking, cands = loop
    evaluate.run(evaluate.EvaluateConfig(bootstrap_samples=200), data, cands, root / "eval-stale", tracking)
    registry.move_champion(tracking, "1", "test", "simulate another run promoting meanwhile")
    with pytest.raises(RegistryError, match="champion changed since evaluation"):
        register.run(register.RegisterConfig(), LENIENT, data, cands, root / "eval-stale", root / "d", tracking)


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
    evaluate.run(evaluate.EvaluateConfig(bootstrap_samples=200), data, orphans, root / "eval-orphan", tracking)
    with pytest.raises(RegistryError, match=r"model\.json: its training run 0{32} is not in this MLflow"):
        register.run(register.RegisterConfig(), LENIENT, data, orphans, root / "eval-orphan", root / "d-o", tracking)
    assert registry.history(tracking) == before
