"""GPU fine-tuning throughput at 224 px: bf16 autocast, channels_last, optionally torch.compile.

For EfficientNet-Lite0 and ResNet-50 (random init: throughput does not depend on the weights), measures
  loader      a DataLoader decoding real PNGs with the training preset (workers, pinned memory,
              persistent workers): images/s on its own
  synthetic   training steps on a batch already on the GPU: the model's ceiling
  fed         training steps fed by that DataLoader (uint8 NHWC -> GPU -> normalise, as the engine does)
  engine      headstart.training.engine.fit on pre-decoded uint8 tensors held on the GPU (the product's path)
  sharded     training steps fed from WebDataset shards through headstart.data.stream (issue 16: the
              workers read and decode with the preset, pinned memory, non-blocking copies), on synthetic
              224 px JPEGs (benchmarks/data_scale.py's generator, packed with `headstart data pack`);
              the issue's target for ResNet-50 bf16 on one H200: >= 2,500 img/s at >= 90% utilisation
and GPU utilisation sampled with nvidia-smi during the fed, engine and sharded runs. Exits 0 with a
message when CUDA is not available (`--smoke` runs the sharded path on the CPU, tiny, to check it works).

    python benchmarks/gpu_throughput.py                      # ~3-5 min on one H100/H200-class GPU
    python benchmarks/gpu_throughput.py --compile --batch-size 256 --steps 60
    python benchmarks/gpu_throughput.py --paths sharded --archs resnet50 --batch-size 256   # shards only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from headstart.config import load_params  # noqa: E402
from headstart.data.imagefolder import list_classes, list_split, load_split, per_class_subset  # noqa: E402
from headstart.models import build_model, head_and_backbone_params  # noqa: E402
from headstart.presets import Preset  # noqa: E402
from headstart.steps import train as train_step  # noqa: E402
from headstart.training.engine import fit  # noqa: E402

RESULT = Path(__file__).parent / "results" / "gpu_throughput.json"
SHARDED_TARGET = {"images_per_s": 2500, "gpu_utilisation_pct": 90}  # issue 16: ResNet-50 bf16, one H200
ARCHS = ("efficientnet_lite0", "resnet50")


class Decoded(Dataset):
    """Decodes one image per item with the training preset: the per-epoch path for large images."""

    def __init__(self, items: list[tuple[Path, int]], preset: Preset) -> None:
        self.items, self.preset = items, preset

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        return torch.from_numpy(np.ascontiguousarray(self.preset.decode(path))), label


class Utilisation:
    """Samples `nvidia-smi` GPU utilisation every `period` seconds in a background thread."""

    def __init__(self, period: float = 0.2) -> None:
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.is_set():
            try:
                self.samples.append(float(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout))
            except (OSError, ValueError, subprocess.SubprocessError):
                if torch.cuda.is_available():
                    try:
                        self.samples.append(float(torch.cuda.utilization()))
                    except Exception:  # noqa: BLE001 - pynvml missing: no samples
                        return
            time.sleep(self.period)

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self) -> float | None:
        return round(statistics.mean(self.samples), 1) if self.samples else None


def _step_fn(model: nn.Module, preset: Preset, compile_model: bool, device_type: str = "cuda") -> Any:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    fwd = torch.compile(model) if compile_model else model

    def step(x_uint8: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = preset.normalize(x_uint8).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            loss = loss_fn(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def _rate(images: int, seconds: float) -> float:
    return round(images / seconds, 1)


def bench(arch: str, args: argparse.Namespace, items: list[tuple[Path, int]], classes: tuple[str, ...]) -> dict:
    dev = torch.device("cuda")
    built = build_model(arch, None, len(classes))
    preset = Preset(args.image_size, 3, built.mean, built.std)
    model = built.model.to(dev, memory_format=torch.channels_last).train()
    step = _step_fn(model, preset, args.compile)
    bs = args.batch_size
    out: dict[str, Any] = {"arch": arch, "batch_size": bs, "image_size": args.image_size}
    loader = DataLoader(
        Decoded(items, preset),
        batch_size=bs,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=True,
        persistent_workers=args.workers > 0,
        drop_last=True,
        prefetch_factor=4 if args.workers > 0 else None,
    )
    # loader alone (a first pass warms the workers up)
    t, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        n += len(x)
        if i + 1 >= args.steps:
            break
    out["loader_images_per_s"] = _rate(n, time.perf_counter() - t)
    # synthetic: the model's ceiling
    x = torch.randint(0, 256, (bs, args.image_size, args.image_size, 3), dtype=torch.uint8, device=dev)
    y = torch.randint(0, len(classes), (bs,), device=dev)
    for _ in range(args.warmup):
        step(x, y)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        step(x, y)
    torch.cuda.synchronize()
    out["synthetic_images_per_s"] = _rate(bs * args.steps, time.perf_counter() - t)
    # fed by the decoding DataLoader
    with Utilisation() as util:
        t, n = time.perf_counter(), 0
        for i, (xb, yb) in enumerate(loader):
            step(xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True))
            n += len(xb)
            if i + 1 >= args.steps:
                break
        torch.cuda.synchronize()
        out["fed_images_per_s"] = _rate(n, time.perf_counter() - t)
    out["fed_gpu_utilisation_pct"] = util.mean()
    out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del loader
    return out


def bench_engine(arch: str, args: argparse.Namespace, data: Path, classes: tuple[str, ...]) -> dict[str, Any]:
    """The product's path: engine.fit on pre-decoded uint8 tensors (moved to the GPU by fit)."""
    built = build_model(arch, None, len(classes))
    preset = Preset(args.image_size, 3, built.mean, built.std)
    train = load_split(data, "train", preset, classes, args.engine_per_class, 0)
    val = load_split(data, "val", preset, classes, 10, 0)
    cfg = train_step.config_from_params(load_params(), "scratch", epochs=2, batch_size=args.batch_size,
                                        patience=3).engine()
    with Utilisation() as util:
        res = fit(built.model, *head_and_backbone_params(built), preset, train, val, cfg)
    last = res.history[-1].seconds  # the second epoch: no first-call warm-up
    return {"arch": arch, "engine_images_per_s": _rate(len(train.x), last), "engine_gpu_utilisation_pct": util.mean()}


def sharded_dataset(images: int, shard_size: str) -> Path:
    """Synthetic 224 px JPEGs in 10 classes, packed (cached under .headstart/bench/data_scale/)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import data_scale

    counts = {"train": images, "val": 10, "test": 10}
    folder = data_scale.imagefolder(f"if-{images}-10-10-224px", counts, 224, 0, os.cpu_count() or 1)
    return data_scale.packed(folder, shard_size)[0]


def bench_sharded(arch: str, args: argparse.Namespace, root: Path, dev: torch.device) -> dict[str, Any]:
    """Training steps fed from shards by headstart.data.stream: loader alone, then loader + steps."""
    from headstart.data import stream

    built = build_model(arch, None, 10)
    preset = Preset(args.image_size, 3, built.mean, built.std)
    model = built.model.to(dev, memory_format=torch.channels_last).train()
    step = _step_fn(model, preset, args.compile, dev.type)
    bs = args.batch_size
    data = stream.open_split(str(root), "train", preset, seed=0, workers=args.workers)

    def batches() -> Any:
        epoch = 0
        while True:  # epochs back to back, as training runs them (workers restart per epoch)
            yield from stream.epoch_batches(data, epoch, bs, 0, 1, steps=0, device=dev)
            epoch += 1

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    out: dict[str, Any] = {"arch": arch, "batch_size": bs, "image_size": args.image_size, "workers": args.workers,
                           "shards": data.parts, "images": len(data)}
    it = batches()
    next(it)  # workers started
    t = time.perf_counter()
    for _ in range(args.steps):
        next(it)
    out["sharded_loader_images_per_s"] = _rate(bs * args.steps, time.perf_counter() - t)
    for _ in range(args.warmup):
        step(*next(it))
    sync()
    with Utilisation() as util:
        t = time.perf_counter()
        for _ in range(args.steps):
            step(*next(it))
        sync()
        out["sharded_images_per_s"] = _rate(bs * args.steps, time.perf_counter() - t)
    out["sharded_gpu_utilisation_pct"] = util.mean()
    if dev.type == "cuda":
        out["sharded_target"] = SHARDED_TARGET
        out["sharded_target_met"] = (out["sharded_images_per_s"] >= SHARDED_TARGET["images_per_s"]
                                     and (util.mean() or 0) >= SHARDED_TARGET["gpu_utilisation_pct"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--engine-per-class", type=int, default=300, help="0 = skip the engine.fit measurement")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (adds compile time)")
    ap.add_argument("--paths", nargs="+", default=["folder", "sharded"], choices=["folder", "sharded"],
                    help="folder: the ImageFolder measurements (--data); sharded: fed from shards")
    ap.add_argument("--shard-images", type=int, default=20000, help="synthetic 224 px JPEGs for the sharded path")
    ap.add_argument("--shard-size", default="32MB", help="enough shards for every worker to get some")
    ap.add_argument("--smoke", action="store_true", help="no GPU needed: the sharded path on the CPU, tiny, not saved")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    if args.smoke:
        args.image_size, args.batch_size, args.steps, args.warmup, args.workers = 64, 8, 3, 1, 2
        root = sharded_dataset(160, "256KB")
        print(json.dumps(bench_sharded("resnet50", args, root, torch.device("cpu"))))
        return
    if not torch.cuda.is_available():
        print("gpu_throughput: CUDA is not available on this machine; nothing measured.")
        return
    torch.backends.cudnn.benchmark = True
    rows = []
    folder = "folder" in args.paths and args.data.is_dir()
    if "folder" in args.paths and not folder:
        print(f"gpu_throughput: {args.data} is not an ImageFolder here; the folder measurements are skipped.")
    root = sharded_dataset(args.shard_images, args.shard_size) if "sharded" in args.paths else None
    for arch in args.archs:
        row: dict[str, Any] = {"arch": arch}
        if folder:
            classes = list_classes(args.data)
            items = per_class_subset(list_split(args.data, "train", classes), None, 0)
            row.update(bench(arch, args, items, classes))
            if args.engine_per_class:
                row.update(bench_engine(arch, args, args.data, classes))
        if root is not None:
            row.update(bench_sharded(arch, args, root, torch.device("cuda")))
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "command": "python benchmarks/gpu_throughput.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "compile": args.compile,
        "workers": args.workers,
        "paths": args.paths,
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
