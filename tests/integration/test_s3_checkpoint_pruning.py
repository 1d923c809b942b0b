"""A finished run's checkpoints in s3:// on a real moto server: its final checkpoint stays (a forced re-run
resumes it), older finished runs' objects are deleted, a run still in progress keeps all of its own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from headstart import storage
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import EpochStats, FitResult

from .conftest import fresh_bucket

pytestmark = pytest.mark.integration


def _train(ckpt: Checkpointer, epochs: int) -> None:
    """`epochs` checkpoints of a toy training state, as the engine writes them at each epoch's end."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    result = FitResult(best_state=model.state_dict(), best_epoch=0, best_val_accuracy=0.0)
    for epoch in range(1, epochs + 1):
        result.history.append(EpochStats(epoch, 1.0, 0.5, 1.0, 0.5, 0.1, 0.01))
        ckpt.save(model, opt, sched, torch.Generator(), result)


def test_finished_runs_in_s3_keep_their_final_checkpoint_and_only_the_newest_two(moto: str,
                                                                                monkeypatch: pytest.MonkeyPatch):
    bucket = fresh_bucket(moto, monkeypatch, "prune")
    root = f"s3://{bucket}/checkpoints/scratch"
    _train(Checkpointer(root, "wip"), 3)  # in progress on another node
    for week in ("w1", "w2", "w3"):
        ckpt = Checkpointer(root, week)
        _train(ckpt, 3)
        ckpt.finish()
    assert storage.list_names(storage.join(root, "w1")) == []
    assert storage.list_names(storage.join(root, "w2")) == storage.list_names(storage.join(root, "w3")) == [
        "epoch-0003.pt"]
    assert storage.list_names(storage.join(root, "wip")) == ["epoch-0002.pt", "epoch-0003.pt"]
    assert sorted(n.rsplit("-", 1)[1] for n in storage.list_names(root, "finished-")) == ["w2", "w3"]
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    resumed = Checkpointer(root, "w2").restore(model, opt, sched, torch.Generator())
    assert resumed is not None and resumed.resumed_from == 3
