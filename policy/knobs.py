"""The rule both Optuna search spaces follow: bounded float knobs, each with a heuristic value.

:class:`policy.study.SearchSpace` (the tilt policy: step, width_scale, uniform_share) and
:class:`policy.mixture.MixtureOptions` (the mixture: uniform_share, tilt_share, max_shift,
width_scale) each declare their float knobs as ``name: (low, high)`` with a
``heuristic_<name>`` value, plus ``n_slices`` in ``1..top_k``. This base checks them, turns
them into Optuna distributions (``width_scale``, a scale factor, on a log axis and free of the
cap at 1) and lists the heuristic's values, so the two spaces cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from generator.errors import ConfigError, field_error

SCALE_KNOBS = frozenset({"width_scale"})  # factors around 1: log axis, may exceed 1


class KnobSpace:
    """Mix-in for a frozen dataclass with ``<knob>: tuple[float, float]`` and
    ``heuristic_<knob>: float`` fields for every name in ``FLOAT_KNOBS``."""

    FLOAT_KNOBS: ClassVar[tuple[str, ...]] = ()
    FIELD: ClassVar[str] = "policy"  # error lines name FIELD.<knob>

    def check_knobs(self) -> None:
        """Every knob: ``0 < low <= heuristic <= high``, and ``high <= 1`` unless a scale factor."""
        for name in self.FLOAT_KNOBS:
            bounds, h = getattr(self, name), getattr(self, f"heuristic_{name}")
            top = math.inf if name in SCALE_KNOBS else 1.0
            ok = (isinstance(bounds, tuple) and len(bounds) == 2
                  and all(isinstance(v, int | float) and not isinstance(v, bool) for v in (*bounds, h)))
            if not ok or not (0 < bounds[0] <= h <= bounds[1] <= top):
                raise field_error(f"{self.FIELD}.{name}", f"needs 0 < low <= heuristic <= high (<= {top:g})",
                                  (bounds, h), "fix the bounds")

    @staticmethod
    def check_top_k(top_k: Any) -> int:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"--top-k: must be an integer >= 1, but got {top_k!r}")
        return top_k

    def knob_distributions(self, top_k: int) -> dict[str, Any]:
        """Optuna distributions of the float knobs and of ``n_slices`` (1..top_k)."""
        from optuna.distributions import FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for name in self.FLOAT_KNOBS:
            low, high = getattr(self, name)
            out[name] = FloatDistribution(low, high, log=name in SCALE_KNOBS)
        out["n_slices"] = IntDistribution(1, self.check_top_k(top_k))
        return out

    def knob_heuristic(self, top_k: int) -> dict[str, Any]:
        """The heuristic's value of every knob (all ``top_k`` slices)."""
        return {**{name: getattr(self, f"heuristic_{name}") for name in self.FLOAT_KNOBS}, "n_slices": top_k}
