"""One parent run per loop: steps in separate processes find it by the loop id; a race that made two keeps one."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart import tracking as trk
from headstart.config import TrackingConfig
from tests.helpers import params_cfg


def _tracking(tmp_path: Path) -> TrackingConfig:
    return params_cfg("tracking",
                      tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art"),
                      experiment="t")


def test_without_an_id_the_loop_is_the_code_and_data_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(trk.LOOP_ENV, raising=False)
    monkeypatch.setenv("HEADSTART_GIT_COMMIT", "c0ffee")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  path: data\n")
    assert trk.loop_id() == "c0ffee-0123abcd.dir"
    monkeypatch.setenv(trk.LOOP_ENV, "run-7'; drop")
    assert trk.loop_id() == "run-7---drop"  # it goes into a search filter


def test_steps_of_one_loop_share_a_parent_and_a_duplicate_parent_gives_way_to_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking = _tracking(tmp_path)
    monkeypatch.setenv(trk.LOOP_ENV, "loop-1")
    with trk.run(tracking, "train finetune") as first:
        pass
    c = mlflow.MlflowClient()
    parent = c.get_run(first).data.tags["mlflow.parentRunId"]
    assert c.get_run(parent).data.tags[trk.LOOP_TAG] == "loop-1" and c.get_run(parent).info.run_name == "loop loop-1"
    exp = c.get_run(parent).info.experiment_id
    # another process raced this one and created a second parent later: everyone keeps using the oldest
    c.create_run(exp, run_name="loop loop-1", tags={trk.LOOP_TAG: "loop-1", trk.STEP_TAG: "loop"})
    with trk.run(tracking, "evaluate") as second:
        pass
    assert c.get_run(second).data.tags["mlflow.parentRunId"] == parent
    monkeypatch.setenv(trk.LOOP_ENV, "loop-2")
    with trk.run(tracking, "validate") as other:
        pass
    assert c.get_run(other).data.tags["mlflow.parentRunId"] != parent  # another loop, another group
