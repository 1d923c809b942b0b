"""Run by tests under `torch.distributed.run`: the engine on the tiny ImageFolder, one rank per process.

Rank 0 writes result.json (history) and state.pt (best weights); `--kill-rank R --kill-epoch E` makes
rank R SIGKILL itself right after epoch E (before that epoch's checkpoint); `--every-steps N` adds
mid-epoch checkpoints and `--kill-at E:S` makes rank R SIGKILL itself just after the one at epoch E, step S.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
from pathlib import Path

import torch
from torch import nn

from headstart.config import load_params
from headstart.data import stream
from headstart.data.dataset import open_dataset
from headstart.models import build_model, head_and_backbone_params
from headstart.presets import Preset
from headstart.steps import train
from headstart.training import distributed
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import EngineConfig, fit


class PlainCNN(nn.Module):
    """No BatchNorm, no dropout: nothing whose result depends on how a batch is split across ranks."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build(data: Path, arch: str, streamed: bool = False):
    dataset = open_dataset(data)
    classes = dataset.classes()
    torch.manual_seed(0)
    if arch == "plain":
        model = PlainCNN(len(classes))
        head, backbone = list(model.classifier.parameters()), list(model.features.parameters())
        preset = Preset(32, 1, (0.5,), (0.25,))
    else:
        built = build_model("small_cnn", None, len(classes), in_channels=1)
        model, (head, backbone) = built.model, head_and_backbone_params(built)
        preset = Preset(32, 1, built.mean, built.std)
    tr, va = dataset.load("train", preset, classes), dataset.load("val", preset, classes)
    if streamed:  # `data` is packed: each rank streams its own shards through one reader worker
        tr = stream.open_split(str(data), "train", preset, seed=3, workers=1, shuffle_buffer=8)
        va = stream.open_split(str(data), "val", preset, seed=3, workers=1)
    return model, head, backbone, preset, tr, va


def config(epochs: int, every_steps: int = 0) -> EngineConfig:
    """Global batch 16 (8 per rank with 2 ranks); a head-only first epoch rebuilds DDP in epoch 2."""
    recipe = train.config_from_params(load_params(Path(__file__).resolve().parents[2] / "params.yaml"), "scratch")
    return dataclasses.replace(recipe.engine(), epochs=epochs, batch_size=16, patience=10, seed=3, probe_epochs=1,
                               warmup_epochs=0.5, lr_head=0.01, lr_backbone=0.01, checkpoint_every_steps=every_steps)


class KillingCheckpointer(Checkpointer):
    """Saves (a collective), then SIGKILLs this rank right after the mid-epoch checkpoint at `at`."""

    def __init__(self, location: Path, at: tuple[int, int] | None, kill_rank: int) -> None:
        super().__init__(location, "fp")
        self.at, self.kill_rank = at, kill_rank

    def save(self, *args, partial=None, **kw) -> None:
        super().save(*args, partial=partial, **kw)
        if partial is not None and (partial.epoch, partial.step) == self.at and distributed.rank() == self.kill_rank:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arch", default="plain")
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--kill-rank", type=int, default=-1)
    ap.add_argument("--kill-epoch", type=int, default=-1)
    ap.add_argument("--every-steps", type=int, default=0)
    ap.add_argument("--kill-at", default="")
    ap.add_argument("--stream", action="store_true", help="--data is a packed dataset; stream it")
    args = ap.parse_args()
    distributed.init()
    model, head, backbone, preset, tr, va = build(args.data, args.arch, args.stream)
    cfg = config(args.epochs, args.every_steps)

    def on_epoch(stats) -> None:
        if distributed.rank() == args.kill_rank and stats.epoch == args.kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    kill_at = tuple(int(v) for v in args.kill_at.split(":")) if args.kill_at else None
    ckpt = KillingCheckpointer(args.ckpt, kill_at, args.kill_rank) if args.ckpt else None
    result = fit(model, head, backbone, preset, tr, va, cfg, on_epoch=on_epoch, checkpointer=ckpt)
    if distributed.is_main():
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(result.best_state, args.out / "state.pt")
        record = {"world": distributed.world_size(), "resumed_from": result.resumed_from,
                  "resumed_at": result.resumed_at,
                  "history": [dataclasses.asdict(h) for h in result.history],
                  "steps": int(torch.load(sorted(args.ckpt.glob("*/*.pt"))[-1], weights_only=False)["step"])
                  if args.ckpt else None}
        (args.out / "result.json").write_text(json.dumps(record))
    distributed.shutdown()


if __name__ == "__main__":
    main()
