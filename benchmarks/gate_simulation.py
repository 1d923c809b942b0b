"""Does the gate promote only real improvements? A Monte-Carlo check of `headstart.evaluation.gate.decide`.

Each draw is a fresh test set from one population, scored by a champion, a candidate whose true
accuracy is the champion's plus 0, 1, 2 or 5 points, and a weaker scratch baseline. Errors are
correlated the way two CNNs' errors are: every image has a latent difficulty shared by all
models (probit model, latent correlation `rho`), and classes differ in difficulty (a
Fashion-MNIST-like per-class accuracy profile). With rho = 0.8 about 63% of one model's errors
are also the other's, and equal models disagree on ~9% of images.

Usage: python benchmarks/gate_simulation.py [--quick] [--reps N] [--rho R]
Writes benchmarks/results/gate_simulation.json and gate_simulation.png (with --quick:
gate_simulation_quick.*, so a smoke run never overwrites the quoted results); prints a markdown table.

`--schedule` simulates a year of weekly runs instead (see `schedule_main`): one fixed test split per
simulated year, reused every week, and three gates side by side. Writes gate_schedule.{json,png}
(gate_schedule_quick.* with --quick; a suffix _rho<R> when --rho is not 0.8).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from headstart.config import load_params
from headstart.evaluation import gate as new_gate
from headstart.evaluation import stats
from headstart.evaluation.gate import CHECK_NAMES, GateThresholds, ModelEval, decide, thresholds_from_params

REPO = Path(__file__).resolve().parents[1]
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


def shipped(**changes: object) -> GateThresholds:
    """The gate as shipped: params.yaml's thresholds, with `changes`."""
    return thresholds_from_params(load_params(REPO / "params.yaml"), **changes)


def run(reps: int, rho: float, seed: int, bootstrap_samples: int) -> dict:
    pop = population(rho)
    rng = np.random.default_rng(seed)
    tuned = shipped(bootstrap_samples=bootstrap_samples)
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


# --- Schedule mode (issue 23): a year of weekly runs judged on one reused test split ----------------

OLD_GATE_COMMIT = "d84cdbe"  # the gate before issue 23: per-run bootstrap CI, no schedule, no winner correction
GATES = ("naive", "today", "new")
POWER_GAINS = (0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02)
GATE_LABELS = {
    "naive": "naive (winner's accuracy higher)",
    "today": f"today's gate ({OLD_GATE_COMMIT})",
    "new": "new gate (alpha-spending, 2 candidates)",
}


def load_gate_at(commit: str) -> types.ModuleType:
    """`headstart.gate` as it was at `commit`, with the `headstart.stats` of that commit, loaded from
    `git show` into throw-away modules: the old gate is a reference to measure against, not code to keep."""
    modules = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("stats", "gate"):
            source = subprocess.run(
                ["git", "show", f"{commit}:src/headstart/{name}.py"], cwd=REPO, capture_output=True, text=True
            )
            if source.returncode:
                raise SystemExit(f"--schedule needs the git history ({commit}): {source.stderr.strip()}")
            path = Path(tmp) / f"{name}_{commit}.py"
            path.write_text(source.stdout)
            spec = importlib.util.spec_from_file_location(f"headstart_{name}_{commit}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
            spec.loader.exec_module(module)
            modules[name] = module
    modules["gate"].stats = modules["stats"]  # the old gate calls the old statistics
    return modules["gate"]


@dataclass(frozen=True)
class Split:
    """One fixed test split per simulated year (one row per year), reused by every run of that year.

    `base` is each image's latent difficulty shared by every model, minus its class offset, so a model of
    shift s gets image i right iff base_i + its own noise < s (the `Population` probit model)."""

    y: np.ndarray
    base: np.ndarray
    support: np.ndarray
    flat: np.ndarray  # y + k * row, for per-(row, class) counts in one bincount

    @property
    def n(self) -> int:
        return self.y.shape[1]

    def per_class(self, mask: np.ndarray) -> np.ndarray:
        """Count of True per (row, class)."""
        return np.bincount(self.flat[mask], minlength=self.support.size).reshape(self.support.shape)


def draw_split(pop: Population, rng: np.random.Generator, rows: int, n: int) -> Split:
    k = len(pop.offsets)
    y = rng.integers(0, k, (rows, n))
    shared = np.float32(np.sqrt(pop.rho)) * rng.standard_normal((rows, n), dtype=np.float32)
    flat = y + k * np.arange(rows)[:, None]
    support = np.bincount(flat.ravel(), minlength=rows * k).reshape(rows, k)
    return Split(y, shared - pop.offsets.astype(np.float32)[y], support, flat)


def draw_model(pop: Population, rng: np.random.Generator, split: Split, acc: float) -> np.ndarray:
    """Per-image correctness of a freshly trained model of true accuracy `acc`: fresh model noise, same images."""
    noise = rng.standard_normal(split.y.shape, dtype=np.float32)
    noise *= np.float32(np.sqrt(1 - pop.rho))
    noise += split.base
    return noise < np.float32(_shift(pop.rho, acc))


@functools.cache
def _shift(rho: float, acc: float) -> float:
    return population(rho).shift_for(acc)


def class_recall_veto(split: Split, cand: np.ndarray, champ: np.ndarray, th: GateThresholds) -> np.ndarray:
    """`class_recall`'s verdict for every row at once: `stats.paired_drop_pvalue` per class, vectorised,
    then Holm across classes (the veto is any adjusted p < alpha)."""
    lost = split.per_class(champ & ~cand).astype(float)
    gained = split.per_class(cand & ~champ).astype(float)
    n, d = split.support.astype(float), th.max_class_recall_drop
    b = -(lost + gained) + d * (2 * n - lost + gained)
    c = -gained * d * (1 - d)
    p_gain = (-b + np.sqrt(b * b - 8 * n * c)) / (4 * n)
    p = norm.sf((lost - gained - n * d) / np.sqrt(n * (2 * p_gain + d * (1 - d))))
    k = p.shape[1]
    adjusted = np.maximum.accumulate((k - np.arange(k)) * np.sort(p, axis=1), axis=1)
    return (adjusted < th.alpha).any(axis=1)


def _discordant(cand: np.ndarray, champ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gained, lost) per row: images only the candidate gets right, images only the champion gets right."""
    return (cand & ~champ).sum(axis=1), (champ & ~cand).sum(axis=1)


def _counts_as_arrays(gained: int, lost: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness arrays of length n with exactly these discordant counts (the paired tests read only those)."""
    cand, champ = np.zeros(n, bool), np.zeros(n, bool)
    cand[:gained] = True
    champ[gained : gained + lost] = True
    return cand, champ


class NaiveGate:
    """Promotes whenever the winner's test accuracy is higher than the champion's."""

    def no_regression(self, split: Split, cand: np.ndarray, champ: np.ndarray) -> np.ndarray:
        return cand.sum(axis=1) > champ.sum(axis=1)

    verdict = no_regression

    def check(self, *args: object) -> None:
        pass  # nothing to compare against: the rule is the one line above

    def start_year(self) -> None:
        pass


class _DecideGate:
    """A fast, vectorised verdict of `module.decide`, checked against `decide` itself on a few rows per run."""

    def __init__(self, module: types.ModuleType, th: GateThresholds) -> None:
        if th.min_macro_f1 is not None or th.min_gain_over_baseline is not None:
            raise SystemExit("the schedule simulation models correctness only: macro-F1 floor and baseline check off")
        self.module, self.th = module, th
        self.checked = self.agreed = 0

    def _passes(self, gained: int, lost: int, n: int) -> bool:
        raise NotImplementedError

    def no_regression(self, split: Split, cand: np.ndarray, champ: np.ndarray) -> np.ndarray:
        gained, lost = _discordant(cand, champ)
        return np.array([self._passes(int(g), int(b), split.n) for g, b in zip(gained, lost, strict=True)])

    def verdict(self, split: Split, cand: np.ndarray, champ: np.ndarray) -> np.ndarray:
        floor = cand.mean(axis=1) >= self.th.min_accuracy
        return floor & self.no_regression(split, cand, champ) & ~class_recall_veto(split, cand, champ, self.th)

    def _eval(self, split: Split, row: int, correct: np.ndarray, name: str) -> object:
        y = split.y[row].astype(np.int64)
        pred = np.where(correct[row], y, (y + 1) % len(CLASSES))  # which wrong class does not matter here
        return self.module.ModelEval(name, y, pred, CLASSES)

    def _decide(self, cand: object, scratch: object, champ: object, row: int) -> object:
        return self.module.decide(cand, scratch, champ, self.th)

    def check(self, split: Split, rows: int, ft: np.ndarray, sc: np.ndarray, ft_wins: np.ndarray,
              champ: np.ndarray, fast: np.ndarray) -> None:
        """Run the real `decide` on the first `rows` years and count where it agrees with the fast verdict."""
        for r in range(rows):
            scratch = self._eval(split, r, sc, "scratch")
            cand = self._eval(split, r, ft, "finetune") if ft_wins[r] else scratch
            d = self._decide(cand, scratch, self._eval(split, r, champ, "champion"), r)
            self.checked += 1
            self.agreed += bool(d.promote) == bool(fast[r])

    def start_year(self) -> None:
        pass


class TodayGate(_DecideGate):
    """`decide` as of OLD_GATE_COMMIT: no_regression passes when the 95% paired-bootstrap CI's lower bound of
    the difference is above -max_regression, judged per run with no account of the schedule or of the choice."""

    @functools.cache  # noqa: B019 - a few gates per process; the bound depends only on the counts
    def _passes(self, gained: int, lost: int, n: int) -> bool:
        th = self.th
        cand, champ = _counts_as_arrays(gained, lost, n)
        ci = self.module.stats.paired_bootstrap_diff(
            cand, champ, level=th.ci_level, n_boot=th.bootstrap_samples, seed=(th.seed, 2)
        )
        return bool(ci.low > 0.0 - th.max_regression)


def simulate_year(pop: Population, rng: np.random.Generator, gates: dict, years: int, n: int, runs: int,
                  gain: float, start: int, check_rows: int) -> dict[str, dict[str, np.ndarray]]:
    """`years` simulated schedules of `runs` weekly runs each, every gate with its own champion.

    Each year draws one test split and one champion, both fixed for the year. Each week trains a new
    finetune and a new scratch candidate (fresh model noise on the same images), of the champion's
    true accuracy, plus `gain` from run `start` on; the winner on the test split (a tie goes to scratch,
    as `gate.choose_winner`) is judged. A promoted winner is the champion from the next run on. A promotion
    is false when the winner's true accuracy is not above the champion's.
    """
    split = draw_split(pop, rng, years, n)
    first = draw_model(pop, rng, split, CHAMPION_ACC)
    champ = {g: first.copy() for g in gates}
    true_acc = {g: np.full(years, CHAMPION_ACC) for g in gates}
    out = {g: {k: np.zeros((years, runs), bool) for k in ("promoted", "false", "gain")} for g in gates}
    for t in range(runs):
        acc = CHAMPION_ACC + (gain if t + 1 >= start else 0.0)
        ft, sc = draw_model(pop, rng, split, acc), draw_model(pop, rng, split, acc)
        ft_wins = ft.sum(axis=1) > sc.sum(axis=1)
        winner = np.where(ft_wins[:, None], ft, sc)
        for name, gate in gates.items():
            ok = gate.verdict(split, winner, champ[name])
            gate.check(split, min(check_rows, years), ft, sc, ft_wins, champ[name], ok)
            better = acc > true_acc[name]
            out[name]["promoted"][:, t] = ok
            out[name]["false"][:, t] = ok & ~better
            out[name]["gain"][:, t] = ok & better
            champ[name][ok] = winner[ok]
            true_acc[name][ok] = acc
    return out


def _rate(k: int, n: int) -> dict[str, float]:
    low, high = stats.wilson_interval(int(k), int(n), 0.95)
    return {"rate": k / n, "ci95": [low, high], "k": int(k), "n": int(n)}


def summarise_year(sim: dict[str, np.ndarray], gain: float, start: int) -> dict:
    years, runs = sim["promoted"].shape
    any_false = np.logical_or.accumulate(sim["false"], axis=1)
    row = {
        "p_any_false_promotion": _rate(any_false[:, -1].sum(), years),
        "cumulative_any_false": any_false.mean(axis=0).tolist(),
        "false_promotions_per_year": float(sim["false"].sum(axis=1).mean()),
        "promotions_per_year": float(sim["promoted"].sum(axis=1).mean()),
    }
    if gain > 0:
        promoted_by = np.logical_or.accumulate(sim["gain"][:, start - 1 :], axis=1).mean(axis=0)
        reached = np.flatnonzero(promoted_by >= 0.8)
        row.update(
            power_first_run=_rate(sim["gain"][:, start - 1].sum(), years),
            cumulative_gain_promoted=promoted_by.tolist(),
            runs_to_80pct=int(reached[0] + 1) if reached.size else None,
            runs_available=int(runs - start + 1),
        )
    return row


def single_runs(pop: Population, rng: np.random.Generator, gates: dict, reps: int, n: int, gain: float = 0.0,
                chunk: int = 1000) -> dict:
    """One run each, on a fresh split: how often the gate passes a single candidate, and the test-set winner of
    two, both `gain` above the champion. With gain 0 this is item 4's winner's curse, per run."""
    counts = {g: dict.fromkeys(("single_no_regression", "winner_no_regression", "single", "winner"), 0)
              for g in gates}
    done = 0
    while done < reps:
        m = min(chunk, reps - done)
        split = draw_split(pop, rng, m, n)
        champ = draw_model(pop, rng, split, CHAMPION_ACC)
        a, b = (draw_model(pop, rng, split, CHAMPION_ACC + gain) for _ in range(2))
        winner = np.where((a.sum(axis=1) > b.sum(axis=1))[:, None], a, b)
        for name, gate in gates.items():
            c = counts[name]
            c["single_no_regression"] += int(gate.no_regression(split, b, champ).sum())
            c["winner_no_regression"] += int(gate.no_regression(split, winner, champ).sum())
            c["single"] += int(gate.verdict(split, b, champ).sum())
            c["winner"] += int(gate.verdict(split, winner, champ).sum())
        done += m
    return {g: {k: _rate(v, reps) for k, v in c.items()} for g, c in counts.items()}


class NewGate(_DecideGate):
    """`decide` with the schedule: no_regression at this run's share of the false-promotion budget, Bonferroni
    over the two candidates; negative_flips when a maximum NFR is set. The state is carried run to run."""

    def __init__(self, th: GateThresholds) -> None:
        super().__init__(new_gate, th)
        self.alpha_run = new_gate.alpha_per_run(th, 2)
        self.states: dict[int, new_gate.ScheduleState] = {}

    @functools.cache  # noqa: B019
    def _passes(self, gained: int, lost: int, n: int) -> bool:
        return bool(stats.paired_gain_pvalue(gained, lost, n, self.th.max_regression) < self.alpha_run)

    @functools.cache  # noqa: B019
    def _flips_pass(self, lost: int, n: int) -> bool:
        if self.th.max_negative_flip_rate is None:
            return True
        low, _ = stats.wilson_interval(lost, n, 1 - 2 * self.th.alpha)
        return not low > self.th.max_negative_flip_rate

    def verdict(self, split: Split, cand: np.ndarray, champ: np.ndarray) -> np.ndarray:
        lost = (champ & ~cand).sum(axis=1)
        flips = np.array([self._flips_pass(int(b), split.n) for b in lost])
        return super().verdict(split, cand, champ) & flips

    def _decide(self, cand: object, scratch: object, champ: object, row: int) -> object:
        state = self.states.get(row, new_gate.ScheduleState(horizon_runs=self.th.horizon_runs))
        d = new_gate.decide(cand, scratch, champ, self.th, schedule=state, candidates_compared=2)
        self.states[row] = state.after_run(d.alpha_run, self.th.horizon_runs)
        if d.schedule_after != self.states[row]:
            raise SystemExit(f"decide recorded {d.schedule_after}, after_run gives {self.states[row]}")
        return d

    def start_year(self) -> None:
        self.states = {}  # a new set of simulated years: every schedule starts with a fresh window


def schedule_run(args: argparse.Namespace) -> dict:
    pop = population(args.rho)
    old = load_gate_at(OLD_GATE_COMMIT)
    th_new = shipped(min_gain_over_baseline=None, horizon_runs=args.horizon)
    th_old = old.GateThresholds(min_gain_over_baseline=None)
    gates = {"naive": NaiveGate(), "today": TodayGate(old, th_old), "new": NewGate(th_new)}
    seeds = np.random.SeedSequence(args.seed).spawn(len(args.scenarios) + 1)
    scenarios = []
    for (gain, start), seed in zip(args.scenarios, seeds, strict=False):
        t0 = time.perf_counter()
        for g in gates.values():
            g.start_year()
        sim = simulate_year(pop, np.random.default_rng(seed), gates, args.years, args.n, args.horizon, gain, start,
                            args.check_years)
        scenarios.append({"true_gain": gain, "gain_from_run": start, "seconds": round(time.perf_counter() - t0, 1),
                          "gates": {g: summarise_year(sim[g], gain, start) for g in gates}})
        print(f"scenario gain {gain:+.2f} from run {start}: {scenarios[-1]['seconds']} s", file=sys.stderr)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seeds[-1])
    curse = single_runs(pop, rng, gates, args.curse_reps, args.n)
    power = [{"true_gain": g, **single_runs(pop, rng, gates, args.power_reps, args.n, g)} for g in POWER_GAINS]
    agreement = {g: {"decide_calls": gates[g].checked, "agreed": gates[g].agreed} for g in ("today", "new")}
    return {
        "scenarios": scenarios,
        "winners_curse": curse,
        "power_one_run": power,
        "single_runs_seconds": round(time.perf_counter() - t0, 1),
        "nominal": {
            "today_no_regression_per_candidate": (1 - th_old.ci_level) / 2,
            "new_alpha_run_per_candidate": gates["new"].alpha_run,
            "new_per_run_budget": th_new.false_promotion_budget / th_new.horizon_runs,
            "new_budget_per_horizon": th_new.false_promotion_budget,
        },
        "fast_path_vs_decide": agreement,
        "thresholds": {"today": th_old.model_dump(), "new": th_new.model_dump()},
        "error_structure": error_structure(pop, np.random.default_rng(args.seed)),
    }


def _pct(r: dict | None, ci: bool = False) -> str:
    if r is None:
        return "—"
    digits = 1 if r["rate"] >= 0.01 or r["rate"] == 0 else 2
    text = f"{r['rate']:.{digits}%}"
    return text + (f" [{r['ci95'][0]:.{digits}%}, {r['ci95'][1]:.{digits}%}]" if ci else "")


def schedule_markdown(result: dict) -> str:
    by = {(s["true_gain"], s["gain_from_run"]): s["gates"] for s in result["scenarios"]}
    h = result["horizon"]
    equal = by.get((0.0, 1), {})

    def power(g: str, gain: float, start: int) -> str:
        s = by.get((gain, start))
        return _pct(s[g]["power_first_run"]) if s else "—"

    def runs80(g: str, gain: float, start: int) -> str:
        s = by.get((gain, start))
        if not s:
            return "—"
        r = s[g]
        return str(r["runs_to_80pct"]) if r["runs_to_80pct"] else f"> {r['runs_available']}"

    lines = [
        f"| gate | P(any false promotion in {h} runs), equal models [95% CI] | false promotions per year "
        "| power at +2 pt, one run (gain from run 1 / 26) | runs until 80% promoted, +1 pt (from run 1 / 26) "
        "| winner of two equal models: false promotions per run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for g in GATES:
        e = equal.get(g)
        lines.append(
            f"| {GATE_LABELS[g]} | {_pct(e['p_any_false_promotion'], True) if e else '—'} "
            f"| {e['false_promotions_per_year']:.2f} | {power(g, 0.02, 1)} / {power(g, 0.02, 26)} "
            f"| {runs80(g, 0.01, 1)} / {runs80(g, 0.01, 26)} | {_pct(result['winners_curse'][g]['winner'], True)} |"
            if e else f"| {GATE_LABELS[g]} | — | — | — | — | — |"
        )
    nom = result["nominal"]
    lines += [
        "",
        "| gate | no_regression passes: one candidate | the test-set winner of two | nominal per candidate "
        "| promoted: one candidate | the winner of two |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    nominal = {"naive": "—", "today": f"{nom['today_no_regression_per_candidate']:.1%}",
               "new": f"{nom['new_alpha_run_per_candidate']:.3%} (winner: {nom['new_per_run_budget']:.3%})"}
    for g in GATES:
        c = result["winners_curse"][g]
        lines.append(
            f"| {GATE_LABELS[g]} | {_pct(c['single_no_regression'], True)} | {_pct(c['winner_no_regression'], True)} "
            f"| {nominal[g]} | {_pct(c['single'])} | {_pct(c['winner'])} |"
        )
    agree = result["fast_path_vs_decide"]
    lines.append(
        f"\n{result['years']:,} simulated years per scenario, {result['n_images']:,} test images, rho {result['rho']}; "
        f"{result['curse_reps']:,} single runs for the winner's-curse rows. The fast verdicts agreed with `decide` "
        + ", ".join(f"{g}: {a['agreed']}/{a['decide_calls']}" for g, a in agree.items())
        + f"; {result['seconds']} s."
    )
    return "\n".join(lines)


def schedule_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(s["true_gain"], s["gain_from_run"]): s["gates"] for s in result["scenarios"]}
    colors = {"naive": "tab:red", "today": "tab:orange", "new": "tab:blue"}
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    if (0.0, 1) in by:
        for g in GATES:
            curve = by[(0.0, 1)][g]["cumulative_any_false"]
            left.plot(range(1, len(curve) + 1), curve, color=colors[g], label=GATE_LABELS[g])
    budget = result["nominal"]["new_budget_per_horizon"]
    left.axhline(budget, color="grey", lw=0.8, ls=":")
    left.annotate(f"budget {budget:.0%}", (1, budget), xytext=(0, 3), textcoords="offset points", fontsize=8)
    left.set(xlabel="weekly run", ylabel="P(any false promotion so far)", ylim=(-0.02, 1.02),
             title="Equal models, one test split reused")
    left.legend(fontsize=8)
    for (gain, start), style in (((0.02, 1), "-"), ((0.01, 1), "--")):
        if (gain, start) not in by:
            continue
        for g in GATES:
            curve = by[(gain, start)][g]["cumulative_gain_promoted"]
            right.plot(range(1, len(curve) + 1), curve, style, color=colors[g],
                       label=f"{GATE_LABELS[g].split(' (')[0]}, +{gain * 100:.0f} pt")
    for g in GATES:
        gains = [0.0] + [row["true_gain"] * 100 for row in result["power_one_run"]]
        rates = [result["winners_curse"][g]["winner"]["rate"]] + [row[g]["winner"]["rate"]
                                                               for row in result["power_one_run"]]
        mid.plot(gains, rates, "o-", color=colors[g], label=GATE_LABELS[g])
    mid.axhline(0.8, color="grey", lw=0.8, ls=":")
    mid.set(xlabel="true gain of both candidates (points)", ylabel="P(winner promoted) in one run",
            ylim=(-0.02, 1.02), title=f"Power in one run, {result['n_images']:,} test images")
    mid.legend(fontsize=8)
    right.axhline(0.8, color="grey", lw=0.8, ls=":")
    right.set(xlabel="runs since the gain appeared", ylabel="P(gain promoted)", ylim=(-0.02, 1.02),
              title="A true gain from run 1", xscale="log")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def schedule_main(args: argparse.Namespace) -> dict:
    """A year of weekly runs: naive, today's and the new gate side by side (issue 23, items 3, 4 and 6)."""
    t0 = time.perf_counter()
    result = schedule_run(args)
    result.update(
        years=args.years, n_images=args.n, horizon=args.horizon, rho=args.rho, seed=args.seed,
        curse_reps=args.curse_reps, power_reps=args.power_reps, champion_accuracy=CHAMPION_ACC,
        seconds=round(time.perf_counter() - t0, 1), load_average=os.getloadavg(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "gate_schedule" + ("_quick" if args.quick else "") + ("" if args.rho == 0.8 else f"_rho{args.rho:g}")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    schedule_plot(result, RESULTS / f"{stem}.png")
    print(schedule_markdown(result))
    bad = {g: a for g, a in result["fast_path_vs_decide"].items() if a["agreed"] != a["decide_calls"]}
    if bad:
        raise SystemExit(f"the fast verdicts disagree with decide: {bad}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="100 test sets per row instead of 1000")
    ap.add_argument("--reps", type=int, default=None, help="simulated test sets per row")
    ap.add_argument("--rho", type=float, default=0.8, help="latent correlation of the models' errors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap-samples", type=int, default=shipped().bootstrap_samples)
    sched = ap.add_argument_group("--schedule: a year of weekly runs, three gates side by side")
    sched.add_argument("--schedule", action="store_true", help="simulate weekly runs on one reused test split")
    sched.add_argument("--horizon", type=int, default=52, help="weekly runs per simulated year (gate.horizon_runs)")
    sched.add_argument("--years", type=int, default=None, help="simulated years per scenario (default 2000)")
    sched.add_argument("--n", type=int, default=10_000, help="test images")
    sched.add_argument("--curse-reps", type=int, default=None, help="single runs for the winner's curse (100000)")
    sched.add_argument("--power-reps", type=int, default=None, help="single runs per gain, power curve (2000)")
    sched.add_argument("--check-years", type=int, default=None, help="years per run checked against decide (5)")
    args = ap.parse_args(argv)
    if args.schedule:
        args.years = args.years or (40 if args.quick else 2000)
        args.curse_reps = args.curse_reps or (2000 if args.quick else 100_000)
        args.power_reps = args.power_reps or (200 if args.quick else 2000)
        args.check_years = args.check_years if args.check_years is not None else (2 if args.quick else 5)
        args.scenarios = [(0.0, 1), (0.01, 1), (0.01, 26), (0.02, 1), (0.02, 26)]
        return schedule_main(args)
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
