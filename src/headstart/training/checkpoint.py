"""Checkpoints that survive a killed pod: atomic writes, the previous one kept as a fallback.

One at the end of every epoch (`epoch-NNNN.pt`) and, with `checkpoint_every_steps`, one every N
optimizer steps inside an epoch (`epoch-NNNN-step-NNNNNNNN.pt`: NNNN is the epoch in progress, the step
counts that epoch's batches already done). A mid-epoch checkpoint also holds that epoch's sample order
and its running train-loss and accuracy sums (one per rank under DDP), so a resumed run skips the batches
already done and ends bit-identical on CPU to one that was never interrupted.

The location is a local folder or an `s3://bucket/prefix` URI, so a pod retried on another node resumes.
A checkpoint holds the model, optimizer, scheduler and AMP scaler (when one is used) states, the RNG
states, epoch and optimizer step, the best-so-far weights and the history.

Atomicity: locally the file is written under a temporary name and renamed. On S3 the file is written
locally and then uploaded: an object becomes visible only once its upload has completed (multipart
included), so a killed upload leaves no object rather than a torn one; its sha256 travels in the object's
metadata and is checked on restore, so a corrupted or truncated object is detected anyway.

Each configuration (its fingerprint: the training config and the content of the data it loads) has its
own folder, `<location>/<fingerprint>/`. The two newest checkpoints of that folder are kept; restore takes
the newest valid one and falls back to the one before. Another configuration's checkpoints are never
pruned or overwritten while it trains, so switching configurations back and forth resumes each where it stopped.
Once a run has succeeded and its model is recorded (`finish`), its folder keeps only its final checkpoint (a
forced re-run on the same data resumes it and trains nothing) and a `finished-<time>-<fingerprint>` marker
beside the folders; only the KEEP_FINISHED most recently finished fingerprints are kept, older finished ones
are deleted, so a weekly run on new data does not add a folder every week. Unfinished folders (a run in
progress, or one killed for good) are never touched.

Loaded with `torch.load(weights_only=True)` only, so a tampered file cannot run code. A checkpoint
that is refused (unsafe pickle content) or unreadable (torn, corrupt) is skipped with a warning naming it
and the run falls back to the previous checkpoint, or starts fresh when none is usable: an unattended
pipeline keeps going on a state that is known safe instead of crash-looping, and the refused file stays
in place, untouched, for whoever investigates, until a newer checkpoint of this run replaces it.

Under DDP both `save` and `restore` are collective (call them on every rank): rank 0 alone writes, with
every rank's RNG state, while the others wait at a barrier; on restore rank 0 picks the newest valid file
and broadcasts its bytes, so every rank loads the very same checkpoint and only rank 0 needs access to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart import storage
from headstart.errors import StorageError
from headstart.training import distributed
from headstart.training.trainstate import EpochStats, FitResult, PartialEpoch

KEEP = 2
KEEP_FINISHED = 2  # finished fingerprints kept per location: this data version's run and the one before
SHA_KEY = "sha256"
_NAME = re.compile(r"^epoch-(\d{4,})(?:-step-(\d{8,}))?\.pt$")
_FINISHED = re.compile(r"^finished-(\d{20})-([A-Za-z0-9][A-Za-z0-9._-]*)$")
_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
log = logging.getLogger(__name__)


class Checkpointer:
    """One run's checkpoints, in `<location>/<fingerprint>/` (a folder or s3:// prefix): see the module docstring."""

    def __init__(self, location: str | Path, fingerprint: str) -> None:
        if not _FOLDER.match(fingerprint):
            raise ValueError(f"checkpoint fingerprint {fingerprint!r}: use letters, digits, '.', '_' or '-' only")
        self.root = str(location)
        self.location = storage.join(location, fingerprint) if storage.is_s3(location) else Path(location) / fingerprint
        self.fingerprint = fingerprint
        self.resumed_from_uri: str | None = None
        self.partial: PartialEpoch | None = None  # set by restore() when it resumed inside an epoch

    def _names(self) -> list[str]:
        """Checkpoint names, newest first: by epoch, then a finished epoch after its mid-epoch ones."""
        found = [(m, n) for n in storage.list_names(self.location, "epoch-") if (m := _NAME.match(n))]
        found.sort(key=lambda mn: (int(mn[0][1]), 1 if mn[0][2] is None else 0, int(mn[0][2] or 0)), reverse=True)
        return [n for _, n in found]

    def save(
        self, model: nn.Module, opt: Any, sched: Any, gen: torch.Generator, result: FitResult, scaler: Any = None,
        partial: PartialEpoch | None = None,
    ) -> None:
        """Collective under DDP. With `partial`, a mid-epoch checkpoint: pass this rank's running sums
        as `partial.sums[0]`; every rank's are gathered into the file."""
        rank_rngs = distributed.all_gather_bytes(torch.get_rng_state()) if distributed.is_distributed() else None
        if partial is not None:  # float64 holds each float32 loss sum exactly, so a resume continues from it
            packed = torch.tensor(partial.sums[0], dtype=torch.float64).view(torch.uint8)
            sums = torch.stack([t.view(torch.float64) for t in distributed.all_gather_bytes(packed)])
        if distributed.is_main():
            self._write({
                "fingerprint": self.fingerprint,
                "epoch": partial.epoch if partial is not None else result.history[-1].epoch,
                "step": int(sched.last_epoch),  # optimizer steps taken: LambdaLR counts one per batch here
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "best_state": result.best_state, "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy,
                "history": [dataclasses.asdict(h) for h in result.history],
                "seconds": result.seconds,
                "partial": None if partial is None else {
                    "epoch": partial.epoch, "step": partial.step, "order": partial.order.cpu(),
                    "seconds": partial.seconds, "streams": partial.streams, "sums": sums,
                },
                # dropout differs per rank; each resumes its own stream
                **({"torch_rng_ranks": rank_rngs} if rank_rngs is not None else {}),
            })
        distributed.barrier()

    def _write(self, state: dict[str, Any]) -> None:
        name = f"epoch-{state['epoch']:04d}.pt"
        if state.get("partial") is not None:
            name = f"epoch-{state['epoch']:04d}-step-{state['partial']['step']:08d}.pt"
        if storage.is_s3(self.location):
            with tempfile.TemporaryDirectory(prefix="headstart-ckpt-") as tmp:
                staged, uri = Path(tmp) / name, storage.join(self.location, name)
                _save_file(state, staged, uri)
                storage.upload(staged, uri, metadata={SHA_KEY: hashlib.sha256(staged.read_bytes()).hexdigest()})
        else:
            folder = Path(self.location)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"{folder}: cannot create the checkpoint folder ({exc})") from exc
            tmp = folder / f"{name}.tmp"
            _save_file(state, tmp, str(folder / name))
            try:
                os.replace(tmp, folder / name)
            except OSError as exc:
                raise StorageError(f"{folder / name}: cannot write checkpoint ({exc})") from exc
        for old in self._names()[KEEP:]:
            storage.delete(storage.join(self.location, old))

    def finish(self) -> None:
        """Call once the run succeeded and its model is recorded (rank 0 only): keep this folder's final
        checkpoint, mark it finished, and delete the folders of finished fingerprints past the KEEP_FINISHED newest.
        Best effort: the run has succeeded, so a store that fails now is logged, and pruned at the next finish."""
        try:
            for old in self._names()[1:]:
                storage.delete(storage.join(self.location, old))
            with tempfile.TemporaryDirectory(prefix="headstart-ckpt-") as tmp:
                marker = Path(tmp) / f"finished-{time.time_ns():020d}-{self.fingerprint}"
                marker.touch()
                storage.upload(marker, storage.join(self.root, marker.name))
            finished = sorted(((m[1], m[2], n) for n in storage.list_names(self.root, "finished-")
                               if (m := _FINISHED.match(n))), reverse=True)
            kept: set[str] = set()
            for _, fingerprint, name in finished:
                if fingerprint in kept:  # an older marker of a fingerprint finished again
                    storage.delete(storage.join(self.root, name))
                elif len(kept) < KEEP_FINISHED:
                    kept.add(fingerprint)
                else:
                    folder = storage.join(self.root, fingerprint)
                    storage.delete_folder(folder)
                    storage.delete(storage.join(self.root, name))  # last: a crash midway prunes it again next time
                    log.info("checkpoints of finished run %s deleted (%d newer finished runs kept)", folder,
                             KEEP_FINISHED)
        except StorageError as exc:
            log.warning("checkpoints in %s not pruned (%s); the next finished run prunes them", self.root, exc)

    def restore(
        self, model: nn.Module, opt: Any, sched: Any, gen: torch.Generator, scaler: Any = None
    ) -> FitResult | None:
        """Load the newest valid checkpoint with a matching fingerprint; None to start fresh."""
        found = self._newest_valid() if distributed.is_main() else None
        if distributed.is_distributed():
            blob = distributed.broadcast_bytes(found[0] if found else None)
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True) if blob else None
        else:
            state = found[1] if found else None
        if state is None:
            return None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        gen.set_state(state["generator"])
        # each rank's own stream when the checkpoint has one for it; rank 0 (or a single process) gets
        # `torch_rng`; a rank the checkpoint has no state for keeps its fresh per-rank seed
        rank, per_rank = distributed.rank(), state.get("torch_rng_ranks")
        if per_rank is not None and rank < len(per_rank):
            torch.set_rng_state(per_rank[rank])
        elif rank == 0:
            torch.set_rng_state(state["torch_rng"])
        history = [EpochStats(**h) for h in state["history"]]
        saved = state.get("partial")
        self.partial = None if saved is None else PartialEpoch(
            **{**saved, "sums": [(float(s[0]), int(s[1]), int(s[2])) for s in saved["sums"].tolist()]})
        return FitResult(
            best_state=state["best_state"], best_epoch=state["best_epoch"],
            best_val_accuracy=state["best_val_accuracy"], history=history,
            seconds=state["seconds"], resumed_from=history[-1].epoch if history else 0,
        )

    def _newest_valid(self) -> tuple[bytes, dict[str, Any]] | None:
        """The newest checkpoint that reads back, passes its checksum and the safe loader, and is ours.

        A store that cannot be listed or read at all (S3 down after the retries) raises StorageError:
        starting over silently would throw away the run's progress."""
        names = self._names()
        skipped = []
        for name in names:
            uri = storage.join(self.location, name)
            try:
                blob, metadata = storage.read_bytes(uri)
            except StorageError:
                if storage.exists(uri):
                    raise
                continue  # pruned by another writer between listing and reading
            problem, state = _check(blob, metadata)
            if problem:
                log.warning("checkpoint %s %s; falling back to the previous checkpoint", uri, problem)
                skipped.append(name)
                continue
            if state.get("fingerprint") == self.fingerprint:
                self.resumed_from_uri = uri
                return blob, state
        if skipped:
            log.warning("no usable checkpoint in %s (skipped %s); training starts from epoch 1",
                        self.location, ", ".join(skipped))
        return None


def _check(blob: bytes, metadata: dict[str, str]) -> tuple[str | None, dict[str, Any]]:
    """(why the checkpoint is unusable or None, its state)."""
    expected = metadata.get(SHA_KEY)
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        return "is corrupt (its sha256 does not match the one recorded at upload)", {}
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        return (f"was REFUSED: it holds pickled objects other than tensors and plain containers, so it may have "
                f"been tampered with; nothing in it was run (torch.load weights_only=True: {_why(exc)})"), {}
    except Exception as exc:  # noqa: BLE001 - torn or not a checkpoint at all: unreadable, fall back
        return f"is unreadable, torn or not a checkpoint ({type(exc).__name__}: {str(exc)[:200]})", {}
    if not isinstance(state, dict) or "model" not in state:
        return "is not a Headstart checkpoint (no model state)", {}
    return None, state


def _why(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names the offending global."""
    text = " ".join(str(exc).split())
    found = re.search(r"GLOBAL \S+ (was not an allowed global|whose module \S+ is blocked)", text)
    return found.group(0) if found else text[:200] or type(exc).__name__


def _save_file(state: dict[str, Any], path: Path, target: str) -> None:
    try:
        torch.save(state, path)
    except OSError as exc:
        raise StorageError(f"{target}: cannot write checkpoint ({exc})") from exc
