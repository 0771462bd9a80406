"""Range units: every numeric parameter seen through its declared range mapped onto [0, 1].

The policy reasons in these units so that a move of 0.2 means the same thing for
``camera.distance`` (3–12 m) and ``light.intensity`` (0.3–8): a fifth of the range. A current
distribution is summarised as a centre and a spread (standard deviation) in range units; a
categorical one as normalised weights per choice.
"""

from __future__ import annotations

import math

from generator.params import UNIFORM_DISTRIBUTION, Distribution
from generator.scenario import ParamSpec

UNIFORM_SD = 1.0 / math.sqrt(12.0)  # standard deviation of U(0, 1)
MIN_WIDTH = 0.02  # narrowest spread the policy writes (range units)
MAX_WIDTH = 0.6


def bounds(p: ParamSpec) -> tuple[float, float]:
    assert p.range is not None  # numeric ParamSpec always has a range (validated)
    return float(p.range[0]), float(p.range[1])


def to_units(p: ParamSpec, x: float) -> float:
    lo, hi = bounds(p)
    return 0.0 if hi <= lo else (float(x) - lo) / (hi - lo)


def from_units(p: ParamSpec, u: float) -> float:
    lo, hi = bounds(p)
    return min(hi, max(lo, lo + float(u) * (hi - lo)))


def numeric_summary(p: ParamSpec, d: Distribution | None) -> tuple[float, float]:
    """``(centre, spread)`` of a numeric distribution in range units (missing = uniform)."""
    lo, hi = bounds(p)
    centre, sd = (d or UNIFORM_DISTRIBUTION).centre_sd(lo, hi)
    return to_units(p, centre), sd / (hi - lo) if hi > lo else 0.0


def choice_names(p: ParamSpec) -> list[str]:
    return [str(c) for c in p.choices or []]


def categorical_weights(p: ParamSpec, d: Distribution | None) -> dict[str, float]:
    """Normalised weight per choice of a categorical/bool distribution (missing = uniform)."""
    return (d or UNIFORM_DISTRIBUTION).choice_weights(choice_names(p))


def truncnormal(p: ParamSpec, centre_u: float, width_u: float) -> Distribution:
    """A ``truncnormal`` distribution from a centre and spread in range units (rounded)."""
    lo, hi = bounds(p)
    w = min(MAX_WIDTH, max(MIN_WIDTH, width_u))
    centre = min(hi, max(lo, round(from_units(p, centre_u), 6)))
    return Distribution(kind="truncnormal", center=centre, width=max(round(w * (hi - lo), 6), 1e-6))
