"""Validation throughput: images per second for a cold run (empty cache) and a warm run.

Each run is a fresh Python process, so interpreter start and imports (GX takes seconds) count,
as they do for `headstart validate`. Usage:

    python benchmarks/validation_throughput.py [--data data] [--workers 0] [--out benchmarks/results/...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = Path(__file__).parent / "results" / "validation_throughput.json"


def _single(data: Path, cache: Path, out: Path, workers: int) -> dict:
    from headstart.config import load_params
    from headstart.steps.validate import run
    from headstart.validation.config import config_from_params

    # params.yaml's checks, without its label set and class minimum (as the benchmark always measured)
    cfg = config_from_params(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), label_set=None,
                             min_images_per_class=1, cache_dir=cache, state_dir=None, workers=workers)
    start = time.perf_counter()
    result = run(cfg, data, out)
    return {
        "step_s": round(time.perf_counter() - start, 3),
        "n_images": result.n_images,
        "scan": result.scan,
        "passed": result.passed,
        "not_passing": {c.name: c.status for c in result.checks if c.status != "pass"},
    }


def _measure(data: Path, cache: Path, out: Path, workers: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--single",
        "--data",
        str(data),
        "--cache",
        str(cache),
        "--out-dir",
        str(out),
        "--workers",
        str(workers),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_s"] = round(time.perf_counter() - start, 3)
    row["images_per_s"] = round(row["n_images"] / row["process_s"], 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--workers", type=int, default=0, help="decode processes; 0 = one per CPU")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(_single(args.data, args.cache, args.out_dir, args.workers)))
        return
    if not args.data.is_dir():
        sys.exit(f"{args.data}: no dataset here; run `headstart data import-fashion-mnist` or pass --data")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="headstart-bench-") as tmp:
        cache = Path(tmp) / "cache"
        cold = _measure(args.data, cache, Path(tmp) / "cold", args.workers)
        warm = _measure(args.data, cache, Path(tmp) / "warm", args.workers)
    report = {
        "benchmark": "validation_throughput",
        "data": str(args.data),
        "n_images": cold["n_images"],
        "cpu_count": os.cpu_count(),
        "workers": cold["scan"]["workers"],
        "python": platform.python_version(),
        "load_avg_1m_before": round(load_before, 2),  # the CPUs may be shared; read the numbers with this
        "cold": cold,
        "warm": warm,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['n_images']} images, {report['workers']} workers: "
        f"cold {cold['process_s']:.1f} s ({cold['images_per_s']:.0f} img/s), "
        f"warm {warm['process_s']:.1f} s ({warm['images_per_s']:.0f} img/s) -> {args.out}"
    )


if __name__ == "__main__":
    main()
