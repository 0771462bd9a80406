"""How far a rendered set's measured conditions are from a real set's (calibration).

A *condition* is a scenario's observable (``brightness`` → ``stat.brightness`` per image,
``object_size`` → ``pixel_size`` per object, …), measured on synthetic and real images by the
same functions (:mod:`generator.imagestats`, :mod:`evaluator.conditions`). Per condition the
distance is the 1-D Wasserstein distance (earth mover's, W1) between the two samples of
values, divided by a *scale* fixed once per calibration from the real set:

- the real values' interquartile range; if that is 0 (e.g. most real objects fully visible),
  their standard deviation; if that is 0 too (every real object untruncated), the spread of the
  starting render; else 1 — so a distance of 1 means "off by one real IQR on average";
- values of a heavy-tailed condition (``stat.sharpness``, the Laplacian variance spanning
  orders of magnitude) are compared on ``log1p``;
- a condition the real set has but the render lacks (no object visible) costs
  :data:`MISSING_DISTANCE`.

The calibration objective is the mean of the per-condition distances. Pure numpy/scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from generator.errors import ConfigError
from generator.scenario import Scenario

LOG_COLUMNS = frozenset({"stat.sharpness"})  # compared on log1p: heavy-tailed
MISSING_DISTANCE = 3.0  # a condition the render cannot show at all (in scale units)
MIN_VALUES = 5  # a real condition with fewer finite values is not used
LABEL_COLUMNS = frozenset({"n_objects"})  # image-level, but needs labels to be measured
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class ConditionRef:
    """One scenario condition: its name, table column and level (image or object)."""

    name: str
    column: str
    level: str

    @property
    def log(self) -> bool:
        return self.column in LOG_COLUMNS


@dataclass
class Measured:
    """Measured conditions of one image set: one row per image, one per object (None when the
    set has no labels), plus the sampled parameter values when the set was rendered here
    (``param.<name>`` image columns, ``obj.<name>`` object columns)."""

    images: pd.DataFrame
    objects: pd.DataFrame | None

    @property
    def labelled(self) -> bool:
        return self.objects is not None

    def values(self, ref: ConditionRef) -> np.ndarray:
        """Finite values of a condition (transformed as compared), empty when not measured."""
        frame = self.images if ref.level == "image" else self.objects
        if frame is None or ref.column not in frame or (ref.column in LABEL_COLUMNS and not self.labelled):
            return np.zeros(0)
        v = pd.to_numeric(frame[ref.column], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        return np.log1p(np.maximum(v, 0.0)) if ref.log else v


def condition_refs(scenario: Scenario, names: list[str] | None = None) -> list[ConditionRef]:
    """The scenario's conditions that some parameter controls (or the named subset)."""
    declared = scenario.spec.conditions
    mapped = [c for c in declared if scenario.parameters_for_condition(c)]
    if names is not None:
        for n in names:
            if n not in mapped:
                raise ConfigError(f"--conditions: {n!r} is not a condition of scenario {scenario.name!r} that a "
                                  f"parameter controls; available: {', '.join(mapped)}")
        mapped = [c for c in mapped if c in names]
    return [ConditionRef(c, declared[c].column, declared[c].level) for c in mapped]


def usable_refs(refs: list[ConditionRef], real: Measured) -> list[ConditionRef]:
    """Conditions the real set measures with at least :data:`MIN_VALUES` finite values."""
    return [r for r in refs if real.values(r).size >= MIN_VALUES]


def _spread(v: np.ndarray) -> tuple[float, float]:
    if v.size == 0:
        return 0.0, 0.0
    q1, q3 = np.quantile(v, [0.25, 0.75])
    return float(q3 - q1), float(v.std())


def condition_scale(real: np.ndarray, reference: np.ndarray) -> float:
    """Real IQR, else real std, else the reference (starting render) std, else 1."""
    iqr, sd = _spread(real)
    _, ref_sd = _spread(reference)
    for s in (iqr, sd, ref_sd):
        if s > 1e-9:
            return s
    return 1.0


def wasserstein(real: np.ndarray, synth: np.ndarray, scale: float) -> float:
    """W1 between two samples, in ``scale`` units; :data:`MISSING_DISTANCE` if synth is empty."""
    if synth.size == 0:
        return MISSING_DISTANCE
    return float(stats.wasserstein_distance(real, synth)) / scale


@dataclass
class Distance:
    total: float
    per_condition: dict[str, float]


class Objective:
    """The calibration distance to one real set, with its scales frozen at construction."""

    def __init__(self, refs: list[ConditionRef], real: Measured, reference: Measured) -> None:
        if not refs:
            raise ConfigError("--conditions: no condition left to calibrate on (none is both controlled by a "
                              "parameter and measured in the real set); pass a labelled real set or other conditions")
        self.refs = refs
        self.real = {r.name: real.values(r) for r in refs}
        self.scales = {r.name: condition_scale(self.real[r.name], reference.values(r)) for r in refs}

    def __call__(self, synth: Measured) -> Distance:
        per = {r.name: wasserstein(self.real[r.name], synth.values(r), self.scales[r.name]) for r in self.refs}
        return Distance(total=float(np.mean(list(per.values()))), per_condition=per)


def summary(values: np.ndarray) -> dict[str, float | int | None]:
    """``n``, ``mean`` and the :data:`QUANTILES` of a sample (None when empty)."""
    out: dict[str, float | int | None] = {"n": int(values.size)}
    if values.size == 0:
        out.update({"mean": None, **{f"q{int(q * 100):02d}": None for q in QUANTILES}})
        return out
    out["mean"] = float(values.mean())
    for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True):
        out[f"q{int(q * 100):02d}"] = float(v) if math.isfinite(float(v)) else None
    return out
