"""Worker and thread counts follow the pod's CPU quota (cgroup), not the node's cores."""

from __future__ import annotations

import os
from pathlib import Path

from headstart import runtime
from headstart.data import dataset


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_caps_the_cpu_count(tmp_path: Path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: rounds up to 2
    assert runtime.cpu_count(str(tmp_path)) == min(2, _cores())
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert runtime.cpu_count(str(tmp_path)) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no limit: the affinity mask
    assert runtime.cpu_count(str(tmp_path)) == _cores()


def test_cgroup_v1_quota_caps_the_cpu_count(tmp_path: Path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cpu_count(str(tmp_path)) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert runtime.cpu_count(str(tmp_path)) == _cores()
    assert runtime.cpu_count(str(tmp_path / "absent")) == _cores()


def test_default_loader_workers_follow_the_quota(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 96)  # the node: what the old code would have used
    monkeypatch.setattr(runtime, "cpu_count", lambda: 3)
    assert dataset.default_loader_workers() == 2
    monkeypatch.setattr(runtime, "cpu_count", lambda: 1)
    assert dataset.default_loader_workers() == 1
