"""`headstart run` is one loop: its steps share a fresh MLflow parent run, not the checkout's code-and-data group."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from headstart import cli, tracking

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run command with its steps replaced by recorders of the loop id each would track under."""
    seen: list[str] = []

    def step(*_: Any, **__: Any) -> None:
        seen.append(tracking.loop_id())

    for name in ("validate", "train", "evaluate", "register", "summary"):
        monkeypatch.setattr(cli, name, step)
    cli.run_all(data=tmp_path / "data", outputs=tmp_path / "outputs", params=ROOT / "params.yaml", overrides=None)
    return seen[:-1]  # the summary only reads


def test_the_steps_of_one_run_share_a_fresh_loop_and_the_next_run_gets_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(tracking.LOOP_ENV, raising=False)
    monkeypatch.setenv("HEADSTART_GIT_COMMIT", "c0ffee")  # the default loop id, were the run to fall back to it
    first, second = _run(tmp_path, monkeypatch), _run(tmp_path, monkeypatch)
    assert len(first) == 5 and len(set(first)) == 1, first  # validate, two trainings, evaluate, register
    assert len(set(second)) == 1 and second[0] != first[0]
    assert not first[0].startswith("c0ffee-")
    assert tracking.LOOP_ENV not in os.environ  # the process's environment is as it was


def test_a_loop_id_the_caller_set_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(tracking.LOOP_ENV, "nightly-42")
    assert set(_run(tmp_path, monkeypatch)) == {"nightly-42"}
    assert os.environ[tracking.LOOP_ENV] == "nightly-42"
