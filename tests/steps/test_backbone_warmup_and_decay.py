"""The backbone's LR warm-up starts when it is unfrozen, and norm and bias parameters
get no weight decay. Read from the optimizer the engine really trains with (recorded at each checkpoint)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from headstart.config import load_params
from headstart.data.imagefolder import list_classes, load_split
from headstart.models import build_model, head_and_backbone_params
from headstart.presets import Preset
from headstart.steps import train
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import EngineConfig, fit

ROOT = Path(__file__).resolve().parents[2]
LR_HEAD, LR_BACKBONE, DECAY = 0.003, 0.001, 0.05


class Recorder(Checkpointer):
    """Records, at every save, each optimizer group's LR for the next step and its weight decay (writes nothing)."""

    def __init__(self, location: Path) -> None:
        super().__init__(location, "fp")
        self.groups: dict[int, list[dict]] = {}  # optimizer steps done -> param groups

    def save(self, model, opt, sched, gen, result, *args, **kw) -> None:
        self.groups[sched.last_epoch] = [
            {"lr": g["lr"], "weight_decay": g["weight_decay"], "params": list(g["params"])} for g in opt.param_groups
        ]


def _recipe(**kw) -> EngineConfig:
    """params.yaml's finetune recipe on the tiny data: 36 images, batch 16 = 3 steps per epoch, 1 probe epoch."""
    base = train.config_from_params(load_params(ROOT / "params.yaml"), "finetune", lr_head=LR_HEAD,
                                    lr_backbone=LR_BACKBONE, weight_decay=DECAY, warmup_epochs=1.0, probe_epochs=1)
    return dataclasses.replace(base.engine(), **{"epochs": 2, "batch_size": 16, "patience": 10,
                                                 "checkpoint_every_steps": 1, **kw})


def _train(data: Path, tmp_path: Path, cfg: EngineConfig):
    classes = list_classes(data)
    torch.manual_seed(0)
    built = build_model("small_cnn", None, len(classes), in_channels=1)
    preset = Preset(32, 1, built.mean, built.std)
    tr, va = load_split(data, "train", preset, classes), load_split(data, "val", preset, classes)
    head, backbone = head_and_backbone_params(built)
    rec = Recorder(tmp_path / "ckpt")
    fit(built.model, head, backbone, preset, tr, va, cfg, checkpointer=rec)
    return rec, {id(p) for p in head}, {id(p) for p in backbone}, built.model


def _lrs(groups: list[dict], members: set[int]) -> list[float]:
    """The distinct LRs of the groups holding these parameters (one value: every such group agrees)."""
    return sorted({round(g["lr"], 12) for g in groups if any(id(p) in members for p in g["params"])})


def test_backbone_warmup_starts_when_it_is_unfrozen(tiny_imagefolder: Path, tmp_path: Path):
    rec, head, backbone, _ = _train(tiny_imagefolder, tmp_path, _recipe(warmup_from="unfreeze"))
    steps = 3  # per epoch; the probe epoch is steps 0-2, the backbone's first update is step 3
    # the first backbone update: the first of 3 warm-up steps, not the peak LR
    assert _lrs(rec.groups[steps], backbone) == pytest.approx([LR_BACKBONE / 3])
    assert _lrs(rec.groups[steps + 1], backbone) == pytest.approx([2 * LR_BACKBONE / 3])
    assert _lrs(rec.groups[steps + 2], backbone) == pytest.approx([LR_BACKBONE])  # warm-up done: the peak
    # the head warmed up in the probe epoch and is at its peak when the backbone joins
    assert _lrs(rec.groups[steps], head) == pytest.approx([LR_HEAD])
    assert _lrs(rec.groups[steps - 2], head) == pytest.approx([2 * LR_HEAD / 3])


def test_warmup_from_start_is_over_when_the_backbone_is_unfrozen(tiny_imagefolder: Path, tmp_path: Path):
    rec, _, backbone, _ = _train(tiny_imagefolder, tmp_path, _recipe(warmup_from="start", epochs=1))
    assert _lrs(rec.groups[3], backbone) == pytest.approx([LR_BACKBONE])  # unfrozen at the peak


def test_norm_and_bias_parameters_get_no_weight_decay(tiny_imagefolder: Path, tmp_path: Path):
    rec, _, _, model = _train(tiny_imagefolder, tmp_path, _recipe(decay_norm_bias=False, epochs=1))
    groups = rec.groups[3]
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(decay_of) == len(list(model.parameters()))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms, "the test model has BatchNorm layers"
    for name, p in model.named_parameters():
        expected = 0.0 if p.ndim <= 1 else DECAY
        assert decay_of[id(p)] == expected, (name, tuple(p.shape), decay_of[id(p)])
    for norm in norms:
        assert decay_of[id(norm.weight)] == decay_of[id(norm.bias)] == 0.0


def test_decay_norm_bias_true_decays_every_parameter(tiny_imagefolder: Path, tmp_path: Path):
    rec, _, _, _ = _train(tiny_imagefolder, tmp_path, _recipe(decay_norm_bias=True, epochs=1))
    assert {g["weight_decay"] for g in rec.groups[3]} == {DECAY}


def test_params_yaml_keeps_the_recipe_the_benchmark_measured_better():
    """benchmarks/results/head_start_warmup_decay.json compares the two recipes in one run; params.yaml
    keeps the one with the higher mean test accuracy."""
    import json

    summary = json.loads((ROOT / "benchmarks/results/head_start_warmup_decay.json").read_text())["summary"]
    best = max(summary, key=lambda row: row["accuracy_mean"])["recipe"]
    knobs = {"start_decay_all": ("start", True), "unfreeze_no_norm_decay": ("unfreeze", False)}[best]
    cfg = train.config_from_params(load_params(ROOT / "params.yaml"), "finetune")
    assert (cfg.warmup_from, cfg.decay_norm_bias) == knobs
