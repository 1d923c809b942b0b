"""The real import reproduces exactly the dataset pinned by the committed data.dvc."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.data import fashion_mnist as fm
from tests.helpers import repo_params

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")

def _settings() -> dict:
    """What `make data` imports with: params.yaml's data and near-duplicate knobs, as the CLI reads them."""
    p = repo_params()
    return {"val_per_class": p["data"]["val_per_class"], "seed": p["seed"],
            "near_duplicate_max_rms": p["validate"]["near_duplicate_max_rms"],
            "near_duplicate_max_hamming": p["validate"]["near_duplicate_max_hamming"]}


def _checkout_import_is_current() -> bool:
    """Whether the checkout's data/ was written, and left unedited, by an import with this code, these encoder
    versions and these settings: then that import stands for a new one (the import is deterministic), and CI
    does not write 70,000 images twice (`make data` has just imported and checked them)."""
    record = fm.read_record(ROOT / "data")
    return (record is not None and record.get("importer") == fm.importer_version()
            and record.get("settings") == _settings() and fm.contents(ROOT / "data")["sha256"] == record.get("sha256"))


def _dvc_status_clean(repo: Path) -> None:
    status = subprocess.run([DVC, "status", "data.dvc"], cwd=repo, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout, status.stdout


def test_import_reproduces_data_dvc_and_dvc_status_is_clean(tmp_path: Path):
    if not (fm.SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file() and not os.environ.get("FASHION_MNIST_DIR"):
        pytest.skip("Fashion-MNIST IDX files not available; `make data` installs them")
    if _checkout_import_is_current():
        # the import wrote exactly these files, and they hash to the committed data.dvc
        _dvc_status_clean(ROOT)
        return
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp_path, check=True)
    # hardlinks into the cache instead of 70,000 copies (~10 s); the hashes do not depend on the link type
    subprocess.run([DVC, "config", "cache.type", "hardlink"], cwd=tmp_path, check=True)
    shutil.copy(ROOT / "data.dvc", tmp_path / "data.dvc")
    settings = _settings()
    result = fm.import_fashion_mnist(tmp_path / "data", **settings)
    assert result.counts == {"train": 54_992, "val": 5_000, "test": 10_000, "left_out": 8}
    record = fm.read_record(tmp_path / "data")
    assert record is not None and record["importer"] == fm.importer_version() and record["settings"] == settings
    # what `make data` does: fill the cache; dvc would rewrite data.dvc if the hash differed
    subprocess.run([DVC, "commit", "-f", "-q", "data.dvc"], cwd=tmp_path, check=True)
    assert (tmp_path / "data.dvc").read_text() == (ROOT / "data.dvc").read_text()
    _dvc_status_clean(tmp_path)
