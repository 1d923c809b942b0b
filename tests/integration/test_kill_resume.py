"""Training survives SIGKILL: a re-run of the same command resumes and ends bit-identical on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ..conftest import make_imagefolder
from .servers import sqlite_store

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _setup(tmp_path: Path, factory: pytest.TempPathFactory) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["shared"].update(images_per_class=None, val_images_per_class=None, epochs=6, batch_size=8,
                                     patience=10)
    params["train"]["scratch"].update(backbone="small_cnn", channels=1, image_size=32)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    make_imagefolder(tmp_path / "data", per_class={"train": 40, "val": 6, "test": 6})
    sqlite_store(tmp_path / "mlflow.db", factory)  # migrated: the runs below skip 3-6 s of migrations
    return tmp_path


def _cmd(out: str, ckpt: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli", "train", "scratch", "--out", out,
            "--set", f"train.shared.checkpoint_dir={ckpt}", "--set", "train.shared.checkpoint_every_steps=3",
            "--set", "tracking.tracking_uri=sqlite:///mlflow.db"]


def test_sigkill_mid_epoch_then_rerun_resumes_to_identical_weights(tmp_path: Path,
                                                                  tmp_path_factory: pytest.TempPathFactory):
    cwd = _setup(tmp_path, tmp_path_factory)
    env = {**os.environ, "HEADSTART_NO_PROGRESS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(_cmd("ref", "ckpt-ref"), cwd=cwd, env=env, check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(_cmd("run", "ckpt"), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    # 120 images, batch 8: 15 steps per epoch, a checkpoint every 3 steps; kill once epoch 2 has begun
    folder = cwd / "ckpt" / "scratch"  # checkpoints go to its <fingerprint>/ subfolder
    while not [p for p in folder.glob("*/epoch-*-step-*.pt") if not p.name.startswith("epoch-0001")]:
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not (cwd / "run" / "model").exists()
    newest = max(p.name for p in folder.glob("*/epoch-*.pt"))
    assert "-step-" in newest, f"killed at an epoch boundary ({newest}), not mid-epoch"
    step = int(newest.split("-step-")[1].removesuffix(".pt"))

    rerun = subprocess.run(_cmd("run", "ckpt"), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    epoch = int(newest.split("-")[1])
    assert f"resumed from the checkpoint of epoch {epoch}, step {step} of 15" in " ".join(rerun.stderr.split())
    ref = (cwd / "ref" / "model" / "model.safetensors").read_bytes()
    assert (cwd / "run" / "model" / "model.safetensors").read_bytes() == ref
    ref_hist = yaml.safe_load((cwd / "ref" / "history.json").read_text())
    run_hist = yaml.safe_load((cwd / "run" / "history.json").read_text())
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert [h[key] for h in run_hist] == [h[key] for h in ref_hist], key
