"""What a training run is: the `Recipe` (every knob that can change the trained weights, and so the checkpoint
fingerprint), the `TrainConfig` that adds how a run runs, and the content hash of the data it trains on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from headstart.config import Frozen
from headstart.data import stream
from headstart.data.dataset import LoadOptions
from headstart.data.imagefolder import Split

Role = Literal["finetune", "scratch"]


class Recipe(Frozen):
    """What is trained: every field here changes the weights a run ends with, so `TrainConfig.fingerprint`
    hashes exactly these (the class a field is declared in decides, not a list kept by hand).

    `max_steps` ends the cosine schedule early; `data_loading` picks memory (the split in load order,
    reshuffled per epoch) or the shard stream (its own order); a stream's order also depends on
    `shuffle_buffer` and, through the number of streams, on `loader_workers` (headstart.data.stream):
    a checkpoint resumed under another value of any of them would mix two runs' sample orders.

    No knob has a default here: params.yaml holds the one default of each (train.shared merged under
    train.<role>), so a run, a test and a benchmark that build their config from it agree on "the default"."""

    role: Role
    backbone: str
    weights: str | None
    image_size: int
    channels: int
    images_per_class: int | None
    val_images_per_class: int | None
    epochs: int
    batch_size: int  # global: split evenly across torchrun processes
    lr_scaling: Literal["none", "linear"]  # linear: LRs x batch_size / lr_reference_batch
    lr_reference_batch: int
    lr_head: float
    lr_backbone: float
    weight_decay: float
    decay_norm_bias: bool  # false: no weight decay on BatchNorm and bias parameters
    warmup_epochs: float
    warmup_from: Literal["start", "unfreeze"]  # unfreeze: the backbone's warm-up begins when it trains
    label_smoothing: float
    probe_epochs: int
    patience: int
    augment: bool
    flip: bool
    max_shift: float
    seed: int
    max_steps: int = Field(ge=0)  # end after this many optimizer steps; 0 = no limit
    data_loading: Literal["auto", "memory", "stream"]  # stream: images through loader workers; auto: by budget
    loader_workers: int | None = Field(ge=0)  # stream readers; None: the pod's CPUs minus one, at most 8
    shuffle_buffer: int = Field(ge=1)
    congruent: bool  # positive-congruent training: focal distillation from the champion (headstart.training.congruent)
    congruent_weight: float = Field(ge=0)  # the distillation term's weight against the cross-entropy
    congruent_alpha: float = Field(ge=0)  # every image's share of it...
    congruent_beta: float = Field(ge=0)  # ...plus this on the images the champion gets right
    congruent_temperature: float = Field(gt=0)
    memory_budget_gib: float = Field(gt=0)  # auto streams a split whose decoded size would pass this


class TrainConfig(Recipe):
    """One candidate's knobs: the `Recipe`, plus how the run runs and how its model predicts, which leave
    the trained weights as they are and so stay out of the fingerprint: changing one resumes the same run.

    A new field goes in `Recipe` when it can change the weights, here otherwise;
    tests/unit/test_train_fingerprint.py changes each field and checks the fingerprint follows its class."""

    tta: Literal["none", "flip"]  # test-time augmentation the saved model predicts with (flip: mirrored too)
    checkpoint_dir: str | None
    checkpoint_every_steps: int = Field(ge=0)  # also mid-epoch, every N optimizer steps; 0 = epoch ends only
    tensor_cache_dir: str | None  # decoded uint8 splits keyed by content hash
    tensor_cache_budget_gib: float = Field(gt=0)  # the least recently used decoded splits go past this
    threads: int | None = None  # torch's own choice unless a benchmark pins it: not a knob of params.yaml

    @model_validator(mode="after")
    def _tta_matches_training(self) -> TrainConfig:
        if self.tta == "flip" and not self.flip:
            raise ValueError("tta: flip scores mirrored images too, but this model is trained without horizontal "
                             "flips (flip: false); set tta: none, or flip: true if mirror images are valid inputs")
        return self

    def engine(self) -> EngineConfig:
        return EngineConfig(**dict(self))

    def fingerprint(self, data_key: str) -> str:
        """Ties checkpoints to this config's `Recipe` and to the content of the data it trains on (`data_key`,
        from `data_fingerprint`), so a resume never mixes runs: one changed image is a new fingerprint and a
        fresh training, while a forced re-run on the same data resumes (a finished run: trains nothing)."""
        stamp = json.dumps(self.model_dump(include=set(Recipe.model_fields)), sort_keys=True) + data_key
        return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def _lr_factor(self: EngineConfig) -> float:
    """Both learning rates' multiplier: batch_size / lr_reference_batch under `lr_scaling="linear"` (Goyal et al.
    2017), else 1. Neither depends on the number of processes (`batch_size` is the global batch)."""
    return self.batch_size / self.lr_reference_batch if self.lr_scaling == "linear" else 1.0


# What the engine (`fit`) is given: TrainConfig's fields, as the frozen dataclass that tests and benchmarks
# `dataclasses.replace`, so the two cannot drift; plus validation's inference batch, how (not what) it computes.
EngineConfig = dataclasses.make_dataclass(
    "EngineConfig",
    [(name, f.annotation) if f.is_required() else (name, f.annotation, f.default)
     for name, f in TrainConfig.model_fields.items()] + [("eval_batch_size", int, 256)],
    namespace={"lr_factor": _lr_factor, "__module__": __name__}, frozen=True, kw_only=True)


def data_fingerprint(*splits: Split | stream.StreamSplit) -> str:
    """A hash of what training sees: each split's class names, decoded pixels (in sample order) and labels.

    Computed from the tensors actually loaded, so editing, adding or relabelling an image changes it even
    when nobody ran `dvc add`; a new copy of the same files on another node gives the same value.
    A streamed split is hashed by its shards' sha256s (checked against the shards by validation) and the
    samples it keeps, without reading an image."""
    digest = hashlib.blake2b(digest_size=16)
    for split in splits:
        if isinstance(split, stream.StreamSplit):
            digest.update(f"stream|{stream.fingerprint(split)}".encode())
            continue
        digest.update(json.dumps([split.classes, list(split.x.shape), len(split.y)]).encode())
        digest.update(split.x.contiguous().numpy().data)
        digest.update(split.y.contiguous().numpy().data)
    return digest.hexdigest()


def load_options(cfg: TrainConfig) -> LoadOptions:
    """How training reads its splits (headstart.data.dataset.load_or_stream decides memory or stream)."""
    return LoadOptions(mode=cfg.data_loading, memory_budget_gib=cfg.memory_budget_gib, seed=cfg.seed,
                       workers=cfg.loader_workers, shuffle_buffer=cfg.shuffle_buffer,
                       cache_dir=Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None,
                       cache_budget_gib=cfg.tensor_cache_budget_gib)
