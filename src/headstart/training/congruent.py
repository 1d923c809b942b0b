"""Positive-congruent training: focal distillation from the champion (Yan et al., CVPR 2021).

A retrain that only changes its seed still gets wrong ~5% of the images the champion got right (negative
flips). Focal distillation pulls the candidate toward the champion's outputs, above all where the champion
is right:

    loss = CE(student, y)
           + weight * mean_i[(alpha + beta * 1[champion right on i]) * T^2 * KL(p_T(champion) || p_T(student))]

KL of temperature-softened outputs (the paper's FD-KL) rather than logit L2 (FD-LM): it is invariant to a
shift of the logits and on the same scale as the cross-entropy it is added to, whereas the L2 depends on
how large the champion's logits happen to be (label smoothing, a different backbone). T^2 keeps the
gradient's size independent of T (Hinton et al. 2015).

The champion's logits are computed once per run, on the un-augmented training images decoded with the
champion's own preset (and its TTA), before the first step; the engine then indexes them per batch.
A decoded split: one pass over its tensor. A streamed split: one scoring pass through the loader
workers into a memory-mapped .npy, a row per sample position, so memory stays flat whatever its size.
They are deterministic, so a resumed run recomputes exactly the same ones.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from headstart.config import TrackingConfig
from headstart.data import stream
from headstart.data.dataset import Dataset
from headstart.data.imagefolder import Split
from headstart.errors import DataError
from headstart.models import modelio
from headstart.presets import Preset
from headstart.training import distributed
from headstart.training.engine import device_for_training, predict_logits
from headstart.training.recipe import TrainConfig, load_options


@dataclass(frozen=True)
class Teacher:
    """The champion's logits on the training split, row i for training sample i, and the loss's knobs."""

    logits: torch.Tensor  # (n_train, classes) float32; a streamed split: (its samples, classes), memory-mapped
    weight: float
    alpha: float
    beta: float
    temperature: float
    source: str  # which champion, for people: "champion v3 (<folder>)"

    def loss(self, student: torch.Tensor, teacher_rows: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The term added to a batch's cross-entropy; `teacher_rows`: this batch's rows of `logits`."""
        return self.weight * focal_distillation(student, teacher_rows, y, self.alpha, self.beta, self.temperature)


def focal_weights(teacher_logits: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """alpha + beta where the champion's prediction is right, alpha elsewhere: keep above all what worked."""
    return alpha + beta * (teacher_logits.argmax(1) == y).to(teacher_logits.dtype)


def focal_distillation(
    student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, temperature: float,
) -> torch.Tensor:
    """The batch mean of focal weight x T^2 x KL(champion || student) at temperature T."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="none",
                  log_target=True).sum(1)
    return (focal_weights(teacher, y, alpha, beta) * kl).mean() * t * t


def for_run(
    cfg: TrainConfig, data: Dataset, train: Split | stream.StreamSplit, classes: tuple[str, ...],
    tracking: TrackingConfig | None, champion_dir: Path | None,
) -> tuple[tuple[Teacher, str] | None, str | None]:
    """((the champion's logits, its model digest for the checkpoint fingerprint) or None, a note for people)
    for a training run: `champion_dir` (a model folder), else the registry's champion (downloaded through
    `tracking`); with neither, or with `cfg.congruent` off, none.

    Every rank computes the same logits itself (each downloads the champion): nothing to broadcast. A streamed
    split's go to a memory-mapped file in a temporary folder, deleted on return while the map stays open."""
    from headstart.evaluation import predictions
    from headstart.registry import model_registry as registry

    if not cfg.congruent:
        return None, None
    with tempfile.TemporaryDirectory(prefix="headstart-champion-") as tmp:
        source = f"champion {champion_dir}"
        if champion_dir is None and tracking is not None:
            # rank 0 first, the others after it: two ranks opening a new SQLite store raced its migration
            if not distributed.is_main():
                distributed.barrier()
            found = registry.champion_model_dir(tracking, Path(tmp) / "champion")
            if distributed.is_main():
                distributed.barrier()
            if found is not None:
                champion_dir, source = found[0], f"champion v{found[1]} of {tracking.registered_model}"
        if champion_dir is None:
            where = f"in {tracking.registered_model}" if tracking is not None else "given (no tracking)"
            return None, f"no champion {where} yet: trained without distillation"

        def reload(champion_preset: Preset) -> Split:
            return data.load("train", champion_preset, classes, cfg.images_per_class, cfg.seed,
                             load_options(cfg).cache_dir, int(cfg.tensor_cache_budget_gib * 2**30))

        made = teacher(champion_dir, source, train, classes, reload, cfg.congruent_weight, cfg.congruent_alpha,
                       cfg.congruent_beta, cfg.congruent_temperature, Path(tmp))
        if isinstance(made, str):
            return None, made
        return (made, predictions.model_digest(champion_dir)), f"distilling from {source}"


def teacher(
    champion_dir: Path, source: str, train: Split | stream.StreamSplit, classes: tuple[str, ...],
    reload: Callable[[Preset], Split], weight: float, alpha: float, beta: float, temperature: float,
    workdir: Path | None = None, batch_size: int = 256,
) -> Teacher | str:
    """The champion's logits on `train`, or why there are none (a message: the option then does nothing).

    A champion trained on other classes has no logits to distil (the gate finds it not comparable too):
    training goes on without it rather than blocking the run that adds a class. When the champion's preset
    decodes differently from the candidate's (size, channels), `reload(preset)` decodes the same samples
    again with the champion's, and their order is checked. A streamed split's logits go to a .npy in
    `workdir` (required then), mapped into memory."""
    card = modelio.load_card(champion_dir)
    if tuple(card.classes) != tuple(classes):
        return (f"{source} was trained on other classes ({', '.join(card.classes)}; this run: "
                f"{', '.join(classes)}): nothing to distil, training without positive-congruent distillation")
    if isinstance(train, stream.StreamSplit):
        if workdir is None:
            raise ValueError("a streamed split's champion logits need a workdir for their memory-mapped file")
        logits = _streamed_logits(champion_dir, train, workdir / "champion_logits.npy", batch_size)
        return Teacher(logits=logits, weight=weight, alpha=alpha, beta=beta, temperature=temperature, source=source)
    images = train
    if (card.preset.image_size, card.preset.channels) != (train.x.shape[1], train.x.shape[3]):
        images = reload(card.preset)
        if images.paths != train.paths:
            raise DataError(f"{source}: the training split decoded at the champion's preset lists other samples "
                            f"than at the candidate's ({len(images.paths)} vs {len(train.paths)}); re-run")
    model, card = modelio.load(champion_dir)
    model.to(device_for_training())
    logits = predict_logits(model, card.preset, images.x, batch_size, tta=card.tta)
    return Teacher(logits=logits, weight=weight, alpha=alpha, beta=beta, temperature=temperature, source=source)


def _streamed_logits(champion_dir: Path, train: stream.StreamSplit, path: Path, batch_size: int) -> torch.Tensor:
    """One scoring pass over the streamed split, decoded with the champion's preset; row = sample position."""
    model, card = modelio.load(champion_dir)
    device = device_for_training()
    model.to(device)
    rows = train.positions  # positions run over the whole split, kept or not
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, len(card.classes)))
    for x, _, pos in stream.scoring_batches(dataclasses.replace(train, preset=card.preset), batch_size,
                                            device=device):
        out[pos.numpy()] = predict_logits(model, card.preset, x, batch_size, tta=card.tta).numpy()
    out.flush()
    return torch.from_numpy(out)
