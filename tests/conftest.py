"""Shared fixtures: a tiny, learnable ImageFolder generated in tmp_path; and the rule that only tests marked
`gpu` may skip (a skip anywhere else fails the run, so a test silently not running is noticed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")

CLASSES = ("circle", "square", "stripes")

_SKIPS: dict[str, list[str]] = {"gpu": [], "unexpected": []}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPS["gpu" if item.get_closest_marker("gpu") else "unexpected"].append(f"{item.nodeid} ({reason})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPS["unexpected"] and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for kind, title in (("gpu", "skipped for want of a CUDA GPU (marked gpu)"),
                        ("unexpected", "UNEXPECTED SKIPS: only tests marked gpu may skip; this fails the run")):
        if _SKIPS[kind]:
            terminalreporter.section(title, sep="-", bold=kind == "unexpected", red=kind == "unexpected")
            for line in _SKIPS[kind]:
                terminalreporter.line(line)


def _pattern(cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A 28x28-ish grayscale image whose class is visible: circle, square or stripes."""
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
    r = rng.integers(size // 6, size // 3)
    if cls == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif cls == 1:
        mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    else:
        period = int(rng.integers(3, 6))
        mask = (xx // period) % 2 == 0
    img = np.where(mask, 200, 40).astype(np.float32) + rng.normal(0, 12, size=(size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_imagefolder(
    root: Path,
    per_class: dict[str, int] | None = None,
    classes: tuple[str, ...] = CLASSES,
    size: int = 28,
    seed: int = 0,
) -> Path:
    """Write root/<split>/<class>/<n>.png; every image distinct so no split leaks into another."""
    per_class = per_class or {"train": 12, "val": 4, "test": 6}
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for ci, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_pattern(ci % 3, rng, size), mode="L").save(folder / f"{split}_{i:04d}.png")
    return root


@pytest.fixture
def tiny_imagefolder(tmp_path: Path) -> Path:
    """A valid 3-class dataset: 12 train, 4 val, 6 test images per class, 28x28 grayscale PNG."""
    return make_imagefolder(tmp_path / "data")
