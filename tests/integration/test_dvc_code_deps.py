"""dvc.yaml's stages depend on folders of src/headstart. The bytecode Python caches beside the code
(`__pycache__`, written by the first run of each stage) is not code: it must not make the next `make run`
re-run the loop. .dvcignore keeps it out of the folders' hashes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.integration
def test_bytecode_written_by_a_run_is_not_a_code_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    shutil.copytree(ROOT / "src", repo_dir / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo_dir / name)
    (repo_dir / "data/train/a").mkdir(parents=True)
    (repo_dir / "data/train/a/0.png").write_bytes(b"stand-in")  # only its hash matters to `dvc status`
    (repo_dir / "outputs/validation").mkdir(parents=True)
    (repo_dir / "outputs/validation/summary.json").write_text("{}\n")
    subprocess.run(["git", "init", "-q"], cwd=repo_dir, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=repo_dir, check=True)
    monkeypatch.chdir(repo_dir)
    with Repo(".") as repo:
        repo.commit("validate", force=True)  # as if validate had just run
        assert repo.status(targets=["validate"]) == {}

        for folder in ("validation", "data", "training"):  # what validate, then training, import
            cache = Path("src/headstart", folder, "__pycache__")
            cache.mkdir()
            (cache / "manifest.cpython-311.pyc").write_bytes(b"\xa7\r\r\n bytecode")
        (Path("src/headstart") / "stray.pyc").write_bytes(b"\xa7\r\r\n")
        assert repo.status(targets=["validate"]) == {}

        report = Path("src/headstart/validation/report.py")
        report.write_text(report.read_text() + "\n# an edit\n")  # a real code change still re-runs it
        assert "validate" in repo.status(targets=["validate"])
