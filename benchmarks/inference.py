"""Inference throughput of the evaluate/serving path, BatchNorm folded (`modelio.load`'s default) vs not.

Times the engine's own `predict_logits` (batch 256, flip TTA as `make run` scores, 2 threads) on real
Fashion-MNIST test images decoded with each model's preset, interleaved (plain, folded, folded, plain, ...),
best and median of the rounds. Models: EfficientNet-Lite0 with the offline ImageNet weights at 96 px (the
`make run` candidates' architecture and size), the small CNN at 28 px and ResNet-18 at 96 px (random
BatchNorm statistics, as after training). If `outputs/<role>/model` exists (after `make run`), the trained
models are scored on the whole test split both ways and their agreement is recorded. bf16 autocast on CPU is
measured for reference only (not applied: it changes predictions, see the README).

    python benchmarks/inference.py               # ~5 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from headstart.data.imagefolder import load_split  # noqa: E402
from headstart.models import build_model  # noqa: E402
from headstart.models.fold import fold_batchnorm  # noqa: E402
from headstart.presets import Preset  # noqa: E402
from headstart.runtime import tune_allocator  # noqa: E402
from headstart.training.engine import predict_logits  # noqa: E402

RESULT = Path(__file__).parent / "results" / "inference.json"
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle_boot")


def _trained_like(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _bf16(model: nn.Module):
    def run(preset: Preset, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return predict_logits(model, preset, x, 256, tta="flip")
    return run


def measure(name: str, model: nn.Module, preset: Preset, x: torch.Tensor, rounds: int, bf16: bool) -> dict:
    probe = torch.randn(2, preset.channels, preset.image_size, preset.image_size)
    folded = fold_batchnorm(model, probe)
    assert folded is not model, f"{name}: folding fell back"
    variants = {"plain": lambda p, v: predict_logits(model, p, v, 256, tta="flip"),
                "folded": lambda p, v: predict_logits(folded, p, v, 256, tta="flip")}
    if bf16:
        variants["bf16_autocast_plain"] = _bf16(model)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    for r in range(rounds):
        order = list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]
        for key, fn in order:
            t0 = time.perf_counter()
            outputs[key] = fn(preset, x)
            rates[key].append(len(x) / (time.perf_counter() - t0))
    ref = outputs["plain"]
    row = {"images": len(x), "image_size": preset.image_size, "rounds": rounds}
    for key, vals in rates.items():
        row[key] = {"images_per_s_best": round(max(vals), 1), "images_per_s_median": round(statistics.median(vals), 1),
                    "ratio_best_vs_plain": round(max(vals) / max(rates["plain"]), 3),
                    "ratio_median_vs_plain": round(statistics.median(vals) / statistics.median(rates["plain"]), 3),
                    "max_abs_logit_diff_vs_plain": float((outputs[key] - ref).abs().max()),
                    "argmax_agreement_vs_plain": float((outputs[key].argmax(1) == ref.argmax(1)).float().mean())}
    rates_text = (f"{k} {row[k]['images_per_s_median']:.0f} img/s (x{row[k]['ratio_median_vs_plain']:.2f})"
                  for k in variants)
    print(f"{name}: " + ", ".join(rates_text))
    return row


def trained(role: str, data: Path, cache: Path) -> dict | None:
    from headstart.models import modelio

    folder = Path("outputs") / role / "model"
    if not (folder / modelio.CARD_FILE).is_file():
        return None
    plain, card = modelio.load(folder, fold=False)
    folded, _ = modelio.load(folder)
    test = load_split(data, "test", card.preset, card.classes, cache_dir=cache)
    a = predict_logits(plain, card.preset, test.x, 256, tta=card.tta)
    b = predict_logits(folded, card.preset, test.x, 256, tta=card.tta)
    row = {"images": len(test.y), "tta": card.tta, "max_abs_logit_diff": float((a - b).abs().max()),
           "max_abs_logit": float(a.abs().max()),
           "argmax_agreement": int((a.argmax(1) == b.argmax(1)).sum()),
           "accuracy_plain": float((a.argmax(1) == test.y).float().mean()),
           "accuracy_folded": float((b.argmax(1) == test.y).float().mean())}
    print(f"trained {role}: {row}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--images", type=int, default=1024, help="test images per timed call")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(".headstart/cache/tensors"))
    args = parser.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()
    cases = [("efficientnet_lite0 (ImageNet weights), 96 px", "efficientnet_lite0", "imagenet", 3, 96, True),
             ("small_cnn, 28 px gray", "small_cnn", None, 1, 28, False),
             ("resnet18, 96 px", "resnet18", None, 3, 96, False)]
    rows = {}
    for name, arch, weights, channels, size, bf16 in cases:
        built = build_model(arch, weights, len(CLASSES), in_channels=channels)
        model = built.model.eval() if weights else _trained_like(built.model)
        preset = Preset(size, channels, built.mean, built.std)
        test = load_split(args.data, "test", preset, CLASSES, cache_dir=args.cache)
        rows[name] = measure(name, model, preset, test.x[: args.images], args.rounds, bf16)
    result = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "threads": args.threads, "torch": torch.__version__, "load_avg_start": load,
              "models": rows, "trained": {r: trained(r, args.data, args.cache) for r in ("finetune", "scratch")},
              "load_avg_end": os.getloadavg()}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
