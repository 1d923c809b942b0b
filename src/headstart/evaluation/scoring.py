"""A saved model's predictions on a dataset's test split: decoded into memory or streamed through loader
workers (by the rule in headstart.data.dataset), or read back from the prediction store.

Evaluate scores every candidate and the champion with it; the serving check and the flips benchmark
compare against what it gives. Only a label and a confidence per image are kept, whatever the split's size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.data import stream
from headstart.data.dataset import Dataset, default_loader_workers, open_dataset, streams
from headstart.data.listing import Listing
from headstart.errors import DataError
from headstart.evaluation import predictions
from headstart.models import modelio
from headstart.progress import progress_enabled
from headstart.training.engine import predict_logits

if TYPE_CHECKING:
    from headstart.steps.evaluate import EvaluateConfig


@dataclass
class Scored:
    """One model's predictions on the test split, and how they were obtained."""

    y_true: np.ndarray
    y_pred: np.ndarray
    conf: np.ndarray  # top softmax probability per image (float32): the report's calibration
    paths: list[str]
    key: predictions.PredictionKey | None  # None: the store is off and nothing was fingerprinted
    device: str  # predictions.CPU_FP32 or CUDA_BF16
    reused: bool = False  # read back from the prediction store instead of scored
    seconds: float = 0.0


def scoring_device() -> Any:
    """The GPU when the task has one (bf16 autocast in engine.predict_logits), else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def predict_folder(
    model_dir: Path, data_dir: Any, batch_size: int, *, cfg: EvaluateConfig,
    fingerprints: dict[tuple[str, ...], str] | None = None,
) -> Scored:
    """Predictions of a saved model on the test split, decoded with the model's own preset.

    With `cfg.prediction_store` set, they are read back from the store when this model (its saved bytes),
    this test split (its content), its TTA mode and this device kind already made them; otherwise scored
    and kept there. `fingerprints` caches the split's fingerprint per class list across the models of a run."""
    import torch

    data = open_dataset(data_dir)
    card = modelio.load_card(model_dir)
    data.require_classes("test", card.classes, f"model {model_dir}")  # every path below: memory, stream, store
    device = scoring_device()
    kind = predictions.device_kind(device.type)
    store = cfg.prediction_store
    cache_dir = Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None
    listing = data.items("test", cache_dir=cache_dir)  # a directory listing, or the index's (no image decoded)
    key = None
    if store:
        fingerprints = {} if fingerprints is None else fingerprints
        if card.classes not in fingerprints:
            fingerprints[card.classes] = data.fingerprint("test", card.classes, cache_dir)
        key = predictions.PredictionKey(model=predictions.model_digest(model_dir), data=fingerprints[card.classes],
                                        tta=card.tta, device=kind)
        stored = predictions.load_scored(store, key, len(listing), len(card.classes))
        if stored is not None:
            return Scored(listing.labels, *stored, listing.names, key, kind, reused=True)
    started = time.time()
    model, card = modelio.load(model_dir)
    model.to(device)
    preset = card.preset
    if streams(cfg.data_loading, len(listing), preset, cfg.memory_budget_gib):
        y_pred, conf = _predict_streaming(model, card, data, batch_size, listing, cfg)
        y_true, paths = listing.labels, listing.names
    else:
        test = data.load("test", preset, card.classes, cache_dir=cache_dir,
                         cache_budget_bytes=int(cfg.tensor_cache_budget_gib * 2**30))
        y_pred, conf = _top(predict_logits(model, preset, test.x, batch_size, tta=card.tta))
        y_true, paths = test.y.numpy(), list(test.paths)
        if paths != listing.names or not np.array_equal(y_true, listing.labels):
            raise DataError(f"{data_dir}: the test split's listing ({len(listing)} samples) and what was loaded "
                            f"({len(y_true)}) disagree; if it is sharded, run headstart validate on it")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if store and key is not None:
        predictions.save(store, key, y_pred, conf)
    return Scored(y_true, y_pred.astype(np.int64), conf, paths, key, kind, seconds=time.time() - started)


def _top(logits: Any) -> tuple[np.ndarray, np.ndarray]:
    """Predicted label and its softmax probability (float32) per row of logits."""
    conf, label = logits.softmax(1).max(1)
    return label.numpy(), conf.numpy().astype(np.float32)


def _predict_streaming(model: Any, card: modelio.ModelCard, data: Dataset, batch_size: int, listing: Listing,
                       cfg: EvaluateConfig) -> tuple[np.ndarray, np.ndarray]:
    """Score the test split batch by batch as the readers deliver it, returned in load order (`listing`'s
    rows, by their stream positions); memory: a label and a confidence per image."""
    from tqdm import tqdm

    n = len(listing)
    workers = cfg.loader_workers if cfg.loader_workers is not None else default_loader_workers()
    split = data.stream("test", card.preset, seed=0, workers=workers)
    device = next(model.parameters()).device
    by_position = np.full(split.positions, -1, dtype=np.int64)  # the stream's positions
    conf = np.zeros(split.positions, dtype=np.float32)
    with tqdm(total=n, desc="scoring test", unit="img", disable=not progress_enabled(), leave=False) as bar:
        for xb, _, pos in stream.scoring_batches(split, batch_size, device=device):
            logits = predict_logits(model, card.preset, xb, batch_size, tta=card.tta)
            by_position[pos.numpy()], conf[pos.numpy()] = _top(logits)
            bar.update(len(pos))
    rows = listing.positions
    if len(rows) != split.positions or (by_position[rows] < 0).any():
        raise DataError(f"{data}: streaming the test split left {int((by_position[rows] < 0).sum())} of {n} samples "
                        "unscored; the listing and the data disagree (run headstart validate)")
    return by_position[rows], conf[rows]
