"""`make data` (which `make run` and `make test` start with) never deletes a user's own
dataset. With data/ not matching data.dvc it used to re-import Fashion-MNIST over it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from headstart.data import fashion_mnist as fm

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_make_data_keeps_a_users_images_and_says_what_to_do(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    for name in ("Makefile", "data.dvc", "params.yaml", ".dvc/config"):
        shutil.copy(ROOT / name, project / name)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    mine = project / "data" / "train" / "cat" / "mine.png"
    mine.parent.mkdir(parents=True)
    Image.new("L", (28, 28), 128).save(mine)
    before = mine.read_bytes()
    # The real IDX files where this machine has them (the old code then re-imported over data/); never
    # apt-get from a test: with FASHION_MNIST_DIR set, the recipe skips the package install.
    idx = fm.SYSTEM_DIR if (fm.SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file() else tmp_path / "no-idx"
    idx.mkdir(exist_ok=True)
    env = {**os.environ, "FASHION_MNIST_DIR": str(idx), "HEADSTART_NO_PROGRESS": "1", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # the project's own recipe, with this venv (`-o`: the venv is not rebuilt in the copy)
    out = subprocess.run(["make", "-o", ".venv/.installed", f"BIN={BIN}", "data"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=600)
    said = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0, said
    assert "data: not replaced by the Fashion-MNIST import" in said, said
    assert "run `dvc add data` and commit data.dvc" in said and "move the folder away" in said, said
    assert mine.read_bytes() == before
    assert sorted(p.relative_to(project).as_posix() for p in (project / "data").rglob("*")) == [
        "data/train", "data/train/cat", "data/train/cat/mine.png"]
    assert (project / "data.dvc").read_text() == (ROOT / "data.dvc").read_text()
