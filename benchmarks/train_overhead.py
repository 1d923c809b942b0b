"""Training-loop overhead: Headstart's `engine.fit` against a minimal plain-PyTorch loop.

Same model (copied from one initial state), same pre-decoded uint8 tensors, batch size, AdamW, loss and
thread count; runs are interleaved (ABC, CBA, ...) so machine load hits all variants alike. The engine
runs with augmentation off (like the plain loop) and, for information, with it on. Its per-epoch
validation uses a token 20-image split; everything `fit` does (scheduler, metrics, best-state copies) counts.
Also reports achieved training FLOP/s (3 x forward FLOPs per image) against this machine's fp32 matmul peak,
measured in the same run.

    python benchmarks/train_overhead.py                    # ~3 min on 2 idle cores
    python benchmarks/train_overhead.py --rounds 5 --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: robust on a shared CPU

import torch  # noqa: E402
from torch import nn  # noqa: E402

from headstart.config import load_params  # noqa: E402
from headstart.data.imagefolder import Split, list_classes, load_split  # noqa: E402
from headstart.models import build_model, flops, head_and_backbone_params  # noqa: E402
from headstart.presets import Preset  # noqa: E402
from headstart.steps import train as train_step  # noqa: E402
from headstart.training.engine import EngineConfig, fit  # noqa: E402

RESULT = Path(__file__).parent / "results" / "train_overhead.json"
# (arch, weights, image size, channels, images): the fine-tune candidate and the small native-28 px CNN.
MODELS = [("efficientnet_lite0", "imagenet", 64, 3, 320), ("small_cnn", None, 28, 1, 1280)]


def matmul_peak(threads: int, size: int = 1024, seconds: float = 2.0) -> float:
    """Best fp32 GFLOP/s of square matmuls over `seconds` with `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


def plain_loop(model: nn.Module, preset: Preset, train: Split, cfg: EngineConfig) -> None:
    """The reference: what one would write by hand."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr_backbone, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(train.x), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = loss_fn(model(preset.normalize(train.x[idx])), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def augment_micro(engine_file: Path, threads: int, calls: int = 40) -> dict[str, Any]:
    """ms per call of the batched shift+flip augmentation (64x3x64x64), this engine vs `engine_file`."""
    from headstart.training.engine import augment

    torch.set_num_threads(threads)
    old = _load_module(engine_file).augment
    x = torch.randn(64, 3, 64, 64)
    same = torch.equal(
        augment(x, torch.Generator().manual_seed(1), 0.1, True), old(x, torch.Generator().manual_seed(1), 0.1, True)
    )
    times: dict[str, list[float]] = {"before": [], "after": []}
    gens = {k: torch.Generator().manual_seed(0) for k in times}
    for i in range(calls):
        for name, fn in (("before", old), ("after", augment)) if i % 2 == 0 else (("after", augment), ("before", old)):
            t = time.perf_counter()
            fn(x, gens[name], 0.1, True)
            times[name].append(time.perf_counter() - t)
    ms = {k: round(1e3 * statistics.median(v), 2) for k, v in times.items()}
    return {"median_ms": ms, "speedup": round(ms["before"] / ms["after"], 2), "bit_identical": same}


def _load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("engine_compared", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def bench_model(
    arch: str, weights: str | None, size: int, channels: int, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    classes = list_classes(args.data)
    torch.manual_seed(0)
    built = build_model(arch, weights, len(classes), in_channels=channels)
    preset = Preset(size, channels, built.mean, built.std)
    train = load_split(args.data, "train", preset, classes, n // len(classes), 0)
    val = load_split(args.data, "val", preset, classes, 2, 0)
    pristine = copy.deepcopy(built.model.state_dict())
    base = train_step.config_from_params(load_params(), "scratch", epochs=args.epochs, batch_size=args.batch_size,
                                         patience=args.epochs + 1, threads=args.threads).engine()
    variants = {
        "plain": None,
        "engine": EngineConfig(**{**base.__dict__, "augment": False}),
        "engine_augment": base,
    }
    fits = {"engine": fit, "engine_augment": fit}
    if args.compare_engine is not None:
        variants["before_engine_augment"] = base
        fits["before_engine_augment"] = _load_module(args.compare_engine).fit
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            built.model.load_state_dict(pristine)
            torch.set_num_threads(args.threads)
            cfg = variants[name]
            t = time.perf_counter()
            if cfg is None:
                plain_loop(built.model, preset, train, base)
            else:
                head, backbone = head_and_backbone_params(built)
                fits[name](built.model, head, backbone, preset, train, val, cfg)
            times[name].append(time.perf_counter() - t)
            print(f"  {arch} round {r} {name}: {times[name][-1]:.2f}s", file=sys.stderr)
    images = len(train.x) * args.epochs
    rate = {k: images / statistics.median(v) for k, v in times.items()}
    fwd = flops(built.model, (channels, size, size))
    return {
        "arch": arch,
        "image_size": size,
        "train_images": len(train.x),
        "epochs": args.epochs,
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_engine_vs_plain": round(rate["engine"] / rate["plain"], 3),
        "ratio_engine_augment_vs_plain": round(rate["engine_augment"] / rate["plain"], 3),
        **(
            {"ratio_engine_augment_vs_before": round(rate["engine_augment"] / rate["before_engine_augment"], 3)}
            if "before_engine_augment" in rate
            else {}
        ),
        "paired_ratios": [round(p / e, 3) for p, e in zip(times["plain"], times["engine"], strict=True)],
        "forward_gflops_per_image": round(fwd / 1e9, 4),
        "train_gflop_per_s_engine": round(3 * fwd * rate["engine"] / 1e9, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--compare-engine", type=Path, default=None, help="another engine.py (e.g. the pre-fix one)")
    ap.add_argument("--micro-only", action="store_true", help="only the augmentation micro-benchmark")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    micro = augment_micro(args.compare_engine, args.threads) if args.compare_engine else None
    if args.micro_only:
        print(json.dumps(micro, indent=2))
        return
    peaks = [matmul_peak(args.threads)]
    rows = []
    for spec in MODELS:
        rows.append(bench_model(*spec, args))
        peaks.append(matmul_peak(args.threads))
    peak = max(peaks)
    for row in rows:
        row["fraction_of_matmul_peak"] = round(row["train_gflop_per_s_engine"] / peak, 3)
    result = {
        "command": "python benchmarks/train_overhead.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "matmul_peak_gflop_per_s": [round(p, 1) for p in peaks],
        "load_avg": os.getloadavg(),
        "torch": torch.__version__,
        "models": rows,
        "augment_micro": micro,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
