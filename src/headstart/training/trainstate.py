"""What a training run has done so far: per-epoch stats, the fit result, a mid-epoch position.

The engine produces these and the checkpointer saves and restores them; keeping them here lets the
imports run one way (engine -> checkpoint -> trainstate) instead of engine and checkpoint importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_accuracy: float
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None  # epochs already done when this run resumed from a checkpoint
    resumed_at: str | None = None  # where it resumed, for people: "epoch 2" or "epoch 3, step 5 of 16"
    first_step_unix: float | None = None  # wall clock after this process's first optimizer step (time to first step)


@dataclass
class PartialEpoch:
    """Where a mid-epoch checkpoint stopped: `epoch` is in progress with `step` of its batches done.

    `order` is that epoch's (unpadded) sample permutation; `sums` holds each rank's running
    (train-loss sum, correct count, samples seen), so resuming adds the remaining batches to exactly the
    numbers an uninterrupted run would have had. `seconds` is the time already spent in this epoch.
    A streamed split (headstart.data.stream) has no permutation (`order` is empty): its order follows from
    the seed, the epoch and `streams`, the number of reader streams it was read with."""

    epoch: int
    step: int
    order: torch.Tensor
    sums: list[tuple[float, int, int]]
    seconds: float = 0.0
    streams: int = 0
