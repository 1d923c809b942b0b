"""Checkpoint contents and integrity on a local folder; s3:// is in tests/integration/test_s3_checkpoints.py."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from headstart.training.checkpoint import Checkpointer, _check
from tests.helpers import Trainer


def test_checkpoint_holds_every_piece_of_training_state(tmp_path: Path):
    trainer = Trainer()
    trainer.scaler.scale(torch.ones(1))  # the scaler is lazily initialised by its first use
    trainer.scaler.update(512.0)
    trainer.epoch(Checkpointer(tmp_path, "fp"))
    state = torch.load(tmp_path / "fp" / "epoch-0001.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "generator", "torch_rng", "epoch", "step", "best_state",
            "best_epoch", "best_val_accuracy", "history", "fingerprint"} <= set(state)
    assert state["epoch"] == 1 and state["step"] == 3 and state["scaler"]["scale"] == 512.0

    fresh = Trainer()
    result = fresh.restore(Checkpointer(tmp_path, "fp"))
    assert result is not None and result.resumed_from == 1 and result.best_val_accuracy == 0.1
    assert torch.equal(fresh.model.weight, trainer.weights_at[1])
    assert fresh.sched.last_epoch == 3 and fresh.scaler.get_scale() == 512.0
    assert torch.equal(fresh.gen.get_state(), trainer.gen.get_state())


def test_resumed_training_continues_exactly(tmp_path: Path):
    straight = Trainer()
    straight.epoch(Checkpointer(tmp_path / "a", "fp"))
    straight.epoch(Checkpointer(tmp_path / "a", "fp"))
    first = Trainer()
    first.epoch(Checkpointer(tmp_path / "b", "fp"))
    second = Trainer()
    second.restore(Checkpointer(tmp_path / "b", "fp"))
    second.epoch(Checkpointer(tmp_path / "b", "fp"))
    assert torch.equal(second.model.weight, straight.model.weight)


def test_two_newest_are_kept_and_no_temporary_file_is_left(tmp_path: Path):
    trainer = Trainer()
    ckpt = Checkpointer(tmp_path, "fp")
    for _ in range(4):
        trainer.epoch(ckpt)
    assert sorted(p.name for p in (tmp_path / "fp").iterdir()) == ["epoch-0003.pt", "epoch-0004.pt"]


def test_torn_file_falls_back_with_a_warning_naming_it(tmp_path: Path, caplog):
    trainer = Trainer()
    ckpt = Checkpointer(tmp_path, "fp")
    trainer.epoch(ckpt)
    trainer.epoch(ckpt)
    newest = tmp_path / "fp" / "epoch-0002.pt"
    newest.write_bytes(newest.read_bytes()[:300])
    with caplog.at_level(logging.WARNING, logger="headstart.training.checkpoint"):
        result = Trainer().restore(Checkpointer(tmp_path, "fp"))
    assert result is not None and result.resumed_from == 1
    assert "epoch-0002.pt is unreadable, torn" in caplog.text


def test_checksum_mismatch_and_foreign_files_are_unusable(tmp_path: Path):
    trainer = Trainer()
    trainer.epoch(Checkpointer(tmp_path, "fp"))
    blob = (tmp_path / "fp" / "epoch-0001.pt").read_bytes()
    import hashlib

    assert _check(blob, {"sha256": hashlib.sha256(blob).hexdigest()})[0] is None
    assert "sha256 does not match" in (_check(blob, {"sha256": "0" * 64})[0] or "")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    assert "not a Headstart checkpoint" in (_check(other.read_bytes(), {})[0] or "")


def test_other_files_in_the_folder_are_ignored(tmp_path: Path):
    trainer = Trainer()
    trainer.epoch(Checkpointer(tmp_path, "fp"))
    (tmp_path / "fp" / "epoch-0009.pt.tmp").write_bytes(b"half written")
    (tmp_path / "fp" / "epoch-notes.txt").write_text("hi")
    result = Trainer().restore(Checkpointer(tmp_path, "fp"))
    assert result is not None and result.resumed_from == 1


def test_pruning_keeps_another_configs_checkpoints_and_its_own(tmp_path: Path):
    """Config A ran 5 epochs; config B's newer-written but lower-numbered checkpoints must survive A's."""
    a = Trainer()
    for _ in range(5):
        a.epoch(Checkpointer(tmp_path, "a"))
    b = Trainer()
    for _ in range(3):
        b.epoch(Checkpointer(tmp_path, "b"))
    resumed_b = Trainer().restore(Checkpointer(tmp_path, "b"))
    assert resumed_b is not None and resumed_b.resumed_from == 3
    resumed_a = Trainer().restore(Checkpointer(tmp_path, "a"))
    assert resumed_a is not None and resumed_a.resumed_from == 5


def test_two_configs_at_the_same_epoch_do_not_overwrite_each_other(tmp_path: Path):
    a, b = Trainer(), Trainer()
    a.epoch(Checkpointer(tmp_path, "a"))
    b.gen.manual_seed(2)  # other batches: b's weights differ from a's
    b.epoch(Checkpointer(tmp_path, "b"))
    restored = Trainer()
    restored.restore(Checkpointer(tmp_path, "a"))
    assert torch.equal(restored.model.weight, a.weights_at[1])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pt")) == ["a/epoch-0001.pt",
                                                                                     "b/epoch-0001.pt"]


def test_a_fingerprint_that_is_not_a_folder_name_is_refused(tmp_path: Path):
    import pytest

    with pytest.raises(ValueError, match="fingerprint '../x'"):
        Checkpointer(tmp_path, "../x")


def test_finishing_keeps_the_final_checkpoint_and_prunes_older_finished_runs_never_one_in_progress(tmp_path: Path):
    in_progress = Checkpointer(tmp_path, "wip")
    trainer = Trainer()
    for _ in range(3):
        trainer.epoch(in_progress)
    for name in ("a", "b", "c"):
        ckpt, trainer = Checkpointer(tmp_path, name), Trainer()
        for _ in range(3):
            trainer.epoch(ckpt)
        ckpt.finish()
    left = {p.name: sorted(c.name for c in p.iterdir()) for p in tmp_path.iterdir() if p.is_dir()}
    assert left == {"wip": ["epoch-0002.pt", "epoch-0003.pt"], "b": ["epoch-0003.pt"], "c": ["epoch-0003.pt"]}
    assert sorted(n.rsplit("-", 1)[1] for n in (p.name for p in tmp_path.glob("finished-*"))) == ["b", "c"]
    resumed = Trainer().restore(Checkpointer(tmp_path, "b"))  # a forced re-run of b: nothing left to train
    assert resumed is not None and resumed.resumed_from == 3
