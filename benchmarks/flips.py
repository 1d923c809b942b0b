"""Negative flips between real retrains, and what positive-congruent training does to them.

Trains, with Headstart's own train step at params.yaml's finetune recipe, a champion (seed 42), then
candidates with other seeds twice: plainly (a retrain of today's recipe) and with positive-congruent
training against that champion (train.shared.congruent). Every model is scored on the full test split
with its TTA, as evaluate does (steps.evaluate.predict_folder), and each candidate is compared with the
champion on the same images:

  NFR  negative flip rate: share of all test images the champion gets right and the candidate wrong
  PFR  positive flip rate: the reverse
  NFI  negative flip impact: negative flips / the candidate's errors
with Wilson intervals. The retrain arm's NFR sets gate.max_negative_flip_rate's default.

    python benchmarks/flips.py                       # the default recipe, seeds 43 44 45 (~20 min on 2 cores)
    python benchmarks/flips.py --epochs 2 --image-size 32 --images-per-class 20 --out /tmp/f.json   # a smoke run
    python benchmarks/flips.py --plot-only
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from headstart.config import load_params  # noqa: E402
from headstart.data.imagefolder import list_classes  # noqa: E402
from headstart.evaluation.stats import wilson_interval  # noqa: E402
from headstart.steps import evaluate, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
ARMS = ("retrain", "congruent")


def flips(y: np.ndarray, champion: np.ndarray, candidate: np.ndarray, classes: list[str],
          level: float = 0.95) -> dict[str, Any]:
    """NFR, PFR, NFI of `candidate` against `champion` (predicted labels on the same images), overall and per class."""
    was, now = champion == y, candidate == y
    neg, pos = was & ~now, ~was & now

    def rates(mask: np.ndarray) -> dict[str, Any]:
        n, k_neg, k_pos, errors = int(mask.sum()), int(neg[mask].sum()), int(pos[mask].sum()), int((~now[mask]).sum())
        return {"n": n, "negative_flips": k_neg, "positive_flips": k_pos,
                "nfr": k_neg / max(1, n), "nfr_ci": list(wilson_interval(k_neg, n, level)),
                "pfr": k_pos / max(1, n), "pfr_ci": list(wilson_interval(k_pos, n, level)),
                "nfi": k_neg / max(1, errors), "nfi_ci": list(wilson_interval(k_neg, errors, level))}

    out = rates(np.ones_like(y, dtype=bool))
    out["disagreement"] = float((champion != candidate).mean())
    out["per_class"] = [{"class": c, **rates(y == i)} for i, c in enumerate(classes)]
    return out


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--champion-seed", type=int, default=42)
    ap.add_argument("--seeds", type=int, nargs="+", default=[43, 44, 45])
    ap.add_argument("--epochs", type=int, default=None, help="override train.shared.epochs (and patience)")
    ap.add_argument("--image-size", type=int, default=None, help="override train.finetune.image_size")
    ap.add_argument("--images-per-class", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "flips.json")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    over: dict[str, Any] = {"checkpoint_dir": None, "threads": args.threads}
    if args.epochs is not None:
        over |= {"epochs": args.epochs, "patience": args.epochs}
    if args.image_size is not None:
        over["image_size"] = args.image_size
    if args.images_per_class is not None:
        over["images_per_class"] = args.images_per_class
    ecfg = evaluate.config_from_params(params).model_copy(update={"prediction_store": None})

    with tempfile.TemporaryDirectory(prefix="headstart-flips-") as tmp:
        work = Path(tmp)

        def fit(name: str, seed: int, congruent: bool, champion: Path | None) -> tuple[dict[str, Any], Any]:
            cfg = train.config_from_params(params, "finetune", **over, seed=seed, congruent=congruent)
            t0 = time.perf_counter()
            res = train.run(cfg, args.data, work / name, champion_dir=champion)
            wall = time.perf_counter() - t0
            scored = evaluate.predict_folder(Path(res.model_dir), args.data, ecfg.batch_size, cfg=ecfg)
            acc = float((scored.y_pred == scored.y_true).mean())
            print(f"{name}: accuracy {acc:.4f}, trained in {wall:.0f}s ({res.congruent})", file=sys.stderr)
            return {"seed": seed, "accuracy": acc, "train_wall_s": round(wall, 1), "best_epoch": res.best_epoch,
                    "congruent": res.congruent}, scored

        champ_row, champ = fit("champion", args.champion_seed, False, None)
        classes = list(list_classes(args.data))
        runs: list[dict[str, Any]] = []
        for seed in args.seeds:
            for arm in ARMS:
                row, scored = fit(f"{arm}-{seed}", seed, arm == "congruent", work / "champion" / "model")
                assert np.array_equal(scored.y_true, champ.y_true)
                row |= {"arm": arm, **flips(champ.y_true, champ.y_pred, scored.y_pred, classes, ecfg.ci_level)}
                runs.append(row)
                print(f"  {arm} seed {seed}: NFR {row['nfr']:.4f} PFR {row['pfr']:.4f} NFI {row['nfi']:.3f}",
                      file=sys.stderr)
    summary = {arm: {key: _mean_std([r[key] for r in runs if r["arm"] == arm])
                     for key in ("accuracy", "nfr", "pfr", "nfi", "disagreement")} for arm in ARMS}
    cfg = train.config_from_params(params, "finetune", **over)
    result = {
        "what": "negative flips of finetune retrains against a champion, with and without positive-congruent training",
        "test_images": len(champ.y_true),
        "recipe": {k: getattr(cfg, k) for k in ("backbone", "image_size", "epochs", "images_per_class", "tta",
                                                "congruent_weight", "congruent_alpha", "congruent_beta",
                                                "congruent_temperature")},
        "threads": args.threads,
        "champion": champ_row,
        "runs": runs,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    for arm in ARMS:
        s = summary[arm]
        print(f"{arm:10s} accuracy {s['accuracy']['mean']:.4f} ± {s['accuracy']['std']:.4f}  "
              f"NFR {s['nfr']['mean']:.4f} ± {s['nfr']['std']:.4f} (max {s['nfr']['max']:.4f})  "
              f"PFR {s['pfr']['mean']:.4f}  NFI {s['nfi']['mean']:.3f}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for arm, marker in zip(ARMS, ("o", "s"), strict=True):
        rows = [r for r in result["runs"] if r["arm"] == arm]
        ax.errorbar([100 * r["accuracy"] for r in rows], [100 * r["nfr"] for r in rows],
                    yerr=[[100 * (r["nfr"] - r["nfr_ci"][0]) for r in rows],
                          [100 * (r["nfr_ci"][1] - r["nfr"]) for r in rows]],
                    fmt=marker, capsize=3, label=arm)
        for r in rows:
            ax.annotate(str(r["seed"]), (100 * r["accuracy"], 100 * r["nfr"]), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
    ax.axvline(100 * result["champion"]["accuracy"], color="grey", ls=":", label="champion accuracy")
    ax.set_xlabel(f"test accuracy (%, {result['test_images']} images)")
    ax.set_ylabel("NFR vs champion (%)")
    ax.set_title("negative flips of a retrain vs the champion")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
