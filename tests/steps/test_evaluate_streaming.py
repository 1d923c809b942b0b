"""Evaluation streams a packed test split: workers decode, the model scores batch by batch,
and only a label per image is kept; the predictions are those of the in-memory path on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.data import shards
from headstart.evaluation import scoring
from headstart.steps import evaluate

from ..conftest import make_imagefolder
from ..helpers import params_cfg, random_model


@pytest.fixture
def packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = make_imagefolder(tmp_path / "folder", per_class={"train": 2, "val": 2, "test": 7}, size=16)
    root = tmp_path / "shards"
    shards.pack(folder, root, target_shard_bytes=2048)  # several test shards
    cands = {"finetune": random_model(tmp_path / "ft", 1, "finetune"),
             "scratch": random_model(tmp_path / "sc", 2, "scratch")}
    batches: list[int] = []
    real = scoring.predict_logits

    def spy(model, preset, x, *args, **kwargs):
        batches.append(len(x))
        return real(model, preset, x, *args, **kwargs)

    monkeypatch.setattr(scoring, "predict_logits", spy)
    monkeypatch.setattr(scoring, "scoring_device", lambda: torch.device("cpu"))
    return tmp_path, folder, root, cands, batches


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_predictions_match_the_in_memory_ones_in_batches_of_at_most_batch_size(packed, workers: int):
    root, folder, sharded, cands, batches = packed
    assert len(shards.read_index(sharded).splits["test"].shards) > 1
    base = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, prediction_store=None, batch_size=4)
    evaluate.run(base, folder, cands, root / "memory")
    batches.clear()
    streamed = base.model_copy(update={"data_loading": "stream", "loader_workers": workers})
    result = evaluate.run(streamed, sharded, cands, root / "stream")
    assert batches and max(batches) <= 4 and sum(batches) == 2 * 21  # never the whole split at once
    memory, stream = np.load(root / "memory" / "predictions.npz"), np.load(root / "stream" / "predictions.npz")
    for k in ("paths", "y_true", "pred_finetune", "pred_scratch"):  # the ImageFolder's rows, in its order
        np.testing.assert_array_equal(stream[k], memory[k])
    assert [n for n, _ in shards.split_items(sharded, "test")] != [str(p)[5:] for p in stream["paths"]]  # reordered
    assert result.models["finetune"]["n_test"] == 21


def test_auto_keeps_a_small_packed_split_in_memory(packed, monkeypatch: pytest.MonkeyPatch):
    root, _, sharded, cands, batches = packed
    import headstart.data.stream as stream

    def refuse(*_a, **_k):
        raise AssertionError("a small split must not stream")

    monkeypatch.setattr(stream, "scoring_batches", refuse)
    cfg = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, prediction_store=None)
    evaluate.run(cfg, sharded, cands, root / "auto")
    assert batches == [21, 21]


def test_a_streamed_split_is_kept_in_the_store_and_a_changed_shard_is_scored_again(packed):
    root, folder, sharded, cands, batches = packed
    cfg = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, data_loading="stream",
                     loader_workers=0, prediction_store=str(root / "store"))
    evaluate.run(cfg, sharded, cands, root / "e1")
    batches.clear()
    evaluate.run(cfg, sharded, cands, root / "e2")
    assert batches == []
    how = {m["predictions"] for m in json.loads((root / "e2" / "metrics.json").read_text())["models"].values()}
    assert how == {"reused from the store"}
    image = sorted((folder / "test" / "stripes").iterdir())[0]
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(image)
    shards.pack(folder, root / "shards2", target_shard_bytes=2048)
    evaluate.run(cfg, root / "shards2", cands, root / "e3")
    assert sum(batches) == 2 * 21


@pytest.mark.parametrize("workers", [0, 2])
def test_an_imagefolder_streams_too_with_the_in_memory_predictions(packed, workers: int):
    """data_loading=stream on an ImageFolder (refused before issue 21): workers read and decode its files, in
    batches of at most batch_size, and the predictions are those of the in-memory path, row for row."""
    root, folder, _, cands, batches = packed
    base = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, prediction_store=None, batch_size=4)
    evaluate.run(base, folder, cands, root / "memory")
    batches.clear()
    evaluate.run(base.model_copy(update={"data_loading": "stream", "loader_workers": workers}), folder, cands,
                 root / "stream")
    assert batches and max(batches) <= 4 and sum(batches) == 2 * 21
    memory, stream = np.load(root / "memory" / "predictions.npz"), np.load(root / "stream" / "predictions.npz")
    for k in ("paths", "y_true", "pred_finetune", "pred_scratch"):
        np.testing.assert_array_equal(stream[k], memory[k])
    np.testing.assert_allclose(stream["conf_finetune"], memory["conf_finetune"], rtol=1e-5)


def test_auto_streams_an_imagefolder_past_the_memory_budget(packed):
    root, folder, _, cands, batches = packed
    cfg = params_cfg("evaluate", bootstrap_samples=20, tensor_cache_dir=None, prediction_store=None, batch_size=4,
                     loader_workers=0, memory_budget_gib=1e-9)  # 21 images at 16 px pass it
    result = evaluate.run(cfg, folder, cands, root / "auto")
    assert max(batches) <= 4 and sum(batches) == 2 * 21 and result.models["finetune"]["n_test"] == 21
