"""`dvc repro` runs the loop as CLI stages, caches it, and re-runs only what a param change touches."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import make_imagefolder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STAGES = ("validate", "train_finetune", "train_scratch", "champion", "evaluate", "register")


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["validate"] = {**params.get("validate", {}), "label_set": None, "min_images_per_class": 1}
    params["train"]["shared"].update(images_per_class=None, val_images_per_class=None, epochs=1, batch_size=16)
    for role in ("finetune", "scratch"):
        params["train"][role]["image_size"] = 32
    params["evaluate"]["bootstrap_samples"] = 200
    params["gate"].update(min_accuracy=0.0, min_gain_over_baseline=None, max_regression=1.0)
    params["register"]["serving_check_images"] = 8
    return params


def _repro(repo: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HEADSTART_NO_PROGRESS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", log))


def test_repro_caches_and_reruns_only_what_a_param_touches(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = tiny_params()
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    make_imagefolder(repo / "data")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=repo, check=True)

    first = _repro(repo)
    assert _ran(first) == set(STAGES)
    assert "promoted to champion" in first
    assert (repo / "outputs/decision/registration.json").is_file()

    second = _repro(repo)
    assert _ran(second) == {"champion"}, second  # always runs; the champion it promoted is no change

    params["train"]["shared"]["epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _repro(repo)
    assert _ran(third) == {"champion", "train_finetune", "train_scratch", "evaluate", "register"}, third
