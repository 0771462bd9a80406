"""Reproducible sampling of parameter values from a generation distribution.

Every function takes an explicit ``numpy.random.Generator``; nothing touches global RNG
state. Per-image generators come from ``SeedSequence(seed).spawn(n)`` so image *i* of a shard
is the same whatever the number of workers or the order they run in.

Each image's first draw ``r ~ U[0, 1)`` from its own generator picks what it samples from:
``r < uniform_share`` ⇒ uniform over every range; otherwise, for a mixture, the component
whose cumulative share ``uniform_share + (1 - uniform_share) · Σ_{j<=k} w_j`` first exceeds
``r`` (no extra draw, so a plain params file consumes exactly the draws it always did).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from generator.params import Distribution, GenerationParams
from generator.scenario import ParamSpec, Scalar, Scenario


def image_seeds(seed: int, n: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(n)


@dataclass(frozen=True)
class NumericLaw:
    """The law of one numeric parameter's values under a distribution: its truncation to the
    range, integer padding and clipping, in one place for the two ways values are made —
    :meth:`draw` (the sampler: a random draw) and :meth:`ppf` (calibration's quantile coupling,
    :mod:`policy.calibration_render`: the value at quantile ``u``). Build with :func:`numeric_law`.

    ``kind``: ``fixed`` (``a`` is the value), ``uniform`` (on [a, b]), ``int`` (uniform integers
    a..b), ``truncnormal`` (``a``, ``b`` standardised bounds, ``loc``, ``scale``), ``beta`` (shapes
    ``a``, ``b`` on [lo, hi])."""

    kind: str
    lo: float
    hi: float
    a: float
    b: float = 0.0
    loc: float = 0.0
    scale: float = 1.0

    def draw(self, rng: np.random.Generator) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "int":
            return float(rng.integers(int(self.a), int(self.b) + 1))
        if self.kind == "uniform":
            return float(rng.uniform(self.a, self.b))
        if self.kind == "truncnormal":
            x = float(stats.truncnorm.rvs(self.a, self.b, loc=self.loc, scale=self.scale, random_state=rng))
        else:
            x = self.lo + (self.hi - self.lo) * float(rng.beta(self.a, self.b))
        return float(np.clip(x, self.lo, self.hi))

    def ppf(self, u: float) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "int":
            a, b = int(self.a), int(self.b)
            return float(min(b, a + int(u * (b - a + 1))))
        if self.kind == "uniform":
            return self.a + u * (self.b - self.a)
        if self.kind == "truncnormal":
            x = float(stats.truncnorm.ppf(u, self.a, self.b, loc=self.loc, scale=self.scale))
        else:
            x = self.lo + (self.hi - self.lo) * float(stats.beta.ppf(u, self.a, self.b))
        return float(np.clip(x, self.lo, self.hi))

    def mass(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``P(a <= X < b)`` per interval for the value :meth:`draw` makes (before int rounding):
        the coverage check's expected share of each bin (:mod:`generator.coverage`)."""
        if self.kind in ("fixed", "int") or (self.kind == "uniform" and self.b <= self.a):
            points = (np.array([self.a]) if self.kind != "int"
                      else np.arange(int(self.a), int(self.b) + 1, dtype=float))
            return ((a[:, None] <= points) & (points < b[:, None])).mean(axis=1)
        if self.kind == "uniform":
            law = stats.uniform(loc=self.a, scale=self.b - self.a)
        elif self.kind == "truncnormal":
            law = stats.truncnorm(self.a, self.b, loc=self.loc, scale=self.scale)
        else:
            law = stats.beta(self.a, self.b, loc=self.lo, scale=self.hi - self.lo)
        return np.asarray(law.cdf(b) - law.cdf(a), dtype=float)


def numeric_law(p: ParamSpec, d: Distribution) -> NumericLaw:
    """The :class:`NumericLaw` of distribution ``d`` of numeric parameter ``p`` (validated)."""
    assert p.range is not None  # numeric ParamSpec (validated by generator.scenario)
    lo, hi = p.range
    if d.kind == "fixed":
        return NumericLaw("fixed", lo, hi, float(d.value))  # type: ignore[arg-type]
    if d.kind == "uniform":
        a = lo if d.low is None else d.low
        b = hi if d.high is None else d.high
        if p.type == "int":
            return NumericLaw("int", lo, hi, int(np.ceil(a)), int(np.floor(b)))
        return NumericLaw("uniform", lo, hi, a, b)
    assert d.center is not None and d.width is not None  # validated by generator.params
    if d.kind == "truncnormal":
        # widen int bounds by half a step so the end values get their fair share after rounding
        pad = 0.5 if p.type == "int" else 0.0
        a, b = (lo - pad - d.center) / d.width, (hi + pad - d.center) / d.width
        return NumericLaw("truncnormal", lo, hi, a, b, loc=d.center, scale=d.width)
    # beta with mean/std scaled to [lo, hi]
    m = (d.center - lo) / (hi - lo)
    s = d.width / (hi - lo)
    k = m * (1 - m) / (s * s) - 1
    return NumericLaw("beta", lo, hi, m * k, (1 - m) * k)


def _numeric(p: ParamSpec, d: Distribution, rng: np.random.Generator) -> float:
    return numeric_law(p, d).draw(rng)


def _categorical(p: ParamSpec, d: Distribution, rng: np.random.Generator) -> Scalar:
    choices = list(p.choices or [])
    if d.kind == "fixed":
        return next(c for c in choices if str(c) == str(d.value))
    if d.kind == "uniform":
        return choices[int(rng.integers(len(choices)))]
    weights = np.array([(d.weights or {}).get(str(c), 0.0) for c in choices], dtype=float)
    return choices[int(rng.choice(len(choices), p=weights / weights.sum()))]


UNIFORM = Distribution(kind="uniform")


def sample_value(p: ParamSpec, d: Distribution, rng: np.random.Generator) -> Scalar:
    if p.is_numeric:
        x = _numeric(p, d, rng)
        return round(x) if p.type == "int" else x
    return _categorical(p, d, rng)


@dataclass
class SceneSample:
    """All sampled values for one image: image-level and one dict per object."""

    image: dict[str, Any]
    objects: list[dict[str, Any]]
    uniform_mix: bool
    component: int | None = None  # mixture params: component index, -1 for a uniform draw

    def conditions(self) -> dict[str, Any]:
        """Image-level record stored with the image (object values go on each object).
        Mixture params add ``mix_component``; a plain params file's record is unchanged."""
        out = {**self.image, "uniform_mix": self.uniform_mix}
        if self.component is not None:
            out["mix_component"] = self.component
        return out


class Sampler:
    def __init__(self, scenario: Scenario, params: GenerationParams) -> None:
        self.scenario = scenario
        self.params = params
        u = params.uniform_share
        self._mix = params.mixture()
        self._cum = [u + (1 - u) * c for c in np.cumsum([w for w, _ in self._mix]).tolist()]

    def _pick(self, r: float) -> int:
        """The component of a non-uniform draw ``r >= uniform_share`` (the last on rounding)."""
        return next((k for k, c in enumerate(self._cum) if r < c), len(self._cum) - 1)

    def sample(self, rng: np.random.Generator) -> SceneSample:
        r = rng.random()
        mixed = bool(r < self.params.uniform_share)
        k = None if mixed else self._pick(float(r))
        dists = {} if k is None else self._mix[k][1]
        specs = self.scenario.parameters

        def draw(n: str, p: ParamSpec) -> Scalar:
            return sample_value(p, dists.get(n, UNIFORM), rng)

        image = {n: draw(n, p) for n, p in specs.items() if p.scope == "image"}
        count_param = self.scenario.spec.count_param
        n_obj = int(image[count_param]) if count_param else 1
        objects = [{n: draw(n, p) for n, p in specs.items() if p.scope == "object"} for _ in range(n_obj)]
        component = (-1 if k is None else k) if self.params.is_mixture else None
        return SceneSample(image=image, objects=objects, uniform_mix=mixed, component=component)
