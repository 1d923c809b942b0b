"""The glibc allocator settings of `headstart.runtime.tune_allocator`, on and off.

mallopt is process-wide and cannot be undone cleanly, so every measurement is a fresh subprocess with
HEADSTART_MALLOC_TUNING=1 or 0, interleaved (on, off, off, on, ...). Each one times EfficientNet-Lite0
training steps (batch 64, 96 px, AdamW, channels_last) and inference (batch 256, 96 px) through the
engine's own `predict_logits`, and counts minor page faults and kernel time.

    python benchmarks/allocator.py              # ~2 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT = Path(__file__).parent / "results" / "allocator.json"


def worker(train_steps: int, eval_batches: int) -> dict[str, float]:
    import torch
    from torch import nn

    from headstart.models import build_model
    from headstart.presets import Preset
    from headstart.runtime import tune_allocator
    from headstart.training.engine import predict_logits

    tuned = tune_allocator()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    built = build_model("efficientnet_lite0", "imagenet", 10)
    model = built.model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(64, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn, n_images: int) -> dict[str, float]:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        return {"images_per_s": n_images / dt, "sys_s": r1.ru_stime - r0.ru_stime,
                "minor_faults": float(r1.ru_minflt - r0.ru_minflt)}

    model.train()
    step()  # warm-up
    train = timed(lambda: [step() for _ in range(train_steps)], 64 * train_steps)
    preset = Preset(96, 3, built.mean, built.std)
    images = torch.randint(0, 256, (256 * eval_batches, 96, 96, 3), dtype=torch.uint8)
    predict_logits(model, preset, images[:256], 256)  # warm-up
    infer = timed(lambda: predict_logits(model, preset, images, 256), len(images))
    return {"tuned": float(tuned), **{f"train_{k}": v for k, v in train.items()},
            **{f"eval_{k}": v for k, v in infer.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--eval-batches", type=int, default=6)
    ap.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.train_steps, args.eval_batches)))
        return
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for r in range(args.rounds):
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            env = {**os.environ, "HEADSTART_MALLOC_TUNING": "1" if mode == "on" else "0",
                   "OMP_WAIT_POLICY": "PASSIVE", "HEADSTART_NO_PROGRESS": "1"}
            out = subprocess.run([sys.executable, __file__, "--worker", mode, "--train-steps", str(args.train_steps),
                                  "--eval-batches", str(args.eval_batches)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
            print(mode, runs[mode][-1], flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "median": med,
        "ratio_on_over_off": {k: med["on"][f"{k}_images_per_s"] / med["off"][f"{k}_images_per_s"]
                              for k in ("train", "eval")},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratio_on_over_off"]), "->", args.out)


if __name__ == "__main__":
    main()
