"""Evaluate writes everything the report shows: confidences, example thumbnails, the training histories and
the page itself, for an ImageFolder and for a packed split (whose images exist only inside its shards)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.data import shards
from headstart.evaluation import scoring
from headstart.models import build_model, modelio
from headstart.presets import Preset
from headstart.steps import evaluate
from tests.helpers import params_cfg

from ..conftest import CLASSES, make_imagefolder

PRESET = Preset(image_size=16, channels=1, mean=(0.5,), std=(0.5,))


def _candidate(folder: Path, seed: int, role: str) -> Path:
    """A small CNN with seeded random weights saved as train saves it, with a history.json beside model/."""
    torch.manual_seed(seed)
    built = build_model("small_cnn", None, len(CLASSES), in_channels=1)
    card = modelio.ModelCard(arch="small_cnn", classes=CLASSES, preset=PRESET, role=role)
    modelio.save(built.model, card, folder / "model")
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.3 * e, "val_loss": 1.1 / e,
                "val_accuracy": 0.25 * e, "lr": 0.1 / e, "seconds": 0.1} for e in (1, 2)]
    (folder / "history.json").write_text(json.dumps(history))
    return folder / "model"


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "scoring_device", lambda: torch.device("cpu"))


@pytest.mark.parametrize("packed", [False, True], ids=["imagefolder", "packed"])
def test_evaluate_writes_confidences_thumbnails_histories_and_the_report(tmp_path: Path, cpu, packed: bool):
    data = make_imagefolder(tmp_path / "data", per_class={"train": 2, "val": 2, "test": 5}, size=16)
    if packed:
        shards.pack(data, tmp_path / "packed", target_shard_bytes=1024)  # several test shards
        data = tmp_path / "packed"
    cands = {"finetune": _candidate(tmp_path / "ft", 1, "finetune"),
             "scratch": _candidate(tmp_path / "sc", 2, "scratch")}
    cfg = params_cfg("evaluate", bootstrap_samples=50, tensor_cache_dir=None, prediction_store=None)
    out = tmp_path / "eval"
    result = evaluate.run(cfg, data, cands, out)
    npz = np.load(out / "predictions.npz")
    for m in cands:
        conf = npz[f"conf_{m}"]
        assert conf.dtype == np.float32 and conf.shape == npz["y_true"].shape
        assert (conf >= 1 / len(CLASSES) - 1e-6).all() and (conf <= 1).all()  # a top softmax probability
        assert set(result.models[m]["per_class"]) == set(CLASSES)
        ok = npz[f"pred_{m}"] == npz["y_true"]  # ECE over 15 equal-width bins, recomputed from what was stored
        bins = np.clip(np.ceil(conf.astype(float) * 15).astype(int) - 1, 0, 14)
        ece = sum(abs(ok[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() for b in set(bins)) / len(ok)
        assert result.models[m]["ece"] == pytest.approx(ece, abs=1e-6)
        assert json.loads((out / f"history_{m}.json").read_text())[1]["lr"] == 0.05
    index = json.loads((out / "examples" / "index.json").read_text())
    rows = {r for group in index.values() for r in group}
    wrong = {int(r) for m in cands for r in np.flatnonzero(npz[f"pred_{m}"] != npz["y_true"])}
    assert rows and rows <= wrong  # every example shown is a mistake of some model
    for r in rows:
        with Image.open(out / "examples" / f"{r}.jpg") as im:
            assert im.format == "JPEG" and max(im.size) <= 64
    page = (out / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == len(rows)
    assert 'id="decision"' in page and "Decision pending" in page and "history" in page
    assert not (out / "report.md").exists()
