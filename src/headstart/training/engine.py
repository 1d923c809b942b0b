"""One training engine for both candidates: they differ only in config (weights, LRs, freezing).

Works on pre-decoded uint8 tensors; augmentation and normalisation run batched on the device.
Batches are channels_last on every device; with a GPU, also the model and bf16 autocast (fp32 on CPU).
channels_last on CPU too: oneDNN's depthwise convs run ~2x faster on it (EfficientNet-Lite0), and it is
the layout evaluation already sees (normalize's permute of NHWC keeps those strides).

Runs unchanged under `torchrun --nproc-per-node N` (see headstart.training.distributed): `batch_size` stays the
global batch, every rank draws the same seeded permutation and takes rows rank::world of each global
batch (DistributedSampler's split, padded the same way), gradients are averaged by DDP, and train and
validation metrics are summed over ranks, so the step count, LR schedule and metrics do not depend on N
(train metrics include the at most N-1 padding repeats per epoch).
Validation is sharded (rank::world of the val split) and all-reduced: every rank gets the same numbers
and so takes the same early-stopping decision. With one process none of this runs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from headstart import runtime
from headstart.data import stream
from headstart.data.imagefolder import Split
from headstart.data.stream import StreamSplit
from headstart.presets import Preset
from headstart.progress import progress_enabled
from headstart.runtime import tune_allocator
from headstart.training import distributed
from headstart.training.checkpoint import Checkpointer
from headstart.training.recipe import EngineConfig
from headstart.training.trainstate import EpochStats, FitResult, PartialEpoch  # the first two also imported from here

if TYPE_CHECKING:
    from headstart.training.congruent import Teacher

TTA_MODES = ("none", "flip")


def device_for_training() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", distributed.local_rank() if distributed.is_distributed() else None)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def augment(
    x: torch.Tensor, gen: torch.Generator, max_shift: float, flip: bool,
    drawn: int | None = None, pick: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random translation (replicate-padded crop) and horizontal flip of a float NCHW batch.

    Under DDP `x` is one rank's share of a global batch: every rank draws parameters for the `drawn`
    real samples of the global batch (keeping the shared generator in step on all ranks) and applies
    those at positions `pick`, so each sample is augmented exactly as in a single-process run.
    """
    n, _, h, w = x.shape
    pad = int(round(max_shift * h))

    def draw(values: torch.Tensor) -> torch.Tensor:
        return (values if pick is None else values[pick]).to(x.device)

    count = n if drawn is None else drawn
    oy = ox = mask = None
    if pad > 0:
        oy = draw(torch.randint(0, 2 * pad + 1, (count,), generator=gen))
        ox = draw(torch.randint(0, 2 * pad + 1, (count,), generator=gen))
    if flip:
        mask = draw(torch.rand(count, generator=gen) < 0.5)
    if oy is not None and ox is not None and x.device.type == "cpu":
        return _shift_flip_cpu(x, pad, oy, ox, mask)
    if oy is not None and ox is not None:
        xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        idx = torch.arange(n, device=x.device)[:, None, None, None]
        ch = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[idx, ch, rows, cols]
    if mask is not None:
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def _shift_flip_cpu(
    x: torch.Tensor, pad: int, oy: torch.Tensor, ox: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The same crops and flips as the gather path, as per-sample slices: one copy per sample instead of
    a 4-D advanced-index gather plus a full flip and select (~5x faster on CPU, bit-identical)."""
    h, w = x.shape[2:]
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    flips = mask.tolist() if mask is not None else [False] * len(x)
    crops = []
    for i, (top, left, mirror) in enumerate(zip(oy.tolist(), ox.tolist(), flips, strict=True)):
        crop = xp[i, :, top : top + h, left : left + w]
        crops.append(crop.flip(2) if mirror else crop)
    return torch.stack(crops)


def _lr_lambda(total_steps: int, warmup_steps: int, start: int = 0) -> Callable[[int], float]:
    """Linear warm-up from optimizer step `start`, then cosine to 1% at `total_steps`; 0 before `start`."""

    def fn(step: int) -> float:
        if step < start:
            return 0.0
        step -= start
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - start - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def optimizer(
    head_params: list[nn.Parameter], backbone_params: list[nn.Parameter], cfg: EngineConfig, steps_per_epoch: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its per-step schedule: head groups first (group 0 is the head's, the LR that is logged).

    `warmup_from="unfreeze"`: the backbone's warm-up starts when its probe epochs end, so its first
    updates (with fresh Adam moments) are small instead of nearly peak; its cosine spans the epochs it
    trains. The head, trained from step 0, warms up from the start. `warmup_from="start"`: one schedule
    from step 0 for both, the warm-up spent in the probe epochs.
    `decay_norm_bias=False`: 1-D parameters (BatchNorm scales and shifts, biases) get no weight decay,
    as in timm's and torchvision's reference recipes; True decays every parameter."""
    factor = cfg.lr_factor()
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.max_steps:  # a step budget: the cosine ends where training does
        total = min(total, cfg.max_steps)
    unfreeze = cfg.probe_epochs * steps_per_epoch if cfg.warmup_from == "unfreeze" else 0
    groups: list[dict] = []
    lambdas: list[Callable[[int], float]] = []
    for params, lr, start in ((head_params, cfg.lr_head, 0), (backbone_params, cfg.lr_backbone, unfreeze)):
        decayed = params if cfg.decay_norm_bias else [p for p in params if p.ndim > 1]
        plain = [] if cfg.decay_norm_bias else [p for p in params if p.ndim <= 1]
        for members, decay in ((decayed, cfg.weight_decay), (plain, 0.0)):
            if members:
                groups.append({"params": members, "lr": lr * factor, "weight_decay": decay})
                lambdas.append(_lr_lambda(total, warmup, start))
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambdas)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, preset: Preset, x: torch.Tensor, batch_size: int = 256, tta: str = "none"
) -> torch.Tensor:
    """Logits for a uint8 NHWC tensor, in batches, on the training device; returned on CPU as float32.

    `tta="flip"` averages the logits of each image and its mirror image (the model card says which a
    model uses, so evaluation and serving predict alike)."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r}: choose one of {', '.join(TTA_MODES)}")
    tune_allocator()
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = preset.normalize(x[start : start + batch_size].to(device, non_blocking=True))
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(xb).float()
            if tta == "flip":
                mirrored = xb.flip(3).contiguous(memory_format=torch.channels_last)
                logits = (logits + model(mirrored).float()) / 2
            out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0)


def fit(
    model: nn.Module, head_params: list[nn.Parameter], backbone_params: list[nn.Parameter], preset: Preset,
    train: Split | StreamSplit, val: Split | StreamSplit, cfg: EngineConfig,
    on_epoch: Callable[[EpochStats], None] | None = None, checkpointer: Checkpointer | None = None,
    label: str = "train", teacher: Teacher | None = None,
) -> FitResult:
    """Train with AdamW, warm-up + cosine (`optimizer`), label smoothing and early stopping; keep the best weights.

    Under torchrun every rank calls this with the same arguments; `on_epoch` runs on every rank with
    the same, all-reduced, stats; only rank 0 writes checkpoints.

    `train` and `val` are decoded splits in memory, or streamed ones (`StreamSplit`): then DataLoader
    workers read and decode the shards, batches are copied to the device as they come, and under DDP each
    rank reads its own shards (headstart.data.stream). Everything else is the same code.

    `teacher` (positive-congruent training, headstart.training.congruent): the champion's logits per training
    sample (a streamed split: by the sample's position); its focal distillation term is added to the loss.
    """
    start_time = time.perf_counter()
    tune_allocator()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif torch.get_num_threads() > runtime.cpu_count():  # torch counts the node's cores, not the pod's quota
        torch.set_num_threads(runtime.cpu_count())
    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    distributed.per_rank_batch(cfg.batch_size, world)  # a full batch splits evenly, or a ConfigError
    torch.manual_seed(cfg.seed + rank)  # dropout masks differ per rank; rank 0 is the single-process run
    device = device_for_training()
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    streaming = isinstance(train, StreamSplit)
    n_train = len(train) if streaming else len(train.x)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)  # the same for every world size
    opt, sched = optimizer(head_params, backbone_params, cfg, steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)  # identical on every rank: the shared permutation
    result = FitResult(best_state=_cpu_state(model), best_epoch=0, best_val_accuracy=-1.0)
    first_epoch, partial = 1, None
    if checkpointer is not None and (restored := checkpointer.restore(model, opt, sched, gen)) is not None:
        result, partial = restored, checkpointer.partial
        first_epoch = result.history[-1].epoch + 1 if result.history else 1
        result.resumed_at = f"epoch {first_epoch - 1}"
        if partial is not None:  # inside an epoch
            if streaming and partial.streams and partial.streams != train.streams:
                train = dataclasses.replace(train, workers=partial.streams)  # the order it was read in
            first_epoch = partial.epoch
            result.resumed_at = f"epoch {partial.epoch}, step {partial.step} of {steps_per_epoch}"
    start_time -= result.seconds  # time spent by earlier, interrupted attempts counts too
    if not streaming:
        x_train, y_train = train.x.to(device), train.y.to(device)
    # rows per training sample; a streamed split's stay where they are (a memory map)
    teacher_logits = None if teacher is None else teacher.logits if streaming else teacher.logits.to(device)
    ddp: nn.Module = model
    ddp_trainable: bool | None = None
    for epoch in range(first_epoch, cfg.epochs + 1):
        if epoch - 1 - result.best_epoch >= cfg.patience:  # epochs done since the best one
            break
        if 0 < cfg.max_steps <= sched.last_epoch:  # the step budget is spent (LambdaLR counts one step per batch)
            break
        t0 = time.perf_counter()
        trainable = epoch > cfg.probe_epochs
        for p in backbone_params:
            p.requires_grad_(trainable)
        if world > 1 and trainable != ddp_trainable:  # DDP fixes its set of gradients when it is built
            ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            ddp_trainable = trainable
        model.train()
        first_step, prior_seconds, sums = 0, 0.0, (0.0, 0, 0)
        perm = torch.empty(0, dtype=torch.int64)
        if partial is not None and partial.epoch == epoch:  # resume inside this epoch: same order, same sums
            perm, first_step, prior_seconds = partial.order, partial.step, partial.seconds
            sums, partial = _own_sums(partial.sums, rank, world), None
        elif not streaming:
            perm = torch.randperm(n_train, generator=gen)
        # running sums stay on the device as tensors: no host sync per batch
        total_loss = torch.tensor(sums[0], dtype=torch.float32, device=device)
        correct = torch.tensor(sums[1], dtype=torch.long, device=device)
        seen = sums[2]
        if streaming:
            batches = stream.epoch_batches(train, epoch, cfg.batch_size // world, rank, world, steps_per_epoch,
                                           first_step, device, positions=True)
        else:
            batches = _memory_batches(x_train, y_train, perm, cfg.batch_size, rank, world, first_step, device)
        bar = tqdm(range(first_step, steps_per_epoch), desc=f"{label} epoch {epoch}/{cfg.epochs}", unit="batch",
                   initial=first_step, total=steps_per_epoch,
                   disable=not (progress_enabled() and rank == 0), leave=False)
        for step, (xb_raw, yb, rows) in zip(bar, batches, strict=False):
            if 0 < cfg.max_steps <= sched.last_epoch:
                break
            xb = preset.normalize(xb_raw)
            if cfg.augment:
                xb = _augment_share(xb, gen, cfg, streaming, step, n_train, rank, world)
            with _autocast(device):
                logits = ddp(xb.contiguous(memory_format=torch.channels_last))  # why channels_last: module docstring
                loss = loss_fn(logits.float(), yb)
                if teacher is not None and teacher_logits is not None:
                    rows_logits = teacher_logits[rows.to(teacher_logits.device)].to(device, non_blocking=True)
                    loss = loss + teacher.loss(logits.float(), rows_logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if result.first_step_unix is None:
                result.first_step_unix = time.time()
            total_loss += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            done = step + 1
            if (checkpointer is not None and cfg.checkpoint_every_steps > 0 and done < steps_per_epoch
                    and sched.last_epoch % cfg.checkpoint_every_steps == 0):
                result.seconds = time.perf_counter() - start_time
                where = PartialEpoch(epoch=epoch, step=done, order=perm,
                                     sums=[(float(total_loss), int(correct), seen)],
                                     seconds=prior_seconds + time.perf_counter() - t0,
                                     streams=train.streams if streaming else 0)
                checkpointer.save(model, opt, sched, gen, result, partial=where)
        loss_sum, correct_sum, count = distributed.all_reduce_sum([float(total_loss), float(correct), seen])
        distributed.broadcast_buffers(model)  # BN running stats from rank 0: all ranks evaluate one model
        val_loss, val_acc = _validate(model, preset, val, cfg.eval_batch_size, rank, world)
        stats = EpochStats(epoch=epoch, train_loss=loss_sum / max(1, count), train_accuracy=correct_sum / max(1, count),
                           val_loss=val_loss, val_accuracy=val_acc, lr=opt.param_groups[0]["lr"],
                           seconds=prior_seconds + time.perf_counter() - t0)
        result.history.append(stats)
        if val_acc > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch, result.best_state = val_acc, epoch, _cpu_state(model)
        if on_epoch is not None:
            on_epoch(stats)
        if checkpointer is not None:
            result.seconds = time.perf_counter() - start_time
            checkpointer.save(model, opt, sched, gen, result)
    for p in backbone_params:
        p.requires_grad_(True)
    model.load_state_dict(result.best_state)
    result.seconds = time.perf_counter() - start_time
    return result


def _augment_share(x: torch.Tensor, gen: torch.Generator, cfg: EngineConfig, streaming: bool, step: int,
                   n_train: int, rank: int, world: int) -> torch.Tensor:
    """`augment` this rank's share of global batch `step`, each sample as a single process would."""
    if streaming:  # each rank's own samples: draw for the whole global batch, take this rank's rows
        real = len(x) * world
        pick = None if world == 1 else torch.arange(rank, real, world)
    else:  # rows of the shared permutation's global batch, as DistributedSampler deals them
        real = min(cfg.batch_size, n_train - step * cfg.batch_size)
        padded = min(cfg.batch_size, n_train + (-n_train % world) - step * cfg.batch_size)
        pick = None if world == 1 else torch.arange(rank, padded, world) % real
    return augment(x, gen, cfg.max_shift, cfg.flip, real, pick)


def _memory_batches(
    x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, batch_size: int, rank: int, world: int,
    first_step: int, device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A decoded split's batches from `first_step` on, with their rows in the split: the permutation padded
    for the world size, each rank taking rows rank::world of every global batch."""
    order = distributed.pad_for_world(perm.to(device), world)
    for start in range(first_step * batch_size, len(order), batch_size):
        batch = order[start : start + batch_size]
        idx = batch if world == 1 else batch[torch.arange(rank, len(batch), world, device=device)]
        yield x[idx], y[idx], idx


def _own_sums(sums: list[tuple[float, int, int]], rank: int, world: int) -> tuple[float, int, int]:
    """This rank's running sums from a mid-epoch checkpoint. Saved by as many ranks as now: each takes its
    own, exactly. Saved by another number of ranks: rank 0 carries their total and the others start at
    zero, so the all-reduced epoch metrics are still right (to float rounding)."""
    if len(sums) == world:
        return sums[rank]
    if rank != 0:
        return 0.0, 0, 0
    return sum(s[0] for s in sums), sum(s[1] for s in sums), sum(s[2] for s in sums)


def _validate(
    model: nn.Module, preset: Preset, val: Split | StreamSplit, batch_size: int, rank: int, world: int
) -> tuple[float, float]:
    """(loss, accuracy) on the val split; with several ranks each scores rows rank::world (a streamed
    split: shards rank::world) and the sums are all-reduced, so every rank gets the same numbers."""
    if isinstance(val, StreamSplit):
        batches, n = ((x, y) for x, y, _ in stream.scoring_batches(val, batch_size, rank, world)), len(val)
    elif world == 1:
        logits = predict_logits(model, preset, val.x, batch_size)
        return F.cross_entropy(logits, val.y).item(), (logits.argmax(1) == val.y).float().mean().item()
    else:
        batches, n = [(val.x[rank::world], val.y[rank::world])], len(val.y)
    loss_sum, correct = 0.0, 0.0
    for x, y in batches:
        if len(x):
            logits = predict_logits(model, preset, x, batch_size)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += float((logits.argmax(1) == y).sum())
    loss_sum, correct = distributed.all_reduce_sum([loss_sum, correct])
    return loss_sum / n, correct / n


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in copy.copy(model.state_dict()).items()}
