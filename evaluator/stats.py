"""Confidence intervals for proportions (recall, precision of one slice).

The evaluator calls a slice *weak* when its recall's Wilson 95% interval lies entirely below
the overall recall (see :func:`significantly_below`). Wilson rather than the normal ("Wald")
interval because slices are small and recalls sit near 0 or 1, where Wald collapses to a point.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials.

    ``n == 0`` gives the uninformative ``(0.0, 1.0)``. Example: ``wilson_interval(5, 10)`` is
    ``(0.2366, 0.7634)`` to four decimals.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, but got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # the bounds are exactly 0 / 1 at k = 0 / k = n; do not let rounding move them
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def significantly_below(k: int, n: int, reference: float, z: float = Z95) -> bool:
    """True when the Wilson upper bound of ``k/n`` is below ``reference``.

    This is a one-sided test at about the 2.5% level per slice; with many slices a few
    borderline ones can pass by chance, which is why weak slices are also ranked by
    ``gap × sqrt(support)`` and the tiny ones sink.
    """
    if n == 0 or k / n >= reference:
        return False
    return wilson_interval(k, n, z)[1] < reference
