"""Does the gate promote only real improvements? A Monte-Carlo check of `headstart.gate.decide`.

Each draw is a fresh test set from one population, scored by a champion, a candidate whose true
accuracy is the champion's plus 0, 1, 2 or 5 points, and a weaker scratch baseline. Errors are
correlated the way two CNNs' errors are: every image has a latent difficulty shared by all
models (probit model, latent correlation `rho`), and classes differ in difficulty (a
Fashion-MNIST-like per-class accuracy profile). With rho = 0.8 about 63% of one model's errors
are also the other's, and equal models disagree on ~9% of images.

Usage: python benchmarks/gate_simulation.py [--quick] [--reps N] [--rho R]
Writes benchmarks/results/gate_simulation.json and gate_simulation.png (with --quick:
gate_simulation_quick.*, so a smoke run never overwrites the quoted results); prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from headstart.gate import CHECK_NAMES, GateThresholds, ModelEval, decide

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = tuple(f"c{k}" for k in range(10))
# Per-class recall of a typical small CNN on Fashion-MNIST (shirt is hard, trouser/bag easy).
CLASS_PROFILE = np.array([0.86, 0.98, 0.85, 0.91, 0.86, 0.98, 0.70, 0.96, 0.98, 0.96])
CHAMPION_ACC = 0.88
BASELINE_ACC = 0.83
GAINS = (0.0, 0.01, 0.02, 0.05)
SIZES = (2000, 10000)
OLD_MAX_REGRESSION = 0.01


@dataclass(frozen=True)
class Population:
    """Probit model: image i of class c is correct for model m iff latent_i,m < shift_m + offset_c."""

    rho: float
    offsets: np.ndarray

    def shift_for(self, acc: float) -> float:
        return float(brentq(lambda s: norm.cdf(s + self.offsets).mean() - acc, -10, 10))

    def draw(self, rng: np.random.Generator, n: int, accs: dict[str, float]) -> dict[str, ModelEval]:
        k = len(self.offsets)
        y = rng.integers(0, k, n)
        shared = np.sqrt(self.rho) * rng.standard_normal(n)
        out = {}
        for name, acc in accs.items():
            latent = shared + np.sqrt(1 - self.rho) * rng.standard_normal(n)
            correct = latent < self.shift_for(acc) + self.offsets[y]
            wrong = (y + rng.integers(1, k, n)) % k
            out[name] = ModelEval(name, y, np.where(correct, y, wrong), CLASSES)
        return out


def population(rho: float) -> Population:
    offsets = norm.ppf(CLASS_PROFILE)
    return Population(rho=rho, offsets=offsets - offsets.mean())


def error_structure(pop: Population, rng: np.random.Generator, n: int = 200_000) -> dict[str, float]:
    """Measured, not assumed: how alike two equal models' errors are in this population."""
    d = pop.draw(rng, n, {"a": CHAMPION_ACC, "b": CHAMPION_ACC})
    ea, eb = ~d["a"].correct, ~d["b"].correct
    return {
        "error_overlap": float((ea & eb).sum() / ea.sum()),
        "error_phi": float(np.corrcoef(ea, eb)[0, 1]),
        "disagreement": float((ea != eb).mean()),
    }


def run(reps: int, rho: float, seed: int, bootstrap_samples: int) -> dict:
    pop = population(rho)
    rng = np.random.default_rng(seed)
    tuned = GateThresholds(bootstrap_samples=bootstrap_samples)
    old = tuned.model_copy(update={"max_regression": OLD_MAX_REGRESSION})
    rows = []
    for n in SIZES:
        for gain in GAINS:
            accs = {"finetune": CHAMPION_ACC + gain, "scratch": BASELINE_ACC, "champion": CHAMPION_ACC}
            promoted = promoted_old = naive = 0
            failed = dict.fromkeys(CHECK_NAMES, 0)
            for _ in range(reps):
                m = pop.draw(rng, n, accs)
                d = decide(m["finetune"], m["scratch"], m["champion"], tuned)
                promoted += d.promote
                for c in d.checks:
                    failed[c.name] += c.applies and not c.passed
                promoted_old += decide(m["finetune"], m["scratch"], m["champion"], old).promote
                naive += m["finetune"].correct.sum() > m["champion"].correct.sum()
            rows.append(
                {
                    "n_images": n,
                    "true_gain": gain,
                    "gate": promoted / reps,
                    "gate_max_regression_0.01": promoted_old / reps,
                    "naive": naive / reps,
                    "failed_checks": {k: v / reps for k, v in failed.items()},
                }
            )
    return {"rows": rows, "thresholds": tuned.model_dump(), "error_structure": error_structure(pop, rng)}


def markdown(rows: list[dict], reps: int) -> str:
    lines = [
        "| test images | true gain | gate (defaults) | gate, max_regression=0.01 | naive (acc higher) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gain = r["true_gain"]
        label = "equal (false promotion)" if gain == 0 else f"+{gain * 100:.0f} pt (power)"
        lines.append(
            f"| {r['n_images']:,} | {label} | {r['gate']:.1%} | {r['gate_max_regression_0.01']:.1%} "
            f"| {r['naive']:.1%} |"
        )
    lines.append(f"\n{reps} simulated test sets per row; Monte-Carlo SE <= {0.5 / np.sqrt(reps):.1%}.")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for n, color in zip(SIZES, ("tab:orange", "tab:blue"), strict=True):
        sub = [r for r in rows if r["n_images"] == n]
        x = [r["true_gain"] * 100 for r in sub]
        ax.plot(x, [r["gate"] for r in sub], "o-", color=color, label=f"gate, {n:,} images")
        ax.plot(x, [r["naive"] for r in sub], "s--", color=color, alpha=0.6, label=f"naive, {n:,} images")
    ax.axhline(0.05, color="grey", lw=0.8, ls=":")
    ax.axhline(0.80, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="true accuracy gain over champion (points)", ylabel="promotion rate", ylim=(-0.02, 1.02))
    ax.set_title("Promotion rate: evidence gate vs point estimate")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="100 test sets per row instead of 1000")
    ap.add_argument("--reps", type=int, default=None, help="simulated test sets per row")
    ap.add_argument("--rho", type=float, default=0.8, help="latent correlation of the models' errors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap-samples", type=int, default=GateThresholds().bootstrap_samples)
    args = ap.parse_args(argv)
    reps = args.reps or (100 if args.quick else 1000)
    t0 = time.perf_counter()
    result = run(reps, args.rho, args.seed, args.bootstrap_samples)
    result.update(
        reps=reps,
        rho=args.rho,
        seed=args.seed,
        champion_accuracy=CHAMPION_ACC,
        baseline_accuracy=BASELINE_ACC,
        class_profile=CLASS_PROFILE.tolist(),
        seconds=round(time.perf_counter() - t0, 1),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "gate_simulation_quick" if args.quick else "gate_simulation"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result["rows"], RESULTS / f"{stem}.png")
    es = result["error_structure"]
    print(markdown(result["rows"], reps))
    print(
        f"\nrho={args.rho}: error overlap {es['error_overlap']:.0%}, error correlation (phi) "
        f"{es['error_phi']:.2f}, equal models disagree on {es['disagreement']:.1%} of images; "
        f"{result['seconds']} s."
    )
    return result


if __name__ == "__main__":
    main()
