"""The promotion gate: a pure, seeded decision on paired evidence, recorded with every number.

Why evidence and not point estimates: on a few thousand test images a half-point "gain" is
often noise, and a scheduled pipeline that promotes noise churns production. So every
comparison is paired on the same images (McNemar, bootstrap CI of the difference) and a check
that needs a gain passes only when the CI's lower bound clears the margin. Every check is run
and recorded, failed or not, so a rejection explains itself. Registry writes happen elsewhere.

Why the error is controlled over a schedule, not per run: a weekly pipeline makes 52 decisions a
year, and 52 tests at 5% each would promote an equal model at least once most years. The gate
spends a false-promotion budget (`false_promotion_budget`, 10%) over a window of `horizon_runs`
runs (alpha-spending with a union bound, the Bonferroni form of Lan & DeMets' spending): each run
that compares against a champion tests `no_regression` at budget / horizon / candidates. The union
bound needs no independence, and the runs are far from independent (the same test split is reused
and the models make alike errors), so P(any false promotion in a window) <= budget holds as is.
Dividing by the candidates (finetune and scratch) pays for picking the winner on the same test
split: P(the winner passes) <= P(either passes), which removes the winner's curse. Confidence
sequences or e-values would let evidence accumulate across runs, but the runs reuse one test split
(their evidence is not independent), so the simple bound is the honest one. The cost: a real gain
must be larger to pass in one run (about +1.1 points at 10,000 images with 13% disagreement).
A person's promotion (`headstart promote --reason`) opens a new window. The window's state is
plain data here (`ScheduleState`); the registry keeps it beside the champion.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from pydantic import Field

from headstart.config import Frozen, from_section
from headstart.errors import DataError, RegistryError
from headstart.evaluation import stats

ACCURACY_FLOOR = "accuracy_floor"
MACRO_F1_FLOOR = "macro_f1_floor"
BEATS_BASELINE = "beats_baseline"
NO_REGRESSION = "no_regression"
CLASS_RECALL = "class_recall"
NEGATIVE_FLIPS = "negative_flips"
LABEL_SET = "label_set"
CHECK_NAMES = (ACCURACY_FLOOR, MACRO_F1_FLOOR, BEATS_BASELINE, LABEL_SET, NO_REGRESSION, CLASS_RECALL,
               NEGATIVE_FLIPS)
SUMMARY_MAX = 250
SCHEDULE_TAG = "headstart.gate_schedule"  # the registered-model tag that holds a ScheduleState as JSON
FLIP_ROWS_SHOWN = 20  # per-class rows in decision.md above FLIP_ROWS_ALL classes, worst first: 1,000 stay readable
FLIP_ROWS_ALL = 50


class GateThresholds(Frozen):
    """The `gate` section of params.yaml, which holds each threshold's one default (none here).

    `max_regression` 0 (params.yaml's): the candidate must beat the champion, tested one-sided at
    `alpha_per_run` (false_promotion_budget / horizon_runs / 2). With 0.01, the benchmark shows equal
    models are promoted almost every time (benchmarks/gate_simulation.py), i.e. the pipeline would churn.
    `max_negative_flip_rate` refuses a candidate when the evidence (one-sided Wilson at `alpha`) says it
    breaks more than that share of the images the champion got right; None turns the check off.
    """

    min_accuracy: float = Field(ge=0.0, le=1.0)
    min_macro_f1: float | None = Field(ge=0.0, le=1.0)
    min_gain_over_baseline: float | None = Field(ge=-1.0, le=1.0)
    max_regression: float = Field(ge=0.0, le=1.0)
    max_class_recall_drop: float = Field(ge=0.0, lt=1.0)
    ci_level: float = Field(gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(ge=100)
    alpha: float = Field(gt=0.0, lt=1.0)
    seed: int = Field(ge=0)
    max_negative_flip_rate: float | None = Field(ge=0.0, le=1.0)
    horizon_runs: int = Field(ge=1)
    false_promotion_budget: float = Field(gt=0.0, lt=1.0)


def thresholds_from_params(params: dict[str, Any], **changes: Any) -> GateThresholds:
    """The `gate` section; `changes`, for tests and benchmarks, apply last."""
    return from_section(GateThresholds, params, "gate", **changes)


def alpha_per_run(th: GateThresholds, candidates_compared: int = 2) -> float:
    """The level each judged candidate is tested at: the window's budget split evenly over its runs
    and over the candidates the winner was chosen from (Bonferroni: no winner's curse)."""
    if candidates_compared < 1:
        raise ValueError(f"candidates_compared must be at least 1, got {candidates_compared}")
    return th.false_promotion_budget / th.horizon_runs / candidates_compared


@dataclass(frozen=True)
class ScheduleState:
    """Where this registered model stands in its false-promotion window; kept in the registry (SCHEDULE_TAG).

    `alpha_spent` sums the per-candidate test levels of the window's judged runs; the window's bound on
    a false promotion is that sum times the candidates compared (<= false_promotion_budget).
    `reset_reason` says why the current window opened, when it was not the first.
    """

    window_runs: int = 0
    horizon_runs: int = 52
    alpha_spent: float = 0.0
    window: int = 1
    reset_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, model: str) -> ScheduleState:
        """A missing tag is a fresh window; anything unreadable is refused: guessing could hand out the budget twice."""
        if text is None or not text.strip():
            return cls()
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise _corrupt(model, text, f"not JSON ({exc})") from None
        names = [f.name for f in fields(cls)]
        if not isinstance(raw, dict) or sorted(raw) != sorted(names):
            raise _corrupt(model, text, f"expected an object with the keys {names}")
        spent, reason = raw["alpha_spent"], raw["reset_reason"]
        if isinstance(spent, bool) or not isinstance(spent, int | float) or not 0 <= spent <= 1:
            raise _corrupt(model, text, f"alpha_spent must be a number in [0, 1], got {spent!r}")
        if reason is not None and not isinstance(reason, str):
            raise _corrupt(model, text, f"reset_reason must be text or null, got {reason!r}")
        for key, least in (("window_runs", 0), ("horizon_runs", 1), ("window", 1)):
            if isinstance(raw[key], bool) or not isinstance(raw[key], int) or raw[key] < least:
                raise _corrupt(model, text, f"{key} must be a whole number >= {least}, got {raw[key]!r}")
        state = cls(**{**raw, "alpha_spent": float(spent)})
        if state.window_runs > state.horizon_runs:
            raise _corrupt(model, text, f"window_runs {state.window_runs} exceeds horizon_runs {state.horizon_runs}")
        return state

    def after_run(self, alpha_run: float, horizon_runs: int) -> ScheduleState:
        """Count one judged run. A used-up window, or a changed horizon, opens a new window first: the
        bound is per window, so a window must not mix two horizons."""
        s = self
        if s.window_runs == 0:
            s = replace(s, horizon_runs=horizon_runs)
        elif s.window_runs >= s.horizon_runs:
            s = s.reset(f"window {s.window} used up ({s.window_runs} runs)", horizon_runs)
        elif s.horizon_runs != horizon_runs:
            s = s.reset(f"horizon changed from {s.horizon_runs} to {horizon_runs} runs", horizon_runs)
        return replace(s, window_runs=s.window_runs + 1, alpha_spent=s.alpha_spent + alpha_run)

    def reset(self, reason: str, horizon_runs: int) -> ScheduleState:
        """A new window with a fresh budget, and why: a person took the decision (a manual promotion), or
        after_run found the old one ended."""
        return ScheduleState(0, horizon_runs, 0.0, self.window + 1, reason)


def _corrupt(model: str, text: str, why: str) -> RegistryError:
    return RegistryError(
        f"registered model {model!r}: its gate schedule (tag {SCHEDULE_TAG!r}) is unreadable: {why}; value "
        f"{text[:120]!r}. Nothing was promoted. A person resets it with `headstart promote --version <N> "
        f"--reason ...` (or deletes the tag, which starts a fresh window)."
    )


@dataclass(frozen=True)
class ModelEval:
    """One model's predictions on the test split; labels are indices into `class_names`."""

    name: str
    y_true: np.ndarray
    y_pred: np.ndarray
    class_names: tuple[str, ...]
    version: str | None = None

    def __post_init__(self) -> None:
        y_true = np.asarray(self.y_true).ravel()
        y_pred = np.asarray(self.y_pred).ravel()
        k = len(self.class_names)
        if y_true.size == 0 or y_true.shape != y_pred.shape:
            raise DataError(
                f"model {self.name!r}: expected equal, non-empty label and prediction arrays, "
                f"got {y_true.size} labels and {y_pred.size} predictions; re-run evaluate"
            )
        for what, arr in (("labels", y_true), ("predictions", y_pred)):
            if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= k:
                raise DataError(
                    f"model {self.name!r}: {what} must be class indices in 0..{k - 1} "
                    f"for classes {self.class_names}; re-run evaluate"
                )
        object.__setattr__(self, "y_true", y_true)
        object.__setattr__(self, "y_pred", y_pred)
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def correct(self) -> np.ndarray:
        return self.y_true == self.y_pred

    @property
    def accuracy(self) -> float:
        return stats.accuracy(self.y_true, self.y_pred)

    @property
    def macro_f1(self) -> float:
        return stats.macro_f1(self.y_true, self.y_pred, len(self.class_names))

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version else self.name


@dataclass(frozen=True)
class IncomparableChampion:
    """A champion trained on another class set: it cannot be scored on this test split, so the gate
    gets only its classes. Treating it as "no champion yet" would promote a label-set change silently."""

    class_names: tuple[str, ...]
    version: str | None = None
    name: str = "champion"

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version else self.name


@dataclass(frozen=True)
class Check:
    """One gate check. `passed` is vacuously True when the check does not apply."""

    name: str
    passed: bool
    applies: bool
    value: float | None = None
    threshold: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    detail: str = ""
    subject: str | None = None  # what `value` is about when it is not the whole model, e.g. the worst class


@dataclass(frozen=True)
class Decision:
    """The gate's record: the verdict, every check with its numbers, and why."""

    promote: bool
    candidate: str
    candidate_version: str | None
    baseline: str
    baseline_version: str | None
    champion: str | None
    champion_version: str | None
    checks: tuple[Check, ...]
    first_run: bool
    pretraining_paid: bool | None
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()
    thresholds: dict[str, Any] = field(default_factory=dict)
    label_change: dict[str, list[str]] | None = None  # champion's and candidate's classes, added, removed
    flips: dict[str, Any] | None = None  # against a comparable champion: NFR, PFR, NFI, per class
    alpha_run: float | None = None  # no_regression's level this run; None when nothing was compared
    schedule_before: ScheduleState = field(default_factory=ScheduleState)
    schedule_after: ScheduleState = field(default_factory=ScheduleState)
    candidates_compared: int = 2

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: plain floats, NaN as None."""
        return {
            "decision": "promoted" if self.promote else "rejected",
            "promote": self.promote,
            "candidate": {"name": self.candidate, "version": self.candidate_version},
            "baseline": {"name": self.baseline, "version": self.baseline_version},
            "champion": None
            if self.champion is None
            else {"name": self.champion, "version": self.champion_version},
            "first_run": self.first_run,
            "label_change": self.label_change,
            "pretraining_paid": self.pretraining_paid,
            "checks": [{k: _plain(v) for k, v in c.__dict__.items()} for c in self.checks],
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "thresholds": {k: _plain(v) for k, v in self.thresholds.items()},
            "flips": self.flips,
            "schedule": {"before": self.schedule_before.to_dict(), "after": self.schedule_after.to_dict(),
                         "alpha_run": self.alpha_run, "candidates_compared": self.candidates_compared},
            "summary": self.summary_reason(),
        }

    def to_markdown(self) -> str:
        verdict = "PROMOTED" if self.promote else "REJECTED"
        champ = f"`{self.champion}` v{self.champion_version}" if self.champion else "none yet"
        lines = [
            f"## Gate decision: {verdict}",
            "",
            f"**{self.summary_reason()}**",
            "",
            f"Candidate `{self.candidate}`"
            + (f" v{self.candidate_version}" if self.candidate_version else "")
            + f"; baseline `{self.baseline}`; champion: {champ}.",
            "",
            "| check | result | value | threshold | CI | p-value | detail |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            result = "n/a" if not c.applies else ("pass" if c.passed else "**FAIL**")
            sign = "" if c.name in (ACCURACY_FLOOR, MACRO_F1_FLOOR, NEGATIVE_FLIPS) else "+"
            ci = "" if c.ci_low is None else f"[{c.ci_low:{sign}.4f}, {c.ci_high:{sign}.4f}]"
            p = "" if c.p_value is None else f"{c.p_value:.3g}"
            lines.append(
                f"| {c.name} | {result} | {_fmt(c.value)} | {_fmt(c.threshold)} | {ci} "
                f"| {p} | {c.detail.replace('|', '/')} |"
            )
        lines += ["", self._schedule_line()]
        if self.flips:
            lines += ["", *_flips_markdown(self.flips, self.champion_version)]
        if self.reasons:
            lines += ["", "### Why it was rejected", ""] + [f"- {r}" for r in self.reasons]
        if self.notes:
            lines += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def _schedule_line(self) -> str:
        s, budget = self.schedule_after, self.thresholds.get("false_promotion_budget")
        where = f"run {s.window_runs} of {s.horizon_runs} in window {s.window}"
        where += f" (opened: {s.reset_reason})" if s.reset_reason else ""
        if self.alpha_run is None:
            return f"Schedule: nothing compared, no false-promotion budget spent; {where} so far."
        return (
            f"Schedule: {where}; this run's false-promotion level {self.alpha_run:.2g} per candidate "
            f"(x{self.candidates_compared} candidates); budget {budget} per {s.horizon_runs} runs, "
            f"{s.alpha_spent * self.candidates_compared:.3g} spent."
        )

    def summary_reason(self) -> str:
        """At most 250 characters, for the `decision_reason` tag on the registered version."""
        applied = [c for c in self.checks if c.applies]
        if self.promote:
            n = len(applied)
            text = f"promoted: {'the' if n == 1 else f'all {n}'} applicable check{'s' * (n != 1)} passed"
            text += " (no champion yet)" if self.first_run else ""
        else:
            failed = [c for c in applied if not c.passed]
            text = "rejected: " + "; ".join(_short(c) for c in failed)
        return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _fmt(v: float | None) -> str:
    return "" if v is None or np.isnan(v) else f"{v:.4f}"


def _rate(v: float | None, ci: list[float | None]) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _flips_markdown(f: dict[str, Any], champion_version: str | None) -> list[str]:
    """Overall rates, then each class against the champion, worst first (the largest recall drop, then the
    most lost): the first rows say what breaks. Above FLIP_ROWS_ALL classes only the FLIP_ROWS_SHOWN worst."""
    rows = sorted(f["per_class"], key=lambda r: (_delta(r) if _delta(r) is not None else 0.0,
                                                 -(r["nfr"] or 0.0), r["class"]))
    shown = rows if len(rows) <= FLIP_ROWS_ALL else rows[:FLIP_ROWS_SHOWN]
    lines = [
        f"### Flips against the champion v{champion_version}, per class",
        "",
        f"{f['negative_flips']} of {f['n']} images newly wrong, {f['positive_flips']} newly right. "
        "NFR (share of all images the champion got right and the candidate gets wrong) "
        f"{_rate(f['nfr'], f['nfr_ci'])}; "
        f"PFR {_rate(f['pfr'], f['pfr_ci'])}; NFI (new errors over the candidate's errors) "
        f"{_rate(f['nfi'], f['nfi_ci'])}.",
        "",
        "| class | images | recall champion | recall candidate | delta | negative flips | NFR | positive flips | PFR |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in shown:
        delta = _delta(r)
        lines.append(
            f"| {r['class']} | {r['support']} | {_fmt(r['recall_champion'])} "
            f"| {_fmt(r['recall_candidate'])} | {'' if delta is None else f'{delta:+.4f}'} "
            f"| {r['negative_flips']} | {_rate(r['nfr'], r['nfr_ci'])} "
            f"| {r['positive_flips']} | {_rate(r['pfr'], r['pfr_ci'])} |"
        )
    if len(shown) < len(rows):
        lines.append(f"\nThe {len(shown)} worst of {len(rows)} classes; the other {len(rows) - len(shown)} are in "
                     "decision.json.")
    return lines


def _delta(r: dict[str, Any]) -> float | None:
    """Candidate recall minus champion recall on one class; None for a class without test images."""
    return r["recall_candidate"] - r["recall_champion"] if r["support"] else None


def _short(c: Check) -> str:
    """The check's name and deciding numbers in a few characters, for the summary tag."""
    if c.name in (ACCURACY_FLOOR, MACRO_F1_FLOOR):
        return f"{c.name} {_fmt(c.value)}<{_fmt(c.threshold)}"
    if c.name == CLASS_RECALL:
        return f"{c.name} {c.subject!r} drop {c.value:+.4f}>{c.threshold:.4f} p={c.p_value:.2g}"
    if c.name == LABEL_SET:
        return f"{c.name} changed ({c.subject}); promote explicitly if intended"
    if c.name in (BEATS_BASELINE, NO_REGRESSION):
        return f"{c.name} diff {c.value:+.4f} CI low {c.ci_low:+.4f}<={c.threshold:+.4f}"
    if c.name == NEGATIVE_FLIPS:
        return f"{c.name} NFR {c.value:.4f} low {c.ci_low:.4f}>{c.threshold:.4f}"
    return f"{c.name}: {c.detail[:80]}"  # a check added after decide(), e.g. the serving check


def _same_test_set(a: ModelEval, b: ModelEval) -> None:
    """Paired statistics are meaningless unless both models saw the same images, same order."""
    if a.class_names != b.class_names or not np.array_equal(a.y_true, b.y_true):
        raise DataError(
            f"{a.label} and {b.label} were not evaluated on the same test images and classes "
            f"({len(a.y_true)} vs {len(b.y_true)} images; classes equal: {a.class_names == b.class_names}). "
            "Evaluate every model on the same test split before the gate."
        )


def choose_winner(finetune: ModelEval, scratch: ModelEval) -> tuple[ModelEval, ModelEval]:
    """(winner, other) by test accuracy. A tie goes to scratch: pre-training must win outright
    to be credited, and the scratch model needs no external weights."""
    _same_test_set(finetune, scratch)
    if int(finetune.correct.sum()) > int(scratch.correct.sum()):
        return finetune, scratch
    return scratch, finetune


def _floor(name: str, value: float, threshold: float | None, what: str, ci: tuple[float, float] | None) -> Check:
    if threshold is None:
        return Check(name, True, False, value, None, detail=f"{what} {value:.4f}; no floor set")
    passed = bool(value >= threshold)
    low, high = ci if ci else (None, None)
    detail = f"{what} {value:.4f} {'>=' if passed else '<'} {threshold:.4f}"
    return Check(name, passed, True, value, threshold, low, high, detail=detail)


def _paired(name: str, cand: ModelEval, other: ModelEval, bound: float, th: GateThresholds, stream: int) -> Check:
    """Passes when the CI lower bound of acc(cand) - acc(other) is strictly above `bound`."""
    ci = stats.paired_bootstrap_diff(
        cand.correct, other.correct, level=th.ci_level, n_boot=th.bootstrap_samples, seed=(th.seed, stream)
    )
    mc = stats.mcnemar_exact(other.correct, cand.correct)
    passed = bool(ci.low > bound)
    detail = (
        f"{cand.label} {cand.accuracy:.4f} vs {other.label} {other.accuracy:.4f}: "
        f"diff {ci.diff:+.4f}, {th.ci_level:.0%} CI [{ci.low:+.4f}, {ci.high:+.4f}], lower bound "
        f"{'>' if passed else '<='} {bound:+.4f}; McNemar {mc.b01} won / {mc.b10} lost, p={mc.p_value:.3g}"
    )
    return Check(name, passed, True, ci.diff, bound, ci.low, ci.high, mc.p_value, detail)


def _no_regression(cand: ModelEval, champ: ModelEval, th: GateThresholds, alpha_run: float, candidates: int) -> Check:
    """Passes when a one-sided test at `alpha_run` says acc(cand) - acc(champ) > -max_regression: McNemar's
    exact test at margin 0, else Tango's score test (why not the bootstrap: stats.paired_gain_pvalue). The
    interval recorded has `alpha_run` in each tail and is the inverted test: its lower end is the bound."""
    gained = int(np.count_nonzero(cand.correct & ~champ.correct))
    lost = int(np.count_nonzero(champ.correct & ~cand.correct))
    n = cand.correct.size
    diff, bound = (gained - lost) / n, 0.0 - th.max_regression
    p = stats.paired_gain_pvalue(gained, lost, n, th.max_regression)
    if th.max_regression == 0:
        test = "exact McNemar test"
        _, low, high = stats.mcnemar_gain(gained, lost, n, alpha_run)
    else:
        test = "Tango score test"
        low, high = stats.paired_gain_interval(gained, lost, n, alpha_run)
    passed = bool(p < alpha_run)
    detail = (
        f"{cand.label} {cand.accuracy:.4f} vs {champ.label} {champ.accuracy:.4f}: diff {diff:+.4f} "
        f"({gained} won / {lost} lost); one-sided {test} of diff > {bound:+.4f} at level {alpha_run:.2g} "
        f"(budget {th.false_promotion_budget} / {th.horizon_runs} runs / {candidates} candidates): p={p:.3g}, "
        f"{1 - 2 * alpha_run:.2%} CI [{low:+.4f}, {high:+.4f}], lower bound {'>' if passed else '<='} {bound:+.4f}"
    )
    return Check(NO_REGRESSION, passed, True, diff, bound, low, high, p, detail)


def _flips(cand: ModelEval, champ: ModelEval, th: GateThresholds, recalls: stats.ClassRecallDrops
           ) -> tuple[dict[str, Any], stats.FlipRates]:
    """The flips as the record shows them: plain numbers, every class (decision.md shows the worst)."""
    f = stats.flip_rates(cand.y_true, cand.correct, champ.correct, len(cand.class_names), th.ci_level)

    def rate(name: str, k: int, n: int) -> dict[str, Any]:  # {"nfr": share, "nfr_ci": [low, high]}
        v, ci = f.rate(k, n)
        return {name: _plain(v), f"{name}_ci": [_plain(x) for x in ci]}

    per_class = []
    for k, name in enumerate(cand.class_names):
        support, neg, pos = int(f.support[k]), int(f.negative_per_class[k]), int(f.positive_per_class[k])
        per_class.append({"class": name, "support": support, **rate("nfr", neg, support), **rate("pfr", pos, support),
                          "negative_flips": neg, "positive_flips": pos,
                          "recall_candidate": _plain(recalls.recall_candidate[k]),  # NaN (no images): None
                          "recall_champion": _plain(recalls.recall_reference[k])})
    record = {**rate("nfr", f.negative, f.n), **rate("pfr", f.positive, f.n),
              **rate("nfi", f.negative, f.candidate_errors), "negative_flips": f.negative,
              "positive_flips": f.positive, "n": f.n, "ci_level": th.ci_level, "per_class": per_class}
    return record, f


def _negative_flips(f: stats.FlipRates, champ: ModelEval, th: GateThresholds) -> Check:
    """Refuse only where the evidence says the NFR is above the limit: its one-sided Wilson lower bound
    at `alpha`. A veto can only block promotions, so it spends none of the false-promotion budget."""
    low, high = stats.wilson_interval(f.negative, f.n, 1 - 2 * th.alpha)
    limit = th.max_negative_flip_rate
    numbers = (
        f"{f.negative} of {f.n} images that {champ.label} got right are now wrong: NFR {f.nfr:.4f}, one-sided "
        f"{1 - th.alpha:.0%} lower bound {low:.4f}; {f.positive} newly right (PFR {f.pfr:.4f})"
    )
    if limit is None:
        return Check(NEGATIVE_FLIPS, True, False, f.nfr, None, low, high, detail=f"off: {numbers}")
    passed = bool(low <= limit)
    detail = f"{numbers}; lower bound {'<=' if passed else '>'} max_negative_flip_rate {limit:.4f}"
    return Check(NEGATIVE_FLIPS, passed, True, f.nfr, limit, low, high, detail=detail)


def _class_recall(cand: ModelEval, champ: ModelEval, th: GateThresholds, res: stats.ClassRecallDrops) -> Check:
    """Veto only where Holm-adjusted evidence says a class's recall fell by more than the margin."""
    tested = np.flatnonzero(res.support > 0)
    # Worst class: strongest evidence of a drop, then the largest drop.
    worst = int(tested[np.lexsort((-res.drop[tested], res.p_adjusted[tested]))[0]])
    vetoed = [cand.class_names[k] for k in tested if res.p_adjusted[k] < th.alpha]
    mask = cand.y_true == worst
    ci = stats.paired_bootstrap_diff(champ.correct[mask], cand.correct[mask], level=th.ci_level,
                                     n_boot=th.bootstrap_samples, seed=(th.seed, 3))
    name = cand.class_names[worst]
    detail = (
        f"worst class {name!r} (n={int(res.support[worst])}): recall {res.recall_reference[worst]:.4f} -> "
        f"{res.recall_candidate[worst]:.4f}, drop {res.drop[worst]:+.4f}, Holm-adjusted p="
        f"{res.p_adjusted[worst]:.3g} for drop > {th.max_class_recall_drop:.4f} (alpha {th.alpha}); "
        + (f"vetoed: {', '.join(vetoed)}" if vetoed else "no class vetoed")
    )
    return Check(CLASS_RECALL, not vetoed, True, float(res.drop[worst]), th.max_class_recall_drop, ci.low, ci.high,
                 float(res.p_adjusted[worst]), detail, subject=name)


def _label_set(candidate: ModelEval, champion: ModelEval | IncomparableChampion | None
               ) -> tuple[Check, dict[str, list[str]] | None]:
    """Same classes, same order as the champion, or a failed check naming what changed.

    A label-set change is a product decision, not a statistical one: the gate never makes it alone."""
    if champion is None:
        return Check(LABEL_SET, True, False, detail="no champion yet"), None
    k = len(candidate.class_names)
    if isinstance(champion, ModelEval):  # _same_test_set has checked the classes are equal
        return Check(LABEL_SET, True, True, detail=f"same {k} classes as {champion.label}"), None
    old, new = list(champion.class_names), list(candidate.class_names)
    added, removed = [c for c in new if c not in old], [c for c in old if c not in new]
    change = {"champion": old, "candidate": new, "added": added, "removed": removed}
    subject = (f"added: {', '.join(added) or 'none'}; removed: {', '.join(removed) or 'none'}"
               if added or removed else "same classes in another order")
    detail = (
        f"{champion.label} was trained on {len(old)} classes {old}, the candidate on {k} {new} ({subject}). "
        "The gate does not promote a change of label set on its own: the champion cannot be scored on "
        "this test split. If the change is intended, review this version and promote it explicitly with "
        "`headstart promote --version <this version> --reason ...`"
    )
    return Check(LABEL_SET, False, True, detail=detail, subject=subject), change


def decide(candidate: ModelEval, baseline: ModelEval, champion: ModelEval | IncomparableChampion | None,
           thresholds: GateThresholds, schedule: ScheduleState | None = None, candidates_compared: int = 2) -> Decision:
    """Decide whether `candidate` (the winner) replaces `champion`.

    `baseline` is always the from-scratch model. When the candidate *is* the baseline (scratch
    won), nothing is claimed for pre-training and the baseline check does not apply. A champion
    trained on other classes fails the `label_set` check: no promotion without a person's say.
    `schedule` is the registry's window state (None: a fresh one); the decision carries it before
    and after this run. Only a run compared against a champion spends budget and counts.
    `candidates_compared`: how many candidates the winner was chosen from on this test split.
    """
    th = thresholds
    before = schedule if schedule is not None else ScheduleState()
    after, alpha_run, flips = before, None, None
    _same_test_set(candidate, baseline)
    if isinstance(champion, ModelEval):
        _same_test_set(candidate, champion)
    elif champion is not None and champion.class_names == candidate.class_names:
        raise DataError(
            f"{champion.label} has the candidate's classes but no predictions on the test split; "
            "re-run evaluate so the gate can compare against it"
        )
    acc = candidate.accuracy
    acc_ci = stats.wilson_interval(int(candidate.correct.sum()), candidate.correct.size, th.ci_level)
    checks = [_floor(ACCURACY_FLOOR, acc, th.min_accuracy, "accuracy", acc_ci),
              _floor(MACRO_F1_FLOOR, candidate.macro_f1, th.min_macro_f1, "macro-F1", None)]
    notes: list[str] = []
    claims_pretraining = candidate.name != baseline.name
    if claims_pretraining:
        margin = th.min_gain_over_baseline
        gain = _paired(BEATS_BASELINE, candidate, baseline, 0.0 if margin is None else margin, th, 1)
        if margin is None:
            gain = replace(gain, passed=True, applies=False, threshold=None, detail="off: " + gain.detail)
        checks.append(gain)
        pretraining_paid = gain.passed if gain.applies else None
    else:
        checks.append(Check(BEATS_BASELINE, True, False, detail="the scratch baseline won; nothing to beat"))
        notes.append(
            f"Pre-training did not pay this time: the model trained from scratch ({candidate.label}, "
            f"accuracy {acc:.4f}) won."
        )
        pretraining_paid = False
    label_check, label_change = _label_set(candidate, champion)
    checks.append(label_check)
    if not isinstance(champion, ModelEval):  # nothing to compare with: the champion-side checks do not apply
        why = "no champion yet" if champion is None else f"{champion.label} was trained on other classes"
        checks += [Check(name, True, False, detail=why) for name in (NO_REGRESSION, CLASS_RECALL, NEGATIVE_FLIPS)]
        notes.append(
            "No champion yet: first run, so only the floor and baseline checks apply." if champion is None else
            f"The label set changed since {champion.label} ({label_check.subject}): its predictions cannot be "
            "compared on this test split. Promote with `headstart promote --version N --reason ...` if intended."
        )
    else:
        alpha_run = alpha_per_run(th, candidates_compared)
        after = before.after_run(alpha_run, th.horizon_runs)
        checks.append(_no_regression(candidate, champion, th, alpha_run, candidates_compared))
        recalls = stats.class_recall_drops(candidate.y_true, candidate.correct, champion.correct,
                                           len(candidate.class_names), th.max_class_recall_drop)
        checks.append(_class_recall(candidate, champion, th, recalls))
        flips, rates = _flips(candidate, champion, th, recalls)
        checks.append(_negative_flips(rates, champion, th))
    failed = [c for c in checks if c.applies and not c.passed]
    return Decision(
        promote=not failed,
        candidate=candidate.name,
        candidate_version=candidate.version,
        baseline=baseline.name,
        baseline_version=baseline.version,
        champion=None if champion is None else champion.name,
        champion_version=None if champion is None else champion.version,
        checks=tuple(checks),
        first_run=champion is None,
        pretraining_paid=pretraining_paid,
        reasons=tuple(f"{c.name} failed: {c.detail}." for c in failed),
        notes=tuple(notes),
        thresholds=th.model_dump(),
        label_change=label_change,
        flips=flips,
        alpha_run=alpha_run,
        schedule_before=before,
        schedule_after=after,
        candidates_compared=candidates_compared,
    )
