"""Train one candidate: `finetune` (pre-trained backbone) or `scratch` (random init baseline).

Under torchrun every rank runs this; rank 0 alone logs to MLflow and writes `out_dir`, the others
return the same result without writing anything.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from headstart import storage
from headstart import tracking as trk
from headstart.config import TrackingConfig, build, section
from headstart.data.dataset import load_or_stream, open_dataset
from headstart.data.imagefolder import Split
from headstart.evaluation import plots
from headstart.models import modelio
from headstart.presets import Preset
from headstart.training import congruent, distributed
from headstart.training.checkpoint import Checkpointer
from headstart.training.engine import EpochStats, fit
from headstart.training.recipe import Role, TrainConfig, data_fingerprint, load_options


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
    teacher, congruent_note = congruent.for_run(cfg, data, train, classes, tracking, champion_dir)
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

    world = distributed.world_size()
    params = {**cfg.model_dump(exclude={"checkpoint_dir"}), "parameters": count_params(built.model),
              "train_images": len(train.y) if isinstance(train, Split) else len(train), "world_size": world,
              "batch_size_per_rank": cfg.batch_size // world}
    with trk.run(tracking, f"train-{cfg.role}", {"headstart.step": "train", "headstart.role": cfg.role},
                 params) as run_id:
        result = fit(built.model, head, backbone, preset, train, val, cfg.engine(), log_epoch, ckpt, cfg.role,
                     teacher[0] if teacher else None)
        first_step = None if result.first_step_unix is None else result.first_step_unix - started
        summary = TrainResult(role=cfg.role, model_dir=str(out_dir / "model"), run_id=run_id,
                              best_epoch=result.best_epoch, best_val_accuracy=result.best_val_accuracy,
                              seconds=result.seconds, epochs_run=len(result.history), resumed_from=result.resumed_from,
                              resumed_at=result.resumed_at, first_step_seconds=first_step, congruent=congruent_note)
        if not main:  # run_id is None: only rank 0 tracks
            return summary
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
    (out_dir / "metrics.json").write_text(json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n")
    if ckpt is not None:
        ckpt.finish()  # succeeded and recorded: only the final checkpoint stays, older finished runs go
    return summary
