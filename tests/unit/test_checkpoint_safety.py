"""A checkpoint carrying a malicious pickle is refused, its code never runs, and the run falls back."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from headstart.training.checkpoint import Checkpointer
from tests.helpers import Payload, Trainer


def _plant(path: Path, marker: Path) -> None:
    """A real checkpoint, plus the payload: what an attacker with write access to the store would leave."""
    state = torch.load(path, weights_only=True)
    state["optimizer"]["extra"] = Payload(marker)
    torch.save(state, path)


def test_the_payload_is_live_when_loaded_unsafely(tmp_path: Path):
    trainer = Trainer()
    trainer.epoch(Checkpointer(tmp_path / "c", "fp"))
    marker = tmp_path / "PWNED"
    _plant(tmp_path / "c" / "fp" / "epoch-0001.pt", marker)
    torch.load(tmp_path / "c" / "fp" / "epoch-0001.pt", weights_only=False)  # the control: the payload does run
    assert marker.exists()


def test_malicious_checkpoint_is_refused_and_the_previous_one_used(tmp_path: Path, caplog):
    trainer = Trainer()
    ckpt = Checkpointer(tmp_path / "c", "fp")
    trainer.epoch(ckpt)
    trainer.epoch(ckpt)
    marker = tmp_path / "PWNED"
    _plant(tmp_path / "c" / "fp" / "epoch-0002.pt", marker)
    fresh = Trainer()
    with caplog.at_level(logging.WARNING, logger="headstart.training.checkpoint"):
        result = fresh.restore(Checkpointer(tmp_path / "c", "fp"))
    assert not marker.exists(), "the payload ran"
    assert result is not None and result.resumed_from == 1
    assert torch.equal(fresh.model.weight, trainer.weights_at[1])
    message = caplog.text
    assert "epoch-0002.pt was REFUSED" in message and "nothing in it was run" in message
    assert re.search(r"GLOBAL (io|builtins)\.open was not an allowed global\)", message)
    assert "falling back to the previous checkpoint" in message


def test_only_a_malicious_checkpoint_means_a_fresh_start_with_a_clear_message(tmp_path: Path, caplog):
    trainer = Trainer()
    trainer.epoch(Checkpointer(tmp_path / "c", "fp"))
    marker = tmp_path / "PWNED"
    _plant(tmp_path / "c" / "fp" / "epoch-0001.pt", marker)
    fresh = Trainer()
    before = fresh.model.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="headstart.training.checkpoint"):
        assert fresh.restore(Checkpointer(tmp_path / "c", "fp")) is None
    assert not marker.exists()
    assert torch.equal(fresh.model.weight, before)
    assert "epoch-0001.pt was REFUSED" in caplog.text
    assert "no usable checkpoint" in caplog.text and "starts from epoch 1" in caplog.text


def test_the_refused_file_is_replaced_by_the_next_good_checkpoint(tmp_path: Path):
    trainer = Trainer()
    ckpt = Checkpointer(tmp_path / "c", "fp")
    trainer.epoch(ckpt)
    trainer.epoch(ckpt)
    _plant(tmp_path / "c" / "fp" / "epoch-0002.pt", tmp_path / "PWNED")
    resumed = Trainer()
    ckpt2 = Checkpointer(tmp_path / "c", "fp")
    resumed.restore(ckpt2)
    resumed.epoch(ckpt2)  # epoch 2 again, written over the planted file
    state = torch.load(tmp_path / "c" / "fp" / "epoch-0002.pt", weights_only=True)
    assert state["epoch"] == 2 and "extra" not in state["optimizer"]
    assert not (tmp_path / "PWNED").exists()


def test_no_torch_load_without_weights_only_in_the_package():
    src = Path(__file__).resolve().parents[2] / "src" / "headstart"
    offenders = []
    for path in src.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.name}:{n}")
    assert not offenders, offenders
