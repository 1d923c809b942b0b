"""Input pipeline: images/s of `load_split` (decode + preset) against what training consumes.

Per preset (EfficientNet-Lite0 at 64 px RGB; the small CNN at 28 px grayscale), interleaved rounds of:
  decode      load_split without a cache (what every run paid before the tensor cache)
  cache_cold  load_split with an empty cache dir: hash the files, decode, write the .npy
  cache_warm  load_split again on that dir: hash the files, read the .npy
  train       engine.fit images/s on the same tensors (augmentation on, the params.yaml defaults)
Target: the loader >= 3x the training rate, so it is never the bottleneck.

    python benchmarks/input_pipeline.py                  # ~2 min on 2 cores
    python benchmarks/input_pipeline.py --per-class 0    # the whole train split (54,992 images)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: robust on a shared CPU

import torch  # noqa: E402

from headstart.config import load_params  # noqa: E402
from headstart.data.imagefolder import list_classes, load_split  # noqa: E402
from headstart.models import build_model, head_and_backbone_params  # noqa: E402
from headstart.presets import Preset  # noqa: E402
from headstart.steps import train as train_step  # noqa: E402
from headstart.training.engine import fit  # noqa: E402

RESULT = Path(__file__).parent / "results" / "input_pipeline.json"
MODELS = [("efficientnet_lite0", "imagenet", 64, 3), ("small_cnn", None, 28, 1)]


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench(arch: str, weights: str | None, size: int, channels: int, args: argparse.Namespace) -> dict[str, Any]:
    classes = list_classes(args.data)
    built = build_model(arch, weights, len(classes), in_channels=channels)
    preset = Preset(size, channels, built.mean, built.std)
    per_class = args.per_class or None
    times: dict[str, list[float]] = {"decode": [], "cache_cold": [], "cache_warm": [], "train": []}
    n_images = n_train = 0
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            t, split = _timed(lambda: load_split(args.data, "train", preset, classes, per_class, 0))
            times["decode"].append(t)
            t, cold = _timed(lambda c=cache: load_split(args.data, "train", preset, classes, per_class, 0, Path(c)))
            times["cache_cold"].append(t)
            t, warm = _timed(lambda c=cache: load_split(args.data, "train", preset, classes, per_class, 0, Path(c)))
            times["cache_warm"].append(t)
            assert torch.equal(split.x, cold.x) and torch.equal(split.x, warm.x), "cache changed the tensors"
        n_images = len(split.x)
        sub = load_split(args.data, "train", preset, classes, args.train_per_class, r)
        val = load_split(args.data, "val", preset, classes, 2, 0)
        cfg = train_step.config_from_params(load_params(), "scratch", epochs=1, batch_size=64, patience=2,
                                            threads=args.threads).engine()
        t, _ = _timed(lambda s=sub, v=val, c=cfg: fit(built.model, *head_and_backbone_params(built), preset, s, v, c))
        times["train"].append(t)
        n_train = len(sub.x)
        print(f"  {arch} round {r}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr)
    rate = {k: (n_train if k == "train" else n_images) / statistics.median(v) for k, v in times.items()}
    return {
        "arch": arch,
        "image_size": size,
        "channels": channels,
        "loaded_images": n_images,
        "train_images_per_round": n_train,
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_decode_vs_train": round(rate["decode"] / rate["train"], 1),
        "ratio_cache_warm_vs_train": round(rate["cache_warm"] / rate["train"], 1),
        "speedup_warm_vs_decode": round(rate["cache_warm"] / rate["decode"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--per-class", type=int, default=300, help="images per class to load; 0 = the whole split")
    ap.add_argument("--train-per-class", type=int, default=32, help="images per class for the training-rate run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "command": "python benchmarks/input_pipeline.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "torch": torch.__version__,
        "models": [bench(*spec, args) for spec in MODELS],
        "load_avg": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
