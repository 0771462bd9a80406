"""Thresholds of the production signals, in one validated place (docs/production.md, "Signals").

Defaults and why:

- ``score_threshold`` 0.3 and ``iou`` 0.5: the evaluator's operating point, so production
  recall/precision read like a failure report's.
- ``confident`` 0.5: an accepted detection (score >= ``score_threshold``) scoring below it is
  *low-confidence*. Rates are taken over accepted detections only: a detector logs dozens of
  near-zero peaks per frame, which would swamp any rate over everything logged.
- drift: **PSI > 0.2 and KS p < 0.01**, both, with at least ``min_samples`` (30) values on each
  side. PSI 0.1–0.2 (or only one test firing) is ``watch``. PSI alone is noisy on a small
  window (about ``(bins − 1)/n`` by chance: 0.3 for 30 frames and 10 bins) and KS alone flags
  tiny shifts on big windows; together they flag shifts that are both large and real.
- ``min_window_images`` 20: a smaller window gets a signals file but gives the merged report no
  production weight (weights stay 1) — too few frames to say what production looks like.
- ``weight_range`` [0.25, 4]: the production-prevalence weight of a real-val weak slice is
  clipped there, so one window can neither erase a real-val failure nor make it dominate
  without bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from generator.errors import field_error, is_int


@dataclass(frozen=True)
class ProductionOptions:
    score_threshold: float = 0.3
    iou: float = 0.5
    confident: float = 0.5
    psi_drift: float = 0.2
    psi_watch: float = 0.1
    ks_alpha: float = 0.01
    psi_bins: int = 10
    min_samples: int = 30
    min_window_images: int = 20
    weight_range: tuple[float, float] = (0.25, 4.0)

    @classmethod
    def at_threshold(cls, score_threshold: float) -> ProductionOptions:
        """The options for a model operated at ``score_threshold`` (the real-val report's or
        the loop's): ``confident`` is 0.5, or the threshold itself when that is higher (a
        detection accepted at 0.6 cannot be low-confidence at 0.5). Validated."""
        t = float(score_threshold)
        return cls(score_threshold=t, confident=max(0.5, t)).validate()

    def validate(self) -> ProductionOptions:
        """Raise :class:`ConfigError` naming the first out-of-range option."""
        for name, v in (("score_threshold", self.score_threshold), ("confident", self.confident)):
            if not 0.0 <= v <= 1.0:
                raise field_error(name, "must be in [0, 1]", v)
        if not self.score_threshold <= self.confident:
            raise field_error("confident", f"must be >= score_threshold ({self.score_threshold})", self.confident)
        if not 0.0 < self.iou <= 1.0:
            raise field_error("iou", "must be in (0, 1]", self.iou)
        if not 0.0 < self.psi_watch <= self.psi_drift:
            raise field_error("psi_watch", f"must be in (0, psi_drift={self.psi_drift}]", self.psi_watch)
        if not 0.0 < self.ks_alpha < 1.0:
            raise field_error("ks_alpha", "must be in (0, 1)", self.ks_alpha)
        for name, n, low in (("psi_bins", self.psi_bins, 2), ("min_samples", self.min_samples, 2),
                             ("min_window_images", self.min_window_images, 1)):
            if not is_int(n) or n < low:
                raise field_error(name, f"must be an integer >= {low}", n)
        lo, hi = self.weight_range
        if not 0.0 < lo <= 1.0 <= hi:
            raise field_error("weight_range", "must satisfy 0 < low <= 1 <= high", list(self.weight_range))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weight_range"] = list(self.weight_range)
        return d
