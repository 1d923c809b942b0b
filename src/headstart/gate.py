"""The promotion gate: a pure, seeded decision on paired evidence, recorded with every number.

Why evidence and not point estimates: on a few thousand test images a half-point "gain" is
often noise, and a scheduled pipeline that promotes noise churns production. So every
comparison is paired on the same images (McNemar, bootstrap CI of the difference) and a check
that needs a gain passes only when the CI's lower bound clears the margin. Every check is run
and recorded, failed or not, so a rejection explains itself. Registry writes happen elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import Field

from headstart import stats
from headstart.config import Frozen
from headstart.errors import DataError

ACCURACY_FLOOR = "accuracy_floor"
MACRO_F1_FLOOR = "macro_f1_floor"
BEATS_BASELINE = "beats_baseline"
NO_REGRESSION = "no_regression"
CLASS_RECALL = "class_recall"
LABEL_SET = "label_set"
CHECK_NAMES = (ACCURACY_FLOOR, MACRO_F1_FLOOR, BEATS_BASELINE, LABEL_SET, NO_REGRESSION, CLASS_RECALL)
SUMMARY_MAX = 250


class GateThresholds(Frozen):
    """The `gate` section of params.yaml.

    `max_regression` defaults to 0: the candidate must beat the champion with `ci_level`
    confidence (CI lower bound > 0). With 0.01, the benchmark shows equal models are promoted
    almost every time (benchmarks/gate_simulation.py), i.e. the pipeline would churn.
    """

    min_accuracy: float = Field(0.80, ge=0.0, le=1.0)
    min_macro_f1: float | None = Field(None, ge=0.0, le=1.0)
    min_gain_over_baseline: float | None = Field(0.0, ge=-1.0, le=1.0)
    max_regression: float = Field(0.0, ge=0.0, le=1.0)
    max_class_recall_drop: float = Field(0.05, ge=0.0, lt=1.0)
    ci_level: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(2000, ge=100)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)


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
            sign = "" if c.name in (ACCURACY_FLOOR, MACRO_F1_FLOOR) else "+"
            ci = "" if c.ci_low is None else f"[{c.ci_low:{sign}.4f}, {c.ci_high:{sign}.4f}]"
            p = "" if c.p_value is None else f"{c.p_value:.3g}"
            lines.append(
                f"| {c.name} | {result} | {_fmt(c.value)} | {_fmt(c.threshold)} | {ci} "
                f"| {p} | {c.detail.replace('|', '/')} |"
            )
        if self.reasons:
            lines += ["", "### Why it was rejected", ""] + [f"- {r}" for r in self.reasons]
        if self.notes:
            lines += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

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


def _floor(
    name: str, value: float, threshold: float | None, what: str, ci: tuple[float, float] | None
) -> Check:
    if threshold is None:
        return Check(name, True, False, value, None, detail=f"{what} {value:.4f}; no floor set")
    passed = bool(value >= threshold)
    low, high = ci if ci else (None, None)
    detail = f"{what} {value:.4f} {'>=' if passed else '<'} {threshold:.4f}"
    return Check(name, passed, True, value, threshold, low, high, detail=detail)


def _paired(
    name: str, cand: ModelEval, other: ModelEval, bound: float, th: GateThresholds, stream: int
) -> Check:
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


def _class_recall(cand: ModelEval, champ: ModelEval, th: GateThresholds) -> Check:
    """Veto only where Holm-adjusted evidence says a class's recall fell by more than the margin."""
    res = stats.class_recall_drops(
        cand.y_true, cand.correct, champ.correct, len(cand.class_names), th.max_class_recall_drop
    )
    tested = np.flatnonzero(res.support > 0)
    # Worst class: strongest evidence of a drop, then the largest drop.
    worst = int(tested[np.lexsort((-res.drop[tested], res.p_adjusted[tested]))[0]])
    vetoed = [cand.class_names[k] for k in tested if res.p_adjusted[k] < th.alpha]
    mask = cand.y_true == worst
    ci = stats.paired_bootstrap_diff(
        champ.correct[mask],
        cand.correct[mask],
        level=th.ci_level,
        n_boot=th.bootstrap_samples,
        seed=(th.seed, 3),
    )
    name = cand.class_names[worst]
    detail = (
        f"worst class {name!r} (n={int(res.support[worst])}): recall {res.recall_reference[worst]:.4f} -> "
        f"{res.recall_candidate[worst]:.4f}, drop {res.drop[worst]:+.4f}, Holm-adjusted p="
        f"{res.p_adjusted[worst]:.3g} for drop > {th.max_class_recall_drop:.4f} (alpha {th.alpha}); "
        + (f"vetoed: {', '.join(vetoed)}" if vetoed else "no class vetoed")
    )
    return Check(
        name=CLASS_RECALL,
        passed=not vetoed,
        applies=True,
        value=float(res.drop[worst]),
        threshold=th.max_class_recall_drop,
        ci_low=ci.low,
        ci_high=ci.high,
        p_value=float(res.p_adjusted[worst]),
        detail=detail,
        subject=name,
    )


def _label_set(
    candidate: ModelEval, champion: ModelEval | IncomparableChampion | None
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


def _reason(c: Check) -> str:
    return f"{c.name} failed: {c.detail}."


def decide(
    candidate: ModelEval,
    baseline: ModelEval,
    champion: ModelEval | IncomparableChampion | None,
    thresholds: GateThresholds,
) -> Decision:
    """Decide whether `candidate` (the winner) replaces `champion`.

    `baseline` is always the from-scratch model. When the candidate *is* the baseline (scratch
    won), nothing is claimed for pre-training and the baseline check does not apply. A champion
    trained on other classes fails the `label_set` check: no promotion without a person's say.
    """
    th = thresholds
    _same_test_set(candidate, baseline)
    if isinstance(champion, ModelEval):
        _same_test_set(candidate, champion)
    elif champion is not None and champion.class_names == candidate.class_names:
        raise DataError(
            f"{champion.label} has the candidate's classes but no predictions on the test split; "
            "re-run evaluate so the gate can compare against it"
        )
    acc = candidate.accuracy
    checks = [
        _floor(
            ACCURACY_FLOOR,
            acc,
            th.min_accuracy,
            "accuracy",
            stats.wilson_interval(int(candidate.correct.sum()), candidate.correct.size, th.ci_level),
        ),
        _floor(MACRO_F1_FLOOR, candidate.macro_f1, th.min_macro_f1, "macro-F1", None),
    ]
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
    if champion is None:
        for name in (NO_REGRESSION, CLASS_RECALL):
            checks.append(Check(name, True, False, detail="no champion yet"))
        notes.append("No champion yet: first run, so only the floor and baseline checks apply.")
    elif isinstance(champion, IncomparableChampion):
        for name in (NO_REGRESSION, CLASS_RECALL):
            checks.append(Check(name, True, False, detail=f"{champion.label} was trained on other classes"))
        notes.append(
            f"The label set changed since {champion.label} ({label_check.subject}): its predictions cannot be "
            "compared on this test split. Promote with `headstart promote --version N --reason ...` if intended."
        )
    else:
        checks.append(_paired(NO_REGRESSION, candidate, champion, 0.0 - th.max_regression, th, 2))
        checks.append(_class_recall(candidate, champion, th))
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
        reasons=tuple(_reason(c) for c in failed),
        notes=tuple(notes),
        thresholds=th.model_dump(),
        label_change=label_change,
    )
