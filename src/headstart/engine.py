"""One training engine for both candidates: they differ only in config (weights, LRs, freezing).

Works on pre-decoded uint8 tensors; augmentation and normalisation run batched on the device.
Uses CUDA with bf16 autocast and channels_last when a GPU is present, plain fp32 on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from headstart.checkpoint import Checkpointer
from headstart.data.imagefolder import Split
from headstart.presets import Preset
from headstart.progress import progress_enabled


@dataclass(frozen=True)
class EngineConfig:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    lr_head: float = 3e-3
    lr_backbone: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    probe_epochs: int = 0
    patience: int = 3
    augment: bool = True
    flip: bool = True
    max_shift: float = 0.1
    seed: int = 42
    threads: int | None = None


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
    resumed_from: int | None = None
    stopped_early: bool = False


def device_for_training() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def augment(x: torch.Tensor, gen: torch.Generator, max_shift: float, flip: bool) -> torch.Tensor:
    """Random translation (replicate-padded crop) and horizontal flip of a float NCHW batch."""
    n, _, h, w = x.shape
    pad = int(round(max_shift * h))
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        idx = torch.arange(n, device=x.device)[:, None, None, None]
        ch = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[idx, ch, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


@torch.inference_mode()
def predict_logits(model: nn.Module, preset: Preset, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for a uint8 NHWC tensor, in batches, on the training device; returned on CPU as float32."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = preset.normalize(x[start : start + batch_size].to(device, non_blocking=True))
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            out.append(model(xb).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def _set_backbone_trainable(backbone: list[nn.Parameter], trainable: bool) -> None:
    for p in backbone:
        p.requires_grad_(trainable)


def fit(
    model: nn.Module,
    head_params: list[nn.Parameter],
    backbone_params: list[nn.Parameter],
    preset: Preset,
    train: Split,
    val: Split,
    cfg: EngineConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpointer: Checkpointer | None = None,
    label: str = "train",
) -> FitResult:
    """Train with AdamW, warmup+cosine, label smoothing and early stopping; keep the best weights."""
    start_time = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = device_for_training()
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    groups = [{"params": head_params, "lr": cfg.lr_head}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": cfg.lr_backbone})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train.x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch))
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = FitResult(best_state=_cpu_state(model), best_epoch=0, best_val_accuracy=-1.0)
    first_epoch = 1
    if checkpointer is not None:
        restored = checkpointer.restore(model, opt, sched, gen)
        if restored is not None:
            result, first_epoch = restored, restored.history[-1].epoch + 1 if restored.history else 1
    bad_epochs = _epochs_since_best(result)
    x_train, y_train = train.x.to(device), train.y.to(device)
    for epoch in range(first_epoch, cfg.epochs + 1):
        if bad_epochs >= cfg.patience:
            result.stopped_early = True
            break
        t0 = time.perf_counter()
        _set_backbone_trainable(backbone_params, epoch > cfg.probe_epochs)
        model.train()
        order = torch.randperm(len(x_train), generator=gen).to(device)
        total_loss, correct = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{label} epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not progress_enabled(), leave=False)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            xb = preset.normalize(x_train[idx])
            if cfg.augment:
                xb = augment(xb, gen, cfg.max_shift, cfg.flip)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y_train[idx]
            with _autocast(device):
                logits = model(xb)
                loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
        val_logits = predict_logits(model, preset, val.x, cfg.eval_batch_size)
        val_loss = F.cross_entropy(val_logits, val.y).item()
        val_acc = (val_logits.argmax(1) == val.y).float().mean().item()
        stats = EpochStats(
            epoch=epoch, train_loss=float(total_loss) / len(x_train), train_accuracy=float(correct) / len(x_train),
            val_loss=val_loss, val_accuracy=val_acc, lr=opt.param_groups[0]["lr"],
            seconds=time.perf_counter() - t0,
        )
        result.history.append(stats)
        if val_acc > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch = val_acc, epoch
            result.best_state = _cpu_state(model)
            bad_epochs = 0
        else:
            bad_epochs += 1
        if on_epoch is not None:
            on_epoch(stats)
        if checkpointer is not None:
            checkpointer.save(model, opt, sched, gen, result)
    _set_backbone_trainable(backbone_params, True)
    model.load_state_dict(result.best_state)
    result.seconds += time.perf_counter() - start_time
    return result


def _epochs_since_best(result: FitResult) -> int:
    if not result.history:
        return 0
    return result.history[-1].epoch - result.best_epoch


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in copy.copy(model.state_dict()).items()}
