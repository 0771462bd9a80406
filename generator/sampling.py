"""Reproducible sampling of parameter values from a generation distribution.

Every function takes an explicit ``numpy.random.Generator``; nothing touches global RNG
state. Per-image generators come from ``SeedSequence(seed).spawn(n)`` so image *i* of a shard
is the same whatever the number of workers or the order they run in.
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

    def conditions(self) -> dict[str, Any]:
        """Image-level record stored with the image (object values go on each object)."""
        return {**self.image, "uniform_mix": self.uniform_mix}


class Sampler:
    def __init__(self, scenario: Scenario, params: GenerationParams) -> None:
        self.scenario = scenario
        self.params = params

    def _dist(self, name: str, mixed: bool) -> Distribution:
        return UNIFORM if mixed else self.params.distributions.get(name, UNIFORM)

    def sample(self, rng: np.random.Generator) -> SceneSample:
        mixed = bool(rng.random() < self.params.uniform_share)
        specs = self.scenario.parameters
        image = {n: sample_value(p, self._dist(n, mixed), rng) for n, p in specs.items() if p.scope == "image"}
        count_param = self.scenario.spec.count_param
        n_obj = int(image[count_param]) if count_param else 1
        objects = [
            {n: sample_value(p, self._dist(n, mixed), rng) for n, p in specs.items() if p.scope == "object"}
            for _ in range(n_obj)
        ]
        return SceneSample(image=image, objects=objects, uniform_mix=mixed)
