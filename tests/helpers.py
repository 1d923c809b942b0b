"""Helpers shared by test modules (no test module imports another)."""

from __future__ import annotations

from pathlib import Path

from headstart.checkpoint import Checkpointer


class Killed(Exception):
    """Stands for the SIGKILL of a training run, raised right after a chosen checkpoint is written."""


class DiesAfterSaving(Checkpointer):
    """Writes its checkpoint, then kills the run: the state on disk is exactly that checkpoint."""

    def __init__(self, location: Path, at: tuple[int, int]) -> None:
        super().__init__(location, "fp")
        self.at = at

    def save(self, *args, partial=None, **kw) -> None:
        super().save(*args, partial=partial, **kw)
        if partial is not None and (partial.epoch, partial.step) == self.at:
            raise Killed
