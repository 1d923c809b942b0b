"""The paired statistics against hand-computed values and seeded simulations."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from headstart import stats


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
    np.testing.assert_allclose(stats.per_class_recall(y_true, y_pred, 4), [0.5, 2 / 3, 1.0, np.nan])
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
