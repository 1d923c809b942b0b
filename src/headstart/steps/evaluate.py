"""Evaluate both candidates, and the current champion when there is one, on the same test split."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from headstart import eval_folder, model_metrics, modelio, predictions
from headstart.config import Frozen, TrackingConfig, build, section
from headstart.data.imagefolder import CACHE_MAX_BYTES, list_split, load_split, require_classes
from headstart.data.shards import is_sharded
from headstart.engine import predict_logits
from headstart.errors import ConfigError, DataError
from headstart.eval_folder import EvaluateResult
from headstart.progress import progress_enabled


class EvaluateConfig(Frozen):
    ci_level: float = 0.95
    bootstrap_samples: int = 2000
    seed: int = 0
    batch_size: int = 256
    tensor_cache_dir: str | None = ".headstart/cache/tensors"  # decoded test split, reused across runs
    tensor_cache_budget_gib: float = 8  # that folder's size; past it the least recently used arrays are deleted
    prediction_store: str | None = ".headstart/cache/predictions"  # folder or s3:// URI; None: score every time
    data_loading: Literal["auto", "memory", "stream"] = "auto"  # auto: stream a packed split past 2 GiB decoded
    loader_workers: int | None = None  # streaming readers; None: one per CPU the pod may use, less one, at most 8


def config_from_params(params: dict[str, Any]) -> EvaluateConfig:
    return build(EvaluateConfig, section(params, "evaluate"), "evaluate")


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


def test_listing(
    data_dir: Path, classes: tuple[str, ...], cache_dir: Path | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Names and labels of the test split in load order, without decoding an image: a packed split lists the
    rows its ImageFolder would (class by class, "test/<class>/<file>"), as load_split returns them, and for
    it also each row's position in the index (the order the stream delivers)."""
    if is_sharded(data_dir):
        from headstart.data import shards

        items = shards.split_items(data_dir, "test", cache_dir)  # remembered per shard sha256 in the cache
        rows = _folder_order(items)
        names = [f"test/{items[i][0]}" for i in rows]
        return names, np.array([items[i][1] for i in rows], dtype=np.int64), rows
    items = list_split(data_dir, "test", classes)
    return [str(p.relative_to(data_dir)) for p, _ in items], np.array([c for _, c in items], dtype=np.int64), None


def _folder_order(items: list[tuple[str, int]]) -> np.ndarray:
    """Index positions of a packed split's samples in its ImageFolder's order (by class, then name)."""
    labels = np.fromiter((label for _, label in items), dtype=np.int64, count=len(items))
    return np.lexsort((np.array([name for name, _ in items]), labels))


def _streams(cfg: EvaluateConfig | None, data_dir: Path, n: int, size: int, channels: int) -> bool:
    """Stream a packed test split (workers decode, a few batches in memory) when asked, or in auto mode
    when its decoded size would pass the tensor cache's limit; else decode it into memory."""
    mode = cfg.data_loading if cfg else "auto"
    if not is_sharded(data_dir):
        if mode == "stream":
            raise ConfigError(f"evaluate.data_loading=stream: {data_dir} is an ImageFolder; streaming reads shards. "
                            f"Pack it first (headstart data pack --data {data_dir} --out <folder>) or use auto.")
        return False
    return mode == "stream" or (mode == "auto" and n * size * size * channels > CACHE_MAX_BYTES)


def predict_folder(
    model_dir: Path, data_dir: Path, batch_size: int, cache_dir: Path | None = None,
    cfg: EvaluateConfig | None = None, fingerprints: dict[tuple[str, ...], str] | None = None,
) -> Scored:
    """Predictions of a saved model on the test split, decoded with the model's own preset.

    With `cfg.prediction_store` set, they are read back from the store when this model (its saved bytes),
    this test split (its content), its TTA mode and this device kind already made them; otherwise scored
    and kept there. `fingerprints` caches the split's fingerprint per class list across the models of a run."""
    import torch

    card = modelio.load_card(model_dir)
    require_classes(data_dir, "test", card.classes, f"model {model_dir}")  # every path below: memory, stream, store
    device = scoring_device()
    kind = predictions.device_kind(device.type)
    store = cfg.prediction_store if cfg else None
    sharded = is_sharded(data_dir)
    # a packed split is always listed
    listed = test_listing(data_dir, card.classes, cache_dir) if store or sharded else None
    names, labels, rows = listed or ([], np.empty(0, np.int64), None)
    key = None
    if store:
        fingerprints = {} if fingerprints is None else fingerprints
        if card.classes not in fingerprints:
            digests = Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None
            fingerprints[card.classes] = predictions.split_fingerprint(data_dir, "test", card.classes, digests)
        key = predictions.PredictionKey(model=predictions.model_digest(model_dir), data=fingerprints[card.classes],
                                        tta=card.tta, device=kind)
        stored = predictions.load_scored(store, key, len(labels), len(card.classes))
        if stored is not None:
            return Scored(labels, *stored, names, key, kind, reused=True)
    started = time.time()
    model, card = modelio.load(model_dir)
    model.to(device)
    preset = card.preset
    if _streams(cfg, data_dir, len(labels), preset.image_size, preset.channels):
        assert rows is not None  # a packed split
        y_pred, conf = _predict_streaming(model, card, data_dir, batch_size, rows, cfg)
        y_true, paths = labels, names
    else:
        test = load_split(data_dir, "test", preset, card.classes, cache_dir=cache_dir,
                          cache_budget_bytes=int(cfg.tensor_cache_budget_gib * 2**30))
        y_pred, conf = _top(predict_logits(model, preset, test.x, batch_size, tta=card.tta))
        y_true, paths = test.y.numpy(), list(test.paths)
        if (store or sharded) and (paths != names or not np.array_equal(y_true, labels)):
            raise DataError(f"{data_dir}: the test split's listing ({len(labels)} samples) and what was loaded "
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


def _predict_streaming(model: Any, card: modelio.ModelCard, data_dir: Path, batch_size: int, rows: np.ndarray,
                       cfg: EvaluateConfig | None) -> tuple[np.ndarray, np.ndarray]:
    """Score a packed split batch by batch as the readers deliver it, returned in the order of `rows` (index
    positions); memory: a label and a confidence per image."""
    from tqdm import tqdm

    from headstart.data.stream import predict_batches
    from headstart.steps.train import default_loader_workers

    n = len(rows)
    workers = cfg.loader_workers if cfg and cfg.loader_workers is not None else default_loader_workers()
    device = next(model.parameters()).device
    by_position = np.full(n, -1, dtype=np.int64)  # in index order: the stream's positions
    conf = np.zeros(n, dtype=np.float32)
    with tqdm(total=n, desc="scoring test", unit="img", disable=not progress_enabled(), leave=False) as bar:
        for xb, _, pos in predict_batches(str(data_dir), "test", card.preset, batch_size, workers, device=device):
            logits = predict_logits(model, card.preset, xb, batch_size, tta=card.tta)
            by_position[pos.numpy()], conf[pos.numpy()] = _top(logits)
            bar.update(len(pos))
    if (by_position < 0).any():
        raise DataError(f"{data_dir}: streaming the test split left {int((by_position < 0).sum())} of {n} samples "
                        "unscored; the index and the shards disagree (run headstart validate)")
    return by_position[rows], conf[rows]


def run(
    cfg: EvaluateConfig,
    data_dir: Path,
    candidates: dict[str, Path],
    out_dir: Path,
    tracking: TrackingConfig | None = None,
) -> EvaluateResult:
    """Write predictions.npz, metrics.json, confusion PNGs, example thumbnails, the candidates' training
    histories and report.html to `out_dir` (headstart.eval_folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None
    fingerprints: dict[tuple[str, ...], str] = {}
    scored: dict[str, Scored] = {}
    tta: dict[str, str] = {}
    y_true: np.ndarray | None = None
    paths: list[str] = []
    classes: list[str] = []
    for name, folder in candidates.items():
        s = predict_folder(folder, data_dir, cfg.batch_size, cache, cfg, fingerprints)
        card = modelio.load_card(folder)
        classes_ = list(card.classes)
        if y_true is not None and (s.paths != paths or classes_ != classes):
            raise DataError(f"{folder}: model was trained on other classes than {classes}; cannot compare")
        y_true, paths, classes, scored[name], tta[name] = s.y_true, s.paths, classes_, s, card.tta
    assert y_true is not None
    champion_version, champion_classes = None, None
    if tracking is not None:  # the champion is always scored: register's gate compares against it
        from headstart import registry

        found = registry.champion_model_dir(tracking, out_dir / "champion_model")
        if found is not None:
            champ_dir, champion_version = found
            champ_card = modelio.load_card(champ_dir)
            champion_classes = list(champ_card.classes)  # recorded either way: the gate names a change
            if champion_classes == classes:
                scored["champion"] = predict_folder(champ_dir, data_dir, cfg.batch_size, cache, cfg, fingerprints)
                tta["champion"] = champ_card.tta
    preds = {name: s.y_pred for name, s in scored.items()}
    models = {name: {**model_metrics.summarise(y_true, s.y_pred, s.conf, classes), "tta": tta[name],
                     **model_metrics.provenance(s)} for name, s in scored.items()}
    files = eval_folder.write_predictions(out_dir, data_dir, y_true, paths, classes, preds,
                                          {k: s.conf for k, s in scored.items()}, tuple(candidates))
    comparison = model_metrics.paired_comparison(preds, y_true, cfg.ci_level, cfg.bootstrap_samples, cfg.seed)
    eval_folder.copy_histories(candidates, out_dir)
    result = EvaluateResult(models=models, comparison=comparison, champion_version=champion_version,
                            classes=classes, files=files, champion_classes=champion_classes)
    eval_folder.write_metrics(out_dir, result, cfg.prediction_store)
    if tracking is not None:
        eval_folder.log(tracking, result, out_dir)
    return result
