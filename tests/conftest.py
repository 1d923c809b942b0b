"""Shared fixtures: a tiny, learnable ImageFolder generated in tmp_path; every test, module and session run in a
temporary folder of their own, and fail when they leave anything in the checkout; the rule that only tests
marked `gpu` may skip (a skip anywhere else fails the run, so a test silently not running is noticed); and the
slow modules first, for xdist's workers to finish together."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")

CLASSES = ("circle", "square", "stripes")

REPO = Path(__file__).resolve().parents[1]
# Where a run writes when given relative paths (params.yaml's and the configs' defaults, the CLI's): caches and
# state under .headstart/, the SQLite store under mlflow/, step outputs under outputs/. Only these and the
# checkout's top-level names are watched (a few hundred stat calls, ~2 ms a test), not .headstart/images/, which
# a background image build writes beside the tests.
_WATCHED = (".headstart/cache", ".headstart/state", ".headstart/downloads", ".headstart/import", "mlflow", "outputs")
_CHECKOUT_AT_START: dict[str, int] = {}

_SKIPS: dict[str, list[str]] = {"gpu": [], "unexpected": []}
_LEFT = pytest.StashKey[list]()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Runs where the results are reported: in the one process, or on the xdist controller for every worker."""
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPS["gpu" if "gpu" in report.keywords else "unexpected"].append(f"{report.nodeid} ({reason})")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first, so the last modules xdist hands out are short ones and no worker idles while another runs a
    two-minute loop: modules with a `slow` test, then `integration` ones, then the rest. A stable sort after
    pytest-randomly's shuffle, so the order within each group stays random under `-p randomly`."""
    rank: dict[str, int] = {}
    for item in items:
        weight = 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("integration") else 2
        module = item.nodeid.split("::", 1)[0]
        rank[module] = min(rank.get(module, 2), weight)
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


def _checkout() -> dict[str, int]:
    """The checkout's top-level names, and each file under the watched folders with its mtime."""
    state = {entry.name: 0 for entry in os.scandir(REPO)}
    for top in _WATCHED:
        for folder, _, files in os.walk(REPO / top):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    state[os.path.relpath(path, REPO)] = os.stat(path).st_mtime_ns
                except FileNotFoundError:
                    continue
    return state


# written beside the tests by the tools, not by a test: pytest's own cache, and what `make lint` (which CI runs in
# the background meanwhile) creates: its venv and ruff's cache
_TOOLS = {".pytest_cache", ".ruff_cache", ".venv-lint"}


def _left(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(k for k, mtime in after.items() if before.get(k) != mtime and k not in _TOOLS)


def pytest_sessionstart(session: pytest.Session) -> None:
    _CHECKOUT_AT_START.update(_checkout())


@pytest.fixture(scope="session", autouse=True)
def _session_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Session fixtures run in a temporary folder: a relative default path never lands in the checkout."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("session-cwd"))
        yield


@contextlib.contextmanager
def _environ_kept() -> Iterator[None]:
    """The environment as it was, afterwards: mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ,
    where a later test's tracking_from_params would read it and go to that test's (by then stopped) server."""
    environ = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="module", autouse=True)
def _module_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Module fixtures (a module's trained models, its servers) run in a temporary folder of their own, and what
    they write into the environment (MLflow's tracking URI) is gone when the module is done."""
    with _environ_kept(), pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("module-cwd"))
        yield


@pytest.fixture(autouse=True)
def _test_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test runs in a temporary folder of its own (not its tmp_path, which stays the test's to list): the
    default caches (.headstart/cache/...), stores (mlflow/) and outputs/ a test does not point elsewhere land
    there, so no test reads what another wrote; and with the environment it started with restored after it. The
    test fails if it left anything in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    before = _checkout()
    with _environ_kept():
        yield
    left = _left(before, _checkout())
    if left:
        pytest.fail(f"the test wrote into the checkout {REPO}: {', '.join(left[:20])}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPS["unexpected"] and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    left = _left(_CHECKOUT_AT_START, _checkout()) if _CHECKOUT_AT_START else []
    if left:
        session.config.stash[_LEFT] = left
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if config.stash.get(_LEFT, None):
        terminalreporter.section("FILES LEFT IN THE CHECKOUT by this run (a fixture or test wrote there); this fails "
                                 "the run", sep="-", bold=True, red=True)
        for line in config.stash[_LEFT][:50]:
            terminalreporter.line(line)
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
