"""Wilson intervals against known values; the AP bootstrap is seeded and sensible."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.ap import APData, average_precision, bootstrap_ap
from evaluator.stats import significantly_below, wilson_interval


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    (5, 10, 0.2366, 0.7634),   # textbook example
    (0, 10, 0.0, 0.2775),      # zero successes: upper bound stays informative (Wald gives 0)
    (10, 10, 0.7225, 1.0),
    (50, 100, 0.4038, 0.5962),
    (1, 20, 0.0089, 0.2361),
])
def test_wilson_interval_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    assert significantly_below(0, 20, 0.5)       # upper 0.161 < 0.5
    assert not significantly_below(8, 20, 0.5)   # upper 0.614
    assert not significantly_below(0, 0, 0.9)    # no objects: never significant


def _data(n_images: int = 40, miss_every: int = 3) -> APData:
    """One object and one prediction per image; every ``miss_every``-th prediction is a wrong
    box (an FP, its object missed); ``miss_every=0``: all right."""
    tp = np.array([miss_every == 0 or i % miss_every != 0 for i in range(n_images)])
    score = np.linspace(0.99, 0.1, n_images)
    return APData(pred_score=score, pred_tp=tp, pred_image=np.arange(n_images),
                  pred_class=np.ones(n_images, int), gt_image=np.arange(n_images),
                  gt_class=np.ones(n_images, int), n_images=n_images)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    data = _data()
    a = bootstrap_ap(data, np.random.default_rng(3), resamples=200)
    b = bootstrap_ap(data, np.random.default_rng(3), resamples=200)
    c = bootstrap_ap(data, np.random.default_rng(4), resamples=200)
    assert a == b and a != c
    point = average_precision(data)
    assert a is not None and a[0] < point < a[1]
    assert a[0] >= 0.0 and a[1] <= 1.0


def test_bootstrap_of_perfect_predictions_is_a_point_and_zero_resamples_is_none():
    perfect = _data(miss_every=0)
    assert average_precision(perfect) == pytest.approx(1.0)
    assert bootstrap_ap(perfect, np.random.default_rng(0), 50) == pytest.approx((1.0, 1.0))
    assert bootstrap_ap(perfect, np.random.default_rng(0), 0) is None


def test_all_found_is_never_below_a_perfect_reference():
    for n in range(1, 300):  # rounding must not push the upper bound under 1.0
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
        assert not significantly_below(n, n, 1.0)
