"""Train one candidate: `finetune` (pre-trained backbone) or `scratch` (random init baseline).

Under torchrun every rank runs this; rank 0 alone logs to MLflow and writes `out_dir`, the others
return the same result without writing anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from tqdm import tqdm

from headstart import distributed, modelio, plots, storage
from headstart.checkpoint import Checkpointer
from headstart.config import Frozen, TrackingConfig, build, section
from headstart.data.imagefolder import list_classes, load_split
from headstart.engine import EngineConfig, EpochStats, FitResult, fit
from headstart.presets import Preset

Role = Literal["finetune", "scratch"]


class TrainConfig(Frozen):
    role: Role
    backbone: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    image_size: int = 64
    channels: int = 3
    images_per_class: int | None = 100
    val_images_per_class: int | None = 100
    epochs: int = 8
    batch_size: int = 64  # global: split evenly across torchrun processes
    lr_scaling: Literal["none", "linear"] = "none"  # linear: LRs x batch_size / lr_reference_batch
    lr_reference_batch: int = 64
    lr_head: float = 3e-3
    lr_backbone: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    probe_epochs: int = 0
    patience: int = 3
    augment: bool = True
    flip: bool = True
    max_shift: float = 0.1
    tta: Literal["none", "flip"] = "none"  # test-time augmentation the saved model predicts with (flip: mirrored too)
    seed: int = 42
    threads: int | None = None
    checkpoint_dir: str | None = ".headstart/checkpoints"
    checkpoint_every_steps: int = Field(0, ge=0)  # also mid-epoch, every N optimizer steps; 0 = epoch ends only
    tensor_cache_dir: str | None = ".headstart/cache/tensors"  # decoded uint8 splits keyed by content hash

    @model_validator(mode="after")
    def _tta_matches_training(self) -> TrainConfig:
        if self.tta == "flip" and not self.flip:
            raise ValueError("tta: flip scores mirrored images too, but this model is trained without horizontal "
                             "flips (flip: false); set tta: none, or flip: true if mirror images are valid inputs")
        return self

    def engine(self) -> EngineConfig:
        fields = EngineConfig.__dataclass_fields__
        return EngineConfig(**{k: v for k, v in self.model_dump().items() if k in fields})

    def fingerprint(self, data_dir: Path) -> str:
        """Ties checkpoints to this config and this dataset version, so a resume never mixes runs."""
        how = {"checkpoint_dir", "checkpoint_every_steps", "threads", "tensor_cache_dir", "tta"}  # not the training
        stamp = json.dumps(self.model_dump(exclude=how), sort_keys=True)
        dvc_file = data_dir.with_suffix(".dvc")
        stamp += dvc_file.read_text() if dvc_file.is_file() else str(data_dir.resolve())
        return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def config_from_params(params: dict[str, Any], role: Role) -> TrainConfig:
    merged = {**section(params, "train.shared"), **section(params, f"train.{role}"), "role": role}
    if "seed" not in merged and "seed" in params:
        merged["seed"] = params["seed"]
    return build(TrainConfig, merged, f"train.{role}")


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


def run(
    cfg: TrainConfig, data_dir: Path, out_dir: Path, tracking: TrackingConfig | None = None
) -> TrainResult:
    """Train on `data_dir` (ImageFolder) and write the best model to `out_dir`."""
    import torch

    from headstart.models import build_model, count_params, head_and_backbone_params

    distributed.init()
    main = distributed.is_main()
    distributed.per_rank_batch(cfg.batch_size, distributed.world_size())  # fail before any MLflow run
    classes = list_classes(data_dir)
    torch.manual_seed(cfg.seed)  # the head (and a scratch model) is initialised from this seed
    built = build_model(cfg.backbone, cfg.weights, len(classes), in_channels=cfg.channels)
    preset = Preset(cfg.image_size, built.in_channels, built.mean, built.std)
    cache = Path(cfg.tensor_cache_dir) if cfg.tensor_cache_dir else None
    train = load_split(data_dir, "train", preset, classes, cfg.images_per_class, cfg.seed, cache_dir=cache)
    val = load_split(data_dir, "val", preset, classes, cfg.val_images_per_class, cfg.seed, cache_dir=cache)
    head, backbone = head_and_backbone_params(built)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    tracking = tracking if main else None
    ckpt = None
    if cfg.checkpoint_dir:
        ckpt = Checkpointer(storage.join(cfg.checkpoint_dir, cfg.role), cfg.fingerprint(data_dir))

    def log_epoch(stats: EpochStats) -> None:
        if main:
            tqdm.write(f"{cfg.role} epoch {stats.epoch}/{cfg.epochs}: train loss {stats.train_loss:.3f} "
                       f"acc {stats.train_accuracy:.3f} | val acc {stats.val_accuracy:.3f} | {stats.seconds:.1f}s",
                       file=sys.stderr)
        if tracking is not None:
            import mlflow

            metrics = {k: v for k, v in asdict(stats).items() if k != "epoch"}
            mlflow.log_metrics(metrics, step=stats.epoch)

    with _tracking_run(tracking, cfg, len(train.y), count_params(built.model)) as run_id:
        result = fit(built.model, head, backbone, preset, train, val, cfg.engine(), log_epoch, ckpt, cfg.role)
        if not main:
            return _summary(cfg, out_dir, None, result)
        history = [asdict(h) for h in result.history]
        curve = plots.learning_curve(history, out_dir / "learning_curve.png", f"{cfg.role}: {cfg.backbone}")
        metrics = {"best_val_accuracy": result.best_val_accuracy, "train_seconds": result.seconds,
                   "best_epoch": float(result.best_epoch)}
        card = modelio.ModelCard(arch=cfg.backbone, classes=classes, preset=preset, role=cfg.role,
                                 weights_source=cfg.weights, run_id=run_id, metrics=metrics, tta=cfg.tta)
        modelio.save(built.model, card, out_dir / "model")
        (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        if tracking is not None:
            import mlflow

            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(curve))
            mlflow.log_artifact(str(out_dir / "history.json"))
    summary = _summary(cfg, out_dir, run_id, result)
    (out_dir / "metrics.json").write_text(json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n")
    return summary


def _summary(cfg: TrainConfig, out_dir: Path, run_id: str | None, result: FitResult) -> TrainResult:
    return TrainResult(
        role=cfg.role, model_dir=str(out_dir / "model"), run_id=run_id, best_epoch=result.best_epoch,
        best_val_accuracy=result.best_val_accuracy, seconds=result.seconds,
        epochs_run=len(result.history), resumed_from=result.resumed_from, resumed_at=result.resumed_at,
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
