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


def _numeric(p: ParamSpec, d: Distribution, rng: np.random.Generator) -> float:
    assert p.range is not None
    lo, hi = p.range
    if d.kind == "fixed":
        return float(d.value)  # type: ignore[arg-type]
    if d.kind == "uniform":
        a = lo if d.low is None else d.low
        b = hi if d.high is None else d.high
        if p.type == "int":
            return float(rng.integers(int(np.ceil(a)), int(np.floor(b)) + 1))
        return float(rng.uniform(a, b))
    assert d.center is not None and d.width is not None
    if d.kind == "truncnormal":
        # widen int bounds by half a step so the end values get their fair share after rounding
        pad = 0.5 if p.type == "int" else 0.0
        a, b = (lo - pad - d.center) / d.width, (hi + pad - d.center) / d.width
        x = float(stats.truncnorm.rvs(a, b, loc=d.center, scale=d.width, random_state=rng))
    else:  # beta with mean/std scaled to [lo, hi]
        m = (d.center - lo) / (hi - lo)
        s = d.width / (hi - lo)
        k = m * (1 - m) / (s * s) - 1
        x = lo + (hi - lo) * float(rng.beta(m * k, (1 - m) * k))
    return float(np.clip(x, lo, hi))


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
