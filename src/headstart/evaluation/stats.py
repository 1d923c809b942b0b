"""Paired statistics on per-image correctness, for comparing two models on the same test images.

Why paired: two models scored on the same images make correlated errors (both miss the hard
ones), so the uncertainty of their accuracy *difference* is driven by the images where they
disagree, and is far smaller than two independent confidence intervals suggest. Everything here
is a pure function of arrays; the gate turns the numbers into decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

Seed = int | Sequence[int]


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test. `b01`: a wrong and b right; `b10`: a right and b wrong."""

    b01: int
    b10: int
    p_value: float


@dataclass(frozen=True)
class DiffCI:
    """Paired accuracy difference `acc_a - acc_b` with a percentile-bootstrap interval."""

    diff: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class ClassRecallDrops:
    """Per-class recall of a candidate against a reference, and the evidence of a drop beyond a margin.

    `drop` is reference minus candidate (positive = the candidate got worse). `p_value` is the
    one-sided test of "drop > margin"; `p_adjusted` is Holm-corrected across the classes that
    have test images. Classes without test images carry NaN.
    """

    support: np.ndarray
    recall_candidate: np.ndarray
    recall_reference: np.ndarray
    drop: np.ndarray
    p_value: np.ndarray
    p_adjusted: np.ndarray


def _as_bool_pair(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a_correct, dtype=bool).ravel()
    b = np.asarray(b_correct, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("paired arrays are empty: nothing to compare")
    return a, b


def _with_labels(y_true: np.ndarray, a_correct: np.ndarray, b_correct: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    a, b = _as_bool_pair(a_correct, b_correct)
    if y.shape != a.shape:
        raise ValueError(f"labels and correctness differ in length: {y.size} vs {a.size}")
    return y, a, b


def _counts(n_classes: int, *labels: np.ndarray) -> list[np.ndarray]:
    """Images of each class 0..n_classes-1 in each array of labels."""
    return [np.bincount(y, minlength=n_classes)[:n_classes] for y in labels]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact label matches."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in y_true or y_pred (as scikit-learn does)."""
    f1 = per_class_prf(y_true, y_pred, n_classes)["f1"]
    f1 = f1[~np.isnan(f1)]  # the classes that occur
    return float(f1.mean()) if f1.size else float("nan")


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n; honest near 0 and 1, unlike the Wald interval."""
    if n <= 0:
        return float("nan"), float("nan")
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Two-sided exact McNemar test: under H0 the discordant pairs split 50/50 (binomial)."""
    a, b = _as_bool_pair(a_correct, b_correct)
    b01 = int(np.count_nonzero(~a & b))
    b10 = int(np.count_nonzero(a & ~b))
    n = b01 + b10
    p = 1.0 if n == 0 else min(1.0, 2.0 * float(sps.binom.cdf(min(b01, b10), n, 0.5)))
    return McNemar(b01=b01, b10=b10, p_value=p)


def paired_bootstrap_diff(a_correct: np.ndarray, b_correct: np.ndarray, *, level: float = 0.95, n_boot: int = 2000,
                          seed: Seed = 0) -> DiffCI:
    """Percentile-bootstrap CI of `acc_a - acc_b`, resampling images (pairs) with replacement.

    Why multinomial counts: the difference depends only on how many resampled images fall in
    the "a right, b wrong" and "a wrong, b right" cells, so drawing those counts directly is
    exactly the image bootstrap at O(n_boot) cost instead of O(n_boot * n_images).
    """
    a, b = _as_bool_pair(a_correct, b_correct)
    n = a.size
    n10 = int(np.count_nonzero(a & ~b))
    n01 = int(np.count_nonzero(~a & b))
    diff = (n10 - n01) / n
    if n10 + n01 == 0:
        return DiffCI(diff=0.0, low=0.0, high=0.0, level=level)
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, [n10 / n, n01 / n, (n - n10 - n01) / n], size=n_boot)
    diffs = (cells[:, 0] - cells[:, 1]) / n
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return DiffCI(diff=float(diff), low=float(low), high=float(high), level=level)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order. NaN entries are not counted as tests."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def _tango_z(lost: int, gained: int, n: int, d: float) -> float:
    """Tango's score statistic for "drop = d". With a restricted variance of 0 (no discordant pairs at d = 0)
    it is +-inf, or 0 when the data sit exactly on d: no evidence either way."""
    b_coef = -(lost + gained) + d * (2 * n - lost + gained)
    c_coef = -gained * d * (1 - d)
    p_gain = (-b_coef + np.sqrt(b_coef * b_coef - 8 * n * c_coef)) / (4 * n)
    var = n * (2 * p_gain + d * (1 - d))
    num = lost - gained - n * d
    if var <= 0:
        return 0.0 if num == 0 else float(np.copysign(np.inf, num))
    return float(num / np.sqrt(var))


def mcnemar_gain(gained: int, lost: int, n: int, alpha: float) -> tuple[float, float, float]:
    """One-sided exact McNemar test of "the candidate is better" and its matching interval for acc_cand - acc_ref.

    Returns (p, low, high). Conditional on the d = gained + lost discordant images, `gained` is Bin(d, 1/2)
    under H0, so p = P(X >= gained) holds its level for any d, where the normal approximation does not at
    levels near 0.001 (about 1.3x too liberal at d = 20). The interval is Clopper-Pearson on the share won,
    mapped to the difference (d / n) * (2 share - 1), `alpha` in each tail: low > 0 exactly when p < alpha.
    """
    d = gained + lost
    if d == 0:
        return 1.0, 0.0, 0.0
    p = float(sps.binom.sf(gained - 1, d, 0.5))
    share_low = float(sps.beta.ppf(alpha, gained, lost + 1)) if gained else 0.0
    share_high = float(sps.beta.isf(alpha, gained + 1, lost)) if lost else 1.0
    return p, d / n * (2 * share_low - 1), d / n * (2 * share_high - 1)


def paired_drop_pvalue(lost: int, gained: int, n: int, margin: float) -> float:
    """One-sided p-value for "paired proportion dropped by more than `margin`" (Tango's score test).

    `lost`: items the reference got right and the candidate wrong; `gained`: the reverse; `n`:
    all items. H0: drop <= margin; H1: drop > margin. The variance uses the maximum-likelihood
    cell probabilities restricted to the H0 boundary (Tango 1998, Stat Med 17:891), which keeps
    the test well-behaved with few discordant pairs, where the Wald version is not.
    """
    if n <= 0:
        return float("nan")
    if lost == gained == 0 and margin == 0:
        return 1.0
    return float(sps.norm.sf(_tango_z(lost, gained, n, margin)))


def paired_gain_pvalue(gained: int, lost: int, n: int, margin: float) -> float:
    """One-sided p-value for "the candidate is better than the reference minus `margin`" (Tango's score test).

    The mirror of `paired_drop_pvalue`: H0: acc_cand - acc_ref <= -margin; H1: it is above. Why not
    the bootstrap: the gate runs it at levels near 0.001, where 2,000 bootstrap samples put a handful
    of draws in the tail. At margin 0 it is McNemar's exact test (`mcnemar_gain`), which keeps its
    level with few discordant images where the normal approximation does not.
    """
    if n <= 0:
        return float("nan")
    if margin == 0:
        return mcnemar_gain(gained, lost, n, 0.5)[0]
    return float(sps.norm.cdf(_tango_z(lost, gained, n, margin)))


def _gain_lower_bound(gained: int, lost: int, n: int, alpha: float) -> float:
    """Smallest -margin the one-sided test at `alpha` still rejects, i.e. the inverted score test."""
    drop_hat = (lost - gained) / n
    if drop_hat >= 1.0:
        return -1.0
    z_alpha = float(sps.norm.isf(alpha))
    hi = 1.0 - 1e-12
    if _tango_z(lost, gained, n, hi) + z_alpha >= 0:
        return -1.0
    return -float(brentq(lambda d: _tango_z(lost, gained, n, d) + z_alpha, drop_hat, hi, xtol=1e-10))


def paired_gain_interval(gained: int, lost: int, n: int, alpha: float) -> tuple[float, float]:
    """Score interval for acc_cand - acc_ref with `alpha` in each tail (Tango 1998, inverted).

    Its lower end is exactly the bound `paired_gain_pvalue` tests: lower > -margin iff p < alpha
    (up to the root finder's 1e-10), so a record's interval and its verdict never disagree.
    """
    if n <= 0:
        return float("nan"), float("nan")
    return _gain_lower_bound(gained, lost, n, alpha), -_gain_lower_bound(lost, gained, n, alpha)


def class_recall_drops(y_true: np.ndarray, candidate_correct: np.ndarray, reference_correct: np.ndarray, n_classes: int,
                       margin: float) -> ClassRecallDrops:
    """Per class, test whether the candidate's recall fell more than `margin` below the reference's.

    Why Holm: with ten classes, ten uncorrected 5% tests would veto an equal model about 40% of
    the time; Holm keeps the chance of any false veto at alpha without assuming independence.
    """
    y, cand, ref = _with_labels(y_true, candidate_correct, reference_correct)
    support, cand_hits, ref_hits, lost, gained = _counts(n_classes, y, y[cand], y[ref], y[ref & ~cand], y[cand & ~ref])
    rec_c = np.where(support > 0, cand_hits / np.maximum(support, 1), np.nan)
    rec_r = np.where(support > 0, ref_hits / np.maximum(support, 1), np.nan)
    p = np.array([paired_drop_pvalue(int(lost[k]), int(gained[k]), int(support[k]), margin) if support[k] > 0
                  else np.nan for k in range(n_classes)])
    return ClassRecallDrops(support, rec_c, rec_r, rec_r - rec_c, p, holm(p))


@dataclass(frozen=True)
class FlipRates:
    """Flips of a candidate against a reference on the same images (Yan et al., CVPR 2021).

    A negative flip: the reference right, the candidate wrong; a positive flip the reverse. NFR and PFR
    are shares of *all* images (of the class's images, per class); NFI is negative flips over the
    candidate's errors: how many of its mistakes are new. Intervals are Wilson at `level`.
    """

    n: int
    negative: int
    positive: int
    candidate_errors: int
    level: float
    support: np.ndarray  # per class
    negative_per_class: np.ndarray
    positive_per_class: np.ndarray

    def rate(self, k: int, n: int) -> tuple[float, tuple[float, float]]:
        """The share k/n and its Wilson interval at `level`; NaN without images."""
        return (k / n if n else float("nan")), wilson_interval(k, n, self.level)

    @property
    def nfr(self) -> float:
        return self.negative / self.n

    @property
    def pfr(self) -> float:
        return self.positive / self.n

    @property
    def nfi(self) -> float:
        return self.negative / self.candidate_errors if self.candidate_errors else float("nan")


def flip_rates(y_true: np.ndarray, candidate_correct: np.ndarray, reference_correct: np.ndarray, n_classes: int,
               level: float = 0.95) -> FlipRates:
    """Count negative and positive flips overall and per class: what a swap would break and fix."""
    y, cand, ref = _with_labels(y_true, candidate_correct, reference_correct)
    neg, pos = ref & ~cand, cand & ~ref
    return FlipRates(int(y.size), int(neg.sum()), int(pos.sum()), int((~cand).sum()), level,
                     *_counts(n_classes, y, y[neg], y[pos]))


def per_class_prf(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class; NaN where a ratio has no denominator."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp, support, predicted = _counts(n_classes, y_true[y_true == y_pred], y_true, y_pred)
    tp = tp.astype(float)
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan)
    recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
    f1 = np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), np.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE over `bins` equal-width confidence bins: the image-weighted mean |accuracy - confidence|
    (Guo et al., 2017). How far a served `confidence` can be read as a probability of being right."""
    conf, ok = np.asarray(confidence, dtype=float).ravel(), np.asarray(correct, dtype=bool).ravel()
    if conf.size == 0:
        return float("nan")
    counts, acc, mean_conf = reliability(conf, ok, bins)
    seen = counts > 0
    return float(np.sum(counts[seen] * np.abs(acc[seen] - mean_conf[seen])) / conf.size)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> tuple[np.ndarray, ...]:
    """Per equal-width confidence bin (right-closed, the first also holds 0): images, accuracy and mean
    confidence (NaN in an empty bin)."""
    conf, ok = np.asarray(confidence, dtype=float).ravel(), np.asarray(correct, dtype=bool).ravel()
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(which, weights=ok.astype(float), minlength=bins) / counts
        mean_conf = np.bincount(which, weights=conf, minlength=bins) / counts
    return counts, acc, mean_conf


def paired_recall_diff(
    y_true: np.ndarray, a_correct: np.ndarray, b_correct: np.ndarray, n_classes: int, level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, recall(a) - recall(b) on the same images and its normal interval from the discordant
    pairs: var = (g + l - (g - l)^2 / n) / n^2 with g, l the images only a, only b got right. Analytic,
    so 1,000 classes cost one bincount (a per-class bootstrap would not fit in a report)."""
    y, a, b = _with_labels(y_true, a_correct, b_correct)
    n, gained, lost = (c.astype(float) for c in _counts(n_classes, y, y[a & ~b], y[b & ~a]))
    z = float(sps.norm.ppf(0.5 + level / 2))
    diff = np.where(n > 0, (gained - lost) / np.maximum(n, 1), np.nan)
    half = z * np.sqrt(np.maximum(gained + lost - (gained - lost) ** 2 / np.maximum(n, 1), 0)) / np.maximum(n, 1)
    return diff, diff - half, diff + half


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Counts of (true, predicted) class pairs: row = true class, column = predicted."""
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
