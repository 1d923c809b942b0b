"""Train one candidate: `finetune` (pre-trained backbone) or `scratch` (random init baseline).

Under torchrun every rank runs this; rank 0 alone logs to MLflow and writes `out_dir`, the others
return the same result without writing anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from tqdm import tqdm

from headstart import storage
from headstart.config import Frozen, TrackingConfig, build, section
from headstart.data import stream
from headstart.data.dataset import Dataset, LoadOptions, load_or_stream, open_dataset
from headstart.data.imagefolder import Split
from headstart.evaluation import plots
from headstart.models import modelio
from headstart.presets import Preset
from headstart.training import congruent, distributed
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import EngineConfig, EpochStats, FitResult, fit

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
        fields = EngineConfig.__dataclass_fields__
        return EngineConfig(**{k: v for k, v in self.model_dump().items() if k in fields})

    def fingerprint(self, data_key: str) -> str:
        """Ties checkpoints to this config's `Recipe` and to the content of the data it trains on (`data_key`,
        from `data_fingerprint`), so a resume never mixes runs: one changed image is a new fingerprint and a
        fresh training, while a forced re-run on the same data resumes (a finished run: trains nothing)."""
        stamp = json.dumps(self.model_dump(include=set(Recipe.model_fields)), sort_keys=True) + data_key
        return hashlib.sha256(stamp.encode()).hexdigest()[:16]


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


def config_from_params(params: dict[str, Any], role: Role, **changes: Any) -> TrainConfig:
    """`train.shared` under `train.<role>` (the top-level `seed` when neither sets one); `changes`, for
    tests and benchmarks, apply last. An error names the key where it was written."""
    shared, own = section(params, "train.shared"), section(params, f"train.{role}")
    merged = {**shared, **own, **changes, "role": role}
    origins = {k: "train.shared" for k in shared} | {k: f"train.{role}" for k in own}
    origins |= {k: "changes" for k in changes}
    if "seed" not in merged and "seed" in params:
        merged["seed"], origins["seed"] = params["seed"], ""  # the top-level `seed`
    return build(TrainConfig, merged, f"train.{role}", origins)


@dataclass
class TrainResult:
    role: str
    model_dir: str
    run_id: str | None
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    epochs_run: int
    resumed_from: int | None
    resumed_at: str | None = None
    first_step_seconds: float | None = None  # from the step's start (data loading included) to its first update
    congruent: str | None = None  # positive-congruent training: the champion distilled from, or why none


def run(
    cfg: TrainConfig, data_dir: Path, out_dir: Path, tracking: TrackingConfig | None = None,
    champion_dir: Path | None = None,
) -> TrainResult:
    """Train on `data_dir` (an ImageFolder or a packed dataset) and write the best model to `out_dir`.

    With `cfg.congruent`, the candidate distils from the champion: `champion_dir` (a model folder), else
    the registry's champion (downloaded through `tracking`); with neither, it trains as without."""
    import torch

    from headstart.models import build_model, count_params, head_and_backbone_params

    started = time.time()
    distributed.init()
    main = distributed.is_main()
    distributed.per_rank_batch(cfg.batch_size, distributed.world_size())  # fail before any MLflow run
    data = open_dataset(data_dir)
    classes = data.classes()
    torch.manual_seed(cfg.seed)  # the head (and a scratch model) is initialised from this seed
    built = build_model(cfg.backbone, cfg.weights, len(classes), in_channels=cfg.channels)
    preset = Preset(cfg.image_size, built.in_channels, built.mean, built.std)
    train = load_or_stream(data, "train", preset, classes, cfg.images_per_class, load_options(cfg))
    val = load_or_stream(data, "val", preset, classes, cfg.val_images_per_class, load_options(cfg))
    head, backbone = head_and_backbone_params(built)
    teacher, congruent_note = _teacher(cfg, data, train, preset, classes, tracking, champion_dir)
    if main and congruent_note:
        tqdm.write(f"{cfg.role}: positive-congruent training: {congruent_note}", file=sys.stderr)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    tracking = tracking if main else None
    ckpt = None
    if cfg.checkpoint_dir:
        data_key = data_fingerprint(train, val) + (f"|teacher:{teacher[1]}" if teacher else "")
        ckpt = Checkpointer(storage.join(cfg.checkpoint_dir, cfg.role), cfg.fingerprint(data_key))

    def log_epoch(stats: EpochStats) -> None:
        if main:
            tqdm.write(f"{cfg.role} epoch {stats.epoch}/{cfg.epochs}: train loss {stats.train_loss:.3f} "
                       f"acc {stats.train_accuracy:.3f} | val acc {stats.val_accuracy:.3f} | {stats.seconds:.1f}s",
                       file=sys.stderr)
        if tracking is not None:
            import mlflow

            metrics = {k: v for k, v in asdict(stats).items() if k != "epoch"}
            mlflow.log_metrics(metrics, step=stats.epoch)

    with _tracking_run(tracking, cfg, len(train.y) if isinstance(train, Split) else len(train),
                       count_params(built.model)) as run_id:
        result = fit(built.model, head, backbone, preset, train, val, cfg.engine(), log_epoch, ckpt, cfg.role,
                     teacher[0] if teacher else None)
        first_step = None if result.first_step_unix is None else result.first_step_unix - started
        if not main:
            return _summary(cfg, out_dir, None, result, first_step, congruent_note)
        history = [asdict(h) for h in result.history]
        curve = plots.learning_curve(history, out_dir / "learning_curve.png", f"{cfg.role}: {cfg.backbone}")
        metrics = {"best_val_accuracy": result.best_val_accuracy, "train_seconds": result.seconds,
                   "best_epoch": float(result.best_epoch)}
        if first_step is not None:
            metrics["first_step_seconds"] = first_step
        card = modelio.ModelCard(arch=cfg.backbone, classes=classes, preset=preset, role=cfg.role,
                                 weights_source=cfg.weights, run_id=run_id, metrics=metrics, tta=cfg.tta)
        modelio.save(built.model, card, out_dir / "model")
        (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        if tracking is not None:
            import mlflow

            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(curve))
            mlflow.log_artifact(str(out_dir / "history.json"))
    summary = _summary(cfg, out_dir, run_id, result, first_step, congruent_note)
    (out_dir / "metrics.json").write_text(json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n")
    if ckpt is not None:
        ckpt.finish()  # succeeded and recorded: only the final checkpoint stays, older finished runs go
    return summary


def load_options(cfg: TrainConfig) -> LoadOptions:
    """How training reads its splits (headstart.data.dataset.load_or_stream decides memory or stream)."""
    return LoadOptions(mode=cfg.data_loading, memory_budget_gib=cfg.memory_budget_gib, seed=cfg.seed,
                       workers=cfg.loader_workers, shuffle_buffer=cfg.shuffle_buffer,
                       cache_dir=Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None,
                       cache_budget_gib=cfg.tensor_cache_budget_gib)


def _teacher(
    cfg: TrainConfig, data: Dataset, train: Split | stream.StreamSplit, preset: Preset, classes: tuple[str, ...],
    tracking: TrackingConfig | None, champion_dir: Path | None,
) -> tuple[tuple[congruent.Teacher, str] | None, str | None]:
    """((the champion's logits, its model digest for the checkpoint fingerprint) or None, a note for people).

    Every rank computes the same logits itself (each downloads the champion): nothing to broadcast. A streamed
    split's go to a memory-mapped file in a temporary folder, deleted on return while the map stays open."""
    import tempfile

    from headstart.evaluation import predictions
    from headstart.registry import model_registry as registry

    if not cfg.congruent:
        return None, None
    with tempfile.TemporaryDirectory(prefix="headstart-champion-") as tmp:
        source = f"champion {champion_dir}"
        if champion_dir is None and tracking is not None:
            # rank 0 first, the others after it: two ranks opening a new SQLite store raced its migration
            if not distributed.is_main():
                distributed.barrier()
            found = registry.champion_model_dir(tracking, Path(tmp) / "champion")
            if distributed.is_main():
                distributed.barrier()
            if found is not None:
                champion_dir, source = found[0], f"champion v{found[1]} of {tracking.registered_model}"
        if champion_dir is None:
            where = f"in {tracking.registered_model}" if tracking is not None else "given (no tracking)"
            return None, f"no champion {where} yet: trained without distillation"

        def reload(champion_preset: Preset) -> Split:
            how = load_options(cfg)
            return data.load("train", champion_preset, classes, cfg.images_per_class, cfg.seed, how.cache_dir,
                             int(cfg.tensor_cache_budget_gib * 2**30))

        made = congruent.teacher(champion_dir, source, train, classes, reload, cfg.congruent_weight,
                                 cfg.congruent_alpha, cfg.congruent_beta, cfg.congruent_temperature, Path(tmp))
        if isinstance(made, str):
            return None, made
        return (made, predictions.model_digest(champion_dir)), f"distilling from {source}"


def _summary(
    cfg: TrainConfig, out_dir: Path, run_id: str | None, result: FitResult, first_step: float | None = None,
    congruent_note: str | None = None,
) -> TrainResult:
    return TrainResult(
        role=cfg.role, model_dir=str(out_dir / "model"), run_id=run_id, best_epoch=result.best_epoch,
        best_val_accuracy=result.best_val_accuracy, seconds=result.seconds,
        epochs_run=len(result.history), resumed_from=result.resumed_from, resumed_at=result.resumed_at,
        first_step_seconds=first_step, congruent=congruent_note,
    )


@contextlib.contextmanager
def _tracking_run(
    tracking: TrackingConfig | None, cfg: TrainConfig, n_train: int, n_params: int
) -> Iterator[str | None]:
    """An MLflow run with the config as params, or nothing when tracking is off."""
    if tracking is None:
        yield None
        return
    import mlflow

    from headstart import tracking as trk

    tags = {"headstart.step": "train", "headstart.role": cfg.role}
    with trk.run(tracking, f"train-{cfg.role}", tags) as rid:
        params = cfg.model_dump(exclude={"checkpoint_dir"})
        world = distributed.world_size()
        params.update(train_images=n_train, parameters=n_params, world_size=world,
                      batch_size_per_rank=cfg.batch_size // world)
        mlflow.log_params({k: str(v) for k, v in params.items()})
        yield rid
