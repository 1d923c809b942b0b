"""Epoch checkpoints that survive a killed pod: atomic writes, the previous one kept as a fallback.

Loaded with `torch.load(weights_only=True)` only, so a tampered file cannot run code.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from headstart.errors import StorageError

if TYPE_CHECKING:
    from headstart.engine import FitResult

KEEP = 2


class Checkpointer:
    """Saves `epoch-NNNN.pt` into a folder; a fingerprint ties checkpoints to one config and dataset."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.resumed_epoch: int | None = None

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("epoch-*.pt"), reverse=True)

    def save(self, model: nn.Module, opt: Any, sched: Any, gen: torch.Generator, result: FitResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = result.history[-1].epoch
        state = {
            "fingerprint": self.fingerprint,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_state": result.best_state,
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "history": [dataclasses.asdict(h) for h in result.history],
            "seconds": result.seconds,
        }
        final = self.folder / f"epoch-{epoch:04d}.pt"
        tmp = final.with_suffix(".pt.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, final)
        except OSError as exc:
            raise StorageError(f"{final}: cannot write checkpoint ({exc})") from exc
        for old in self._files()[KEEP:]:
            old.unlink(missing_ok=True)

    def restore(self, model: nn.Module, opt: Any, sched: Any, gen: torch.Generator) -> FitResult | None:
        """Load the newest readable checkpoint with a matching fingerprint; None to start fresh."""
        from headstart.engine import EpochStats, FitResult

        for path in self._files():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - a torn or tampered file: fall back to the previous one
                continue
            if state.get("fingerprint") != self.fingerprint:
                continue
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history = [EpochStats(**h) for h in state["history"]]
            self.resumed_epoch = history[-1].epoch if history else 0
            return FitResult(
                best_state=state["best_state"], best_epoch=state["best_epoch"],
                best_val_accuracy=state["best_val_accuracy"], history=history,
                seconds=state["seconds"], resumed_from=self.resumed_epoch,
            )
        return None
