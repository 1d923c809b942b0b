"""Epoch checkpoints that survive a killed pod: atomic writes, the previous one kept as a fallback.

Loaded with `torch.load(weights_only=True)` only, so a tampered file cannot run code.

Under DDP both `save` and `restore` are collective (call them on every rank): rank 0 alone writes, with
every rank's RNG state, while the others wait at a barrier; on restore rank 0 picks the newest valid file
and broadcasts its bytes, so every rank loads the very same checkpoint and only rank 0's disk needs it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from headstart import distributed
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
        rank_rngs = None
        if distributed.is_distributed():
            rank_rngs = distributed.all_gather_bytes(torch.get_rng_state())
        if distributed.is_main():
            self._write(model, opt, sched, gen, result, rank_rngs)
        distributed.barrier()

    def _write(
        self, model: nn.Module, opt: Any, sched: Any, gen: torch.Generator, result: FitResult,
        rank_rngs: list[torch.Tensor] | None,
    ) -> None:
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
        if rank_rngs is not None:
            state["torch_rng_ranks"] = rank_rngs  # dropout differs per rank; each resumes its own stream
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

        if distributed.is_distributed():
            blob = distributed.broadcast_bytes(self._newest_bytes() if distributed.is_main() else None)
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True) if blob else None
        else:
            state = self._newest()
        if state is None:
            return None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        _restore_torch_rng(state)
        history = [EpochStats(**h) for h in state["history"]]
        self.resumed_epoch = history[-1].epoch if history else 0
        return FitResult(
            best_state=state["best_state"], best_epoch=state["best_epoch"],
            best_val_accuracy=state["best_val_accuracy"], history=history,
            seconds=state["seconds"], resumed_from=self.resumed_epoch,
        )

    def _newest(self) -> dict[str, Any] | None:
        found = self._newest_valid()
        return found[1] if found else None

    def _newest_bytes(self) -> bytes:
        found = self._newest_valid()
        return found[0] if found else b""

    def _newest_valid(self) -> tuple[bytes, dict[str, Any]] | None:
        for path in self._files():
            try:
                blob = path.read_bytes()
                state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001, S112 - a torn or tampered file: fall back to the previous one
                continue
            if state.get("fingerprint") == self.fingerprint:
                return blob, state
        return None


def _restore_torch_rng(state: dict[str, Any]) -> None:
    """Each rank's own stream when the checkpoint has one for it; rank 0 (or a single process) gets
    `torch_rng`; a rank the checkpoint has no state for keeps its fresh per-rank seed."""
    rank = distributed.rank()
    per_rank = state.get("torch_rng_ranks")
    if per_rank is not None and rank < len(per_rank):
        torch.set_rng_state(per_rank[rank])
    elif rank == 0:
        torch.set_rng_state(state["torch_rng"])
