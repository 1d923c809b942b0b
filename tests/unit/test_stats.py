"""The paired statistics against hand-computed values and seeded simulations."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from headstart.evaluation import stats


def _pairs(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with the given 2x2 table (first index: a right, second: b right)."""
    a = np.repeat([True, True, False, False], [n11, n10, n01, n00])
    b = np.repeat([True, False, True, False], [n11, n10, n01, n00])
    return a, b


def test_mcnemar_hand_computed_table() -> None:
    # 13 discordant pairs, 3 vs 10: p = 2 * P(X <= 3 | Bin(13, 1/2)) = 2 * (1 + 13 + 78 + 286) / 2**13.
    a, b = _pairs(50, 10, 3, 7)
    res = stats.mcnemar_exact(a, b)
    assert (res.b01, res.b10) == (3, 10)
    assert res.p_value == pytest.approx(756 / 8192, rel=1e-12)
    assert stats.mcnemar_exact(b, a).p_value == pytest.approx(res.p_value)


def test_mcnemar_edge_cases() -> None:
    assert stats.mcnemar_exact(*_pairs(5, 0, 0, 5)).p_value == 1.0
    assert stats.mcnemar_exact(*_pairs(0, 5, 5, 0)).p_value == 1.0
    # 8 vs 0: 2 / 2**8.
    assert stats.mcnemar_exact(*_pairs(0, 8, 0, 0)).p_value == pytest.approx(2 / 256)
    with pytest.raises(ValueError, match="length"):
        stats.mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_bootstrap_ci_covers_true_difference_about_95_percent() -> None:
    # Population: a right & b wrong 6%, a wrong & b right 4%, so the true difference is +0.02.
    rng = np.random.default_rng(1234)
    probs = [0.80, 0.06, 0.04, 0.10]
    covered, sims = 0, 200
    for i in range(sims):
        a, b = _pairs(*rng.multinomial(1000, probs))
        ci = stats.paired_bootstrap_diff(a, b, level=0.95, n_boot=2000, seed=i)
        assert ci.low <= ci.diff <= ci.high
        covered += ci.low <= 0.02 <= ci.high
    assert 0.91 <= covered / sims <= 0.985


def test_bootstrap_point_estimate_seeded_and_degenerate() -> None:
    a, b = _pairs(900, 60, 40, 0)
    ci = stats.paired_bootstrap_diff(a, b, level=0.9, n_boot=500, seed=7)
    assert ci.diff == pytest.approx(0.02) and ci.level == 0.9
    assert ci == stats.paired_bootstrap_diff(a, b, level=0.9, n_boot=500, seed=7)
    assert stats.paired_bootstrap_diff(a, a).low == stats.paired_bootstrap_diff(a, a).high == 0.0


def test_bootstrap_is_fast_on_10k_images() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(10_000) < 0.9, rng.random(10_000) < 0.88
    t0 = time.perf_counter()
    stats.paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    assert time.perf_counter() - t0 < 0.5


def test_holm_worked_example() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06.
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    # NaN (a class without test images) is not counted as a test.
    np.testing.assert_allclose(stats.holm([np.nan, 0.01, 0.02]), [np.nan, 0.02, 0.02])


def test_accuracy_recall_and_macro_f1() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    assert stats.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    np.testing.assert_allclose(stats.per_class_prf(y_true, y_pred, 4)["recall"], [0.5, 2 / 3, 1.0, np.nan])
    # F1: class 0 = 2*1/(2+2), class 1 = 2*2/(3+3), class 2 = 1; class 3 absent everywhere.
    assert stats.macro_f1(y_true, y_pred, 4) == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)


def test_macro_f1_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 5, 300), rng.integers(0, 6, 300)
    assert stats.macro_f1(y_true, y_pred, 6) == pytest.approx(
        metrics.f1_score(y_true, y_pred, average="macro")
    )


def test_wilson_interval_known_value() -> None:
    low, high = stats.wilson_interval(8, 10, 0.95)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))


@pytest.mark.parametrize(("lost", "gained", "n", "margin"), [(30, 10, 200, 0.05), (12, 3, 1000, 0.02)])
def test_drop_test_uses_restricted_maximum_likelihood(lost: int, gained: int, n: int, margin: float) -> None:
    """The closed form equals a numerical MLE of p(gained) on the boundary drop == margin."""

    def nll(p: float) -> float:
        return -(
            lost * np.log(p + margin) + gained * np.log(p) + (n - lost - gained) * np.log(1 - 2 * p - margin)
        )

    p_tilde = minimize_scalar(nll, bounds=(1e-12, (1 - margin) / 2 - 1e-12), method="bounded").x
    z = (lost - gained - n * margin) / np.sqrt(n * (2 * p_tilde + margin * (1 - margin)))
    from scipy.stats import norm

    assert stats.paired_drop_pvalue(lost, gained, n, margin) == pytest.approx(norm.sf(z), rel=1e-4)


def test_drop_test_direction_and_size() -> None:
    assert stats.paired_drop_pvalue(60, 0, 600, 0.05) < 1e-6  # dropped 10 points: beyond 5
    assert stats.paired_drop_pvalue(0, 0, 600, 0.05) > 0.99  # nothing changed
    assert stats.paired_drop_pvalue(0, 0, 600, 0.0) == 1.0
    # At the H0 boundary (true drop == margin) the test rejects about alpha of the time, not more.
    rng = np.random.default_rng(5)
    counts = rng.multinomial(500, [0.08, 0.03, 0.89], size=2000)
    p = np.array([stats.paired_drop_pvalue(int(lo), int(ga), 500, 0.05) for lo, ga, _ in counts])
    assert 0.02 <= np.mean(p < 0.05) <= 0.075


def test_class_recall_drops_flags_only_the_dropped_class() -> None:
    y = np.repeat(np.arange(4), 500)
    ref = np.ones(2000, bool)
    cand = ref.copy()
    cand[:75] = False  # class 0 loses 15 points
    cand[500:510] = False  # class 1 loses 2 points: within the 5-point margin
    res = stats.class_recall_drops(y, cand, ref, n_classes=5, margin=0.05)
    np.testing.assert_allclose(res.drop[:4], [0.15, 0.02, 0.0, 0.0])
    assert res.p_adjusted[0] < 1e-6 and (res.p_adjusted[1:4] > 0.5).all()
    assert np.isnan(res.p_value[4]) and res.support[4] == 0


def test_gain_test_at_margin_zero_is_mcnemars_exact_test() -> None:
    from scipy.stats import binom

    assert stats.paired_gain_pvalue(750, 550, 10_000, 0.0) == pytest.approx(binom.sf(749, 1300, 0.5), rel=1e-9)
    assert stats.paired_gain_pvalue(550, 750, 10_000, 0.0) == pytest.approx(binom.sf(549, 1300, 0.5), rel=1e-9)
    assert stats.paired_gain_pvalue(0, 0, 3000, 0.0) == 1.0  # identical models: no evidence at all
    assert stats.paired_gain_pvalue(0, 0, 3000, 0.01) < 1e-6  # but clearly not 1 point worse


@pytest.mark.parametrize(("gained", "lost", "n", "margin"), [(30, 10, 200, 0.05), (3, 12, 1000, 0.02)])
def test_gain_test_mirrors_the_drop_test(gained: int, lost: int, n: int, margin: float) -> None:
    """H0 'gain <= -margin' is the complement of H1 'drop > margin': the two p-values add up to 1."""
    assert stats.paired_gain_pvalue(gained, lost, n, margin) == pytest.approx(
        1 - stats.paired_drop_pvalue(lost, gained, n, margin), abs=1e-12)


@pytest.mark.parametrize(("gained", "lost"), [(700, 580), (20, 5), (0, 30), (300, 0), (0, 0)])
def test_gain_interval_is_the_inverted_test(gained: int, lost: int) -> None:
    """The lower end sits exactly where the one-sided test at alpha turns: the record and the verdict agree."""
    n, alpha = 3000, 0.1 / 52 / 2
    low, high = stats.paired_gain_interval(gained, lost, n, alpha)
    assert low <= (gained - lost) / n <= high
    assert stats.paired_gain_pvalue(gained, lost, n, -low - 1e-6) > alpha > stats.paired_gain_pvalue(
        gained, lost, n, -low + 1e-6)
    assert (low, high) == pytest.approx((-stats.paired_gain_interval(lost, gained, n, alpha)[1],
                                          -stats.paired_gain_interval(lost, gained, n, alpha)[0]))


@pytest.mark.parametrize("d", [20, 60, 400, 1300])
def test_exact_mcnemar_gain_keeps_its_level_near_one_in_a_thousand(d: int) -> None:
    """Equal models, d discordant images: the exact rejection probability stays at or under the schedule's
    level (the normal approximation gives 1.34x at d = 20), and the interval's sign agrees with the test."""
    from scipy.stats import binom

    alpha = 0.1 / 52 / 2
    results = [stats.mcnemar_gain(g, d - g, 10_000, alpha) for g in range(d + 1)]
    rejected = np.array([p < alpha for p, _, _ in results])
    assert rejected.tolist() == [low > 0 for _, low, _ in results]
    level = binom.pmf(np.arange(d + 1), d, 0.5)[rejected].sum()
    assert 0.2 * alpha < level <= alpha


def test_exact_mcnemar_gain_hand_computed() -> None:
    # 10 won, 3 lost: p = P(X >= 10 | Bin(13, 1/2)) = (286 + 78 + 13 + 1) / 2**13.
    p, low, high = stats.mcnemar_gain(10, 3, 100, 0.05)
    assert p == pytest.approx(378 / 8192, rel=1e-12)
    from scipy.stats import beta

    assert low == pytest.approx(0.13 * (2 * beta.ppf(0.05, 10, 4) - 1), rel=1e-12)
    assert high == pytest.approx(0.13 * (2 * beta.ppf(0.95, 11, 3) - 1), rel=1e-12)
    assert low < 7 / 100 < high
    assert stats.mcnemar_gain(0, 0, 100, 0.05) == (1.0, 0.0, 0.0)
    assert stats.mcnemar_gain(5, 0, 100, 0.05)[2] == pytest.approx(0.05)  # all won: the upper end is d / n


def test_flip_rates_hand_computed() -> None:
    # 10 images, 3 classes. Reference right / candidate right per image:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    ref = np.array([1, 1, 1, 0, 1, 1, 0, 1, 0, 0], bool)
    cand = np.array([1, 0, 0, 1, 1, 1, 1, 0, 0, 1], bool)
    f = stats.flip_rates(y, cand, ref, n_classes=4, level=0.9)
    # negative flips (ref right, cand wrong): images 1, 2 (class 0), 7 (class 2); positive: 3 (c0), 6 (c1), 9 (c2).
    assert (f.n, f.negative, f.positive, f.candidate_errors) == (10, 3, 3, 4)
    assert (f.nfr, f.pfr, f.nfi) == (0.3, 0.3, 0.75)
    assert f.support.tolist() == [4, 3, 3, 0]
    assert f.negative_per_class.tolist() == [2, 0, 1, 0] and f.positive_per_class.tolist() == [1, 1, 1, 0]
    z = 1.6448536269514722  # two-sided 90%
    p, n = 0.3, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    rate, ci = f.rate(f.negative, f.n)
    assert rate == 0.3 and ci == pytest.approx((centre - half, centre + half), rel=1e-9)
    rate, ci = f.rate(0, 0)
    assert np.isnan(rate) and all(np.isnan(ci))
    none = stats.flip_rates(y, cand, cand, n_classes=3)
    assert (none.negative, none.positive, none.nfr) == (0, 0, 0.0)
    perfect = stats.flip_rates(y, np.ones(10, bool), ref, n_classes=3)
    assert perfect.candidate_errors == 0 and np.isnan(perfect.nfi)
    with pytest.raises(ValueError, match="length"):
        stats.flip_rates(y[:5], cand, ref, n_classes=3)
