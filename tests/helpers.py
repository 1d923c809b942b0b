"""Helpers shared by test modules (no test module imports another)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from headstart.training.checkpoint import Checkpointer


class Killed(Exception):
    """Stands for the SIGKILL of a training run, raised right after a chosen checkpoint is written."""


class DiesAfterSaving(Checkpointer):
    """Writes its checkpoint, then kills the run: the state on disk is exactly that checkpoint."""

    def __init__(self, location: Path, at: tuple[int, int]) -> None:
        super().__init__(location, "fp")
        self.at = at

    def save(self, *args, partial=None, **kw) -> None:
        super().save(*args, partial=partial, **kw)
        if partial is not None and (partial.epoch, partial.step) == self.at:
            raise Killed


def serving_check_in_process(cmd: list[str], timeout_s: float, version: str) -> subprocess.CompletedProcess[str]:
    """serving.verify._run_check without the fresh process (~8 s of imports a registration): headstart.serving.check's
    main, run here on the same arguments (the pyfunc it loads puts the model's code on sys.path, which is put back
    afterwards). For tests about the registry and the gate; the ones about the serving check keep the process."""
    from headstart.serving import check

    path = list(sys.path)
    try:
        code = check.main(cmd[cmd.index("headstart.serving.check") + 1:])
    finally:
        sys.path[:] = path
    return subprocess.CompletedProcess(cmd, code, "", "")


# A page opened in headless Chromium: after `load`, this marks on <body> every <img> the browser could not
# decode (by its alt text) and every relative link whose target is missing is checked in Python on the DOM.
_PROBE = ("<script>window.addEventListener('load',()=>{const bad=[...document.images]"
          ".filter(i=>!i.complete||i.naturalWidth===0).map(i=>i.alt||i.src.slice(0,60));"
          "document.body.setAttribute('data-images',String(document.images.length));"
          "document.body.setAttribute('data-broken-images',JSON.stringify(bad));});</script>")


def chromium() -> str:
    """Debian's chromium (installed by `make chromium`, which `make test` runs)."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium is not installed: run `make chromium` (Debian package chromium)")
    return found


def browser_dom(page: Path, tmp: Path) -> str:
    """The DOM Chromium built from `page` (a copy beside it with the probe script, so relative links and
    images resolve as they would for the original), as --dump-dom prints it."""
    import subprocess

    html = page.read_text()
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(html.replace("</body>", _PROBE + "</body>") if "</body>" in html else html + _PROBE)
    try:
        out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=5000",
                              "--dump-dom", probe.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        probe.unlink()
    return out



def copy_store(src: Path, dst: Path) -> Path:
    """A copy of the folder `src` that holds a SQLite MLflow store (`mlflow.db`) with its artifacts and whatever
    else: the store's absolute paths (artifact locations, sources) are rewritten to point into the copy, so a
    test can register, promote and log in it without touching the template other tests copy."""
    import shutil
    import sqlite3

    shutil.copytree(src, dst, dirs_exist_ok=True)
    old, new = f"{src}/", f"{dst}/"
    with sqlite3.connect(dst / "mlflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for _, col, kind, *_ in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if kind.upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(f'UPDATE "{table}" SET "{col}" = replace("{col}", ?, ?) WHERE instr("{col}", ?) > 0',
                               (old, new, old))
    db.close()
    # MLflow keeps one artifact repository per run (and logged model) id for the whole process: the copy has the
    # same ids, so without this its artifacts would still be written to, and read from, the template's folders
    from mlflow.tracking._tracking_service import utils

    utils._artifact_repos_cache.clear()
    return dst


def random_model(folder: Path, seed: int, role: str, tta: str = "none") -> Path:
    """A small CNN on the 3 fixture classes (16 px, 1 channel) with seeded random weights, saved as training saves
    it: for tests where scoring, not training, is the point."""
    import torch

    from headstart.models import build_model, modelio
    from headstart.presets import Preset
    from tests.conftest import CLASSES

    torch.manual_seed(seed)
    built = build_model("small_cnn", None, len(CLASSES), in_channels=1)
    card = modelio.ModelCard(arch="small_cnn", classes=CLASSES, role=role, tta=tta,
                             preset=Preset(image_size=16, channels=1, mean=(0.5,), std=(0.5,)))
    return modelio.save(built.model, card, folder)


PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


def repo_params() -> dict:
    """The repository's params.yaml, read afresh (a caller may change it)."""
    from headstart.config import load_params

    return load_params(PARAMS_YAML)


def params_cfg(name: str, **changes):
    """Section `name`'s config (`gate`, `evaluate`, `train.scratch`, ...) built from the repository's params.yaml
    by its step's own builder, `changes` last: the one way a test gets a config, so no test keeps a default of
    its own (params.yaml holds each knob's one default)."""
    from headstart.config import config_for

    return config_for(repo_params(), name, **changes)


def tiny_train_cfg(role: str = "scratch", **kw):
    """params.yaml's recipe for `role`, shrunk to the tiny dataset (small_cnn, 32 px, 2 epochs, batch 16)."""
    base = dict(backbone="small_cnn", weights="none", channels=1, image_size=32, epochs=2, patience=3, tta="none",
                images_per_class=None, val_images_per_class=None, checkpoint_dir=None, tensor_cache_dir=None,
                batch_size=16)
    return params_cfg(f"train.{role}", **{**base, **kw})


def tiny_engine_cfg(**kw):
    """The engine config of `tiny_train_cfg()`, with fields replaced."""
    import dataclasses

    return dataclasses.replace(tiny_train_cfg().engine(), **kw)


class Trainer:
    """A toy training state for checkpoint tests: a linear model, AdamW, LambdaLR, a generator and a GradScaler."""

    def __init__(self) -> None:
        import torch
        from torch import nn

        from headstart.training.engine import FitResult

        torch.manual_seed(0)
        self.model = nn.Linear(4, 3)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=0.1)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0 / (1 + s))
        self.gen = torch.Generator().manual_seed(1)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        self.result = FitResult(best_state={}, best_epoch=0, best_val_accuracy=-1.0)
        self.weights_at: dict = {}

    def epoch(self, ckpt: Checkpointer, steps: int = 3) -> None:
        import torch

        from headstart.training.engine import EpochStats

        for _ in range(steps):
            x = torch.randn(8, 4, generator=self.gen)
            loss = self.model(x).pow(2).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.sched.step()
        n = len(self.result.history) + 1
        self.result.history.append(EpochStats(n, loss.item(), 0.5, 1.0, 0.1 * n, 0.1, 0.01))
        self.result.best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.result.best_epoch, self.result.best_val_accuracy = n, 0.1 * n
        self.weights_at[n] = self.model.weight.detach().clone()
        ckpt.save(self.model, self.opt, self.sched, self.gen, self.result, self.scaler)

    def restore(self, ckpt: Checkpointer):
        result = ckpt.restore(self.model, self.opt, self.sched, self.gen, self.scaler)
        self.result = result or self.result
        return result


class Payload:
    """Unpickling this calls open(marker, "w"), which creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import builtins

        return builtins.open, (str(self.marker), "w")


# A compiled KFP spec (tests/pipeline): its tasks, the conditions guarding them, their containers.


def tasks(spec: dict) -> dict:
    """Every task in the DAG, nested condition branches included, by task name."""
    found: dict = {}
    comps = spec["components"]

    def walk(dag_tasks: dict) -> None:
        for name, task in dag_tasks.items():
            found[name] = task
            sub = comps[task["componentRef"]["name"]].get("dag")
            if sub:
                walk(sub["tasks"])

    walk(spec["root"]["dag"]["tasks"])
    return found


def guards(spec: dict) -> dict:
    """The dsl.If/Else conditions that must hold for each task to run, outermost first."""
    found: dict = {}
    comps = spec["components"]

    def walk(dag_tasks: dict, outer: list[str]) -> None:
        for name, task in dag_tasks.items():
            condition = task.get("triggerPolicy", {}).get("condition")
            here = outer + ([condition] if condition else [])
            found[name] = here
            sub = comps[task["componentRef"]["name"]].get("dag")
            if sub:
                walk(sub["tasks"], here)

    walk(spec["root"]["dag"]["tasks"], [])
    return found


def executor_of(spec: dict, task: dict) -> str:
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


def container(spec: dict, task: dict) -> dict:
    return spec["deploymentSpec"]["executors"][executor_of(spec, task)]["container"]


def k8s(spec: dict, platform: dict, task: dict) -> dict:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].get(executor_of(spec, task), {})


def by_display(spec: dict) -> dict:
    return {t["taskInfo"]["name"]: t for t in tasks(spec).values()}


# The tiny loops' outputs (tests/integration: the CLI loop, dvc repro, kfp.local).
MIN_ACCURACY = 0.5  # both candidates, on the 18 test images of 3 classes (chance: 1/3)


def assert_loop_outputs(out: Path, version: str) -> None:
    """What one promoted loop leaves in `out` (outputs/): validation passed with its report, both candidates
    above chance with the evaluation report, and a decision record opening with the promoted version."""
    import json

    report = json.loads((out / "validation/report.json").read_text())
    assert report["passed"] is True and (out / "validation/report.html").is_file()
    evaluation = json.loads((out / "evaluation/metrics.json").read_text())
    for name in ("finetune", "scratch"):
        assert evaluation["models"][name]["accuracy"] >= MIN_ACCURACY, (name, evaluation["models"][name])
    assert (out / "evaluation/report.html").is_file()
    record = (out / "decision/decision.md").read_text()
    assert record.splitlines()[0].endswith(f"v{version}: promoted"), record[:300]


def assert_mid_epoch_resume_is_bit_identical(setup, preset, tmp_path: Path) -> None:
    """Kill a streamed fit right after the checkpoint at epoch 2, step 3 of 5, resume it with another worker count,
    and compare with the uninterrupted fit: every epoch's numbers and the best weights, to the bit (CPU).
    `setup(workers)` gives (model, head, backbone, train, val) for the streamed split under test."""
    import pytest
    import torch

    from headstart.training.engine import fit

    cfg = tiny_engine_cfg(epochs=3, batch_size=8, patience=10, seed=3, checkpoint_every_steps=2, probe_epochs=1)
    model, head, backbone, tr, va = setup(2)
    full = fit(model, head, backbone, preset, tr, va, cfg)
    model, head, backbone, tr, va = setup(2)
    with pytest.raises(Killed):  # global step 8 = epoch 2, step 3 of 5
        fit(model, head, backbone, preset, tr, va, cfg, checkpointer=DiesAfterSaving(tmp_path / "c", (2, 3)))
    model, head, backbone, tr, va = setup(1)  # another worker count: the checkpoint's wins
    resumed = fit(model, head, backbone, preset, tr, va, cfg, checkpointer=Checkpointer(tmp_path / "c", "fp"))
    assert resumed.resumed_at == "epoch 2, step 3 of 5"
    for field in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert [getattr(h, field) for h in resumed.history] == [getattr(h, field) for h in full.history], field
    for key, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
