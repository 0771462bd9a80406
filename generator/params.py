"""Generation distributions ("params"): what the policy writes and the generator reads.

Every scenario parameter gets a distribution inside its declared range:

- ``uniform``      (optional sub-range ``low``/``high``; the default for unlisted parameters)
- ``truncnormal``  (``center``, ``width`` = standard deviation, truncated to the range)
- ``beta``         (``center`` = mean, ``width`` = standard deviation, scaled to the range)
- ``categorical``  (``weights`` per choice; unlisted choices weigh 0)
- ``fixed``        (``value``)

plus ``uniform_share``: the probability that an image ignores all of this and draws every
parameter uniformly over its full range, so the model keeps seeing the whole space.

**Mixtures.** Instead of one ``distributions`` map, a params file may give ``components``:
``[{name: base, weight: 0.7, distributions: {...}}, {name: tilt, weight: 0.3, ...}]``. An
image draws uniformly with ``uniform_share``; otherwise it draws every parameter from one
component, chosen with probability ∝ ``weight`` (so component *k* gets the share
``(1 - uniform_share) · weight_k / Σ weight`` of the images). ``distributions`` must then be
empty; a parameter a component does not list is uniform in that component. A file without
``components`` is the plain format: its ``to_dict`` (and so the shard fingerprint) is
unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from generator import atomic
from generator.errors import ConfigError, field_error, is_number
from generator.fmt import number
from generator.scenario import ParamSpec, Scalar, Scenario
from generator.validation import load_yaml_or_json, parse_model


class Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["uniform", "truncnormal", "beta", "categorical", "fixed"]
    low: float | None = None
    high: float | None = None
    center: float | None = None
    width: float | None = Field(default=None, gt=0)
    weights: dict[str, float] | None = None
    value: Scalar | None = None

    def centre_sd(self, lo: float, hi: float) -> tuple[float, float]:
        """``(centre, spread)`` in the parameter's units for its range ``[lo, hi]``: a
        truncnormal's or beta's ``center``/``width``, a fixed value with spread 0, a uniform
        range's midpoint and standard deviation ``(b - a) / √12``."""
        if self.kind in ("truncnormal", "beta") and self.center is not None and self.width is not None:
            return float(self.center), float(self.width)
        if self.kind == "fixed":
            return float(self.value), 0.0  # type: ignore[arg-type]
        a = lo if self.low is None else float(self.low)
        b = hi if self.high is None else float(self.high)
        return (a + b) / 2, (b - a) / math.sqrt(12.0)

    def choice_weights(self, choices: list[str]) -> dict[str, float]:
        """Normalised weight of every choice (by name) of a categorical or bool parameter."""
        if self.kind == "fixed":
            return {c: float(c == str(self.value)) for c in choices}
        raw = ({c: float((self.weights or {}).get(c, 0.0)) for c in choices} if self.kind == "categorical"
               else dict.fromkeys(choices, 1.0))
        total = sum(raw.values()) or 1.0
        return {c: w / total for c, w in raw.items()}


UNIFORM_DISTRIBUTION = Distribution(kind="uniform")  # what a parameter without a distribution has


class Component(BaseModel):
    """One mixture component: a weight and a distribution per parameter (missing = uniform)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    weight: float
    distributions: dict[str, Distribution] = Field(default_factory=dict)


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: str
    uniform_share: float = Field(default=0.0, ge=0.0, le=1.0)
    distributions: dict[str, Distribution] = Field(default_factory=dict)
    components: list[Component] | None = None  # None: the plain format (fingerprint unchanged)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def is_mixture(self) -> bool:
        return self.components is not None

    def mixture(self) -> list[tuple[float, dict[str, Distribution]]]:
        """``(weight, distributions)`` of each non-uniform component, weights summing to 1
        (the plain format is one component of weight 1: ``distributions``)."""
        if self.components is None:
            return [(1.0, self.distributions)]
        total = sum(c.weight for c in self.components)
        if not total > 0:
            raise field_error("params.components", "at least one component weight must be > 0",
                              [c.weight for c in self.components])
        return [(c.weight / total, c.distributions) for c in self.components]

    def image_shares(self) -> list[tuple[str, float]]:
        """``(name, share of images)``: ``uniform`` first, then each component (by name or
        ``component <i>``); the shares sum to 1."""
        u = self.uniform_share
        names = ["params"] if self.components is None else [
            c.name or f"component {i}" for i, c in enumerate(self.components)]
        return [("uniform", u)] + [(n, (1 - u) * w) for n, (w, _) in zip(names, self.mixture(), strict=True)]

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=True))


def _check_numeric(name: str, p: ParamSpec, d: Distribution, at: str = "params.distributions") -> None:
    assert p.range is not None  # guaranteed by ParamSpec validation (not user input)
    lo, hi = p.range
    where = f"{at}.{name}"
    if d.kind == "uniform":
        a = lo if d.low is None else d.low
        b = hi if d.high is None else d.high
        if not lo <= a <= b <= hi:
            raise field_error(
                where, f"needs {lo} <= low <= high <= {hi}", (a, b), "keep the sub-range inside the parameter's range"
            )
    elif d.kind in ("truncnormal", "beta"):
        if d.center is None or d.width is None:
            raise field_error(where, f"{d.kind} needs `center` and `width`", d.model_dump(exclude_none=True))
        if not lo <= d.center <= hi:
            raise field_error(f"{where}.center", f"must lie inside [{lo}, {hi}]", d.center)
        if d.kind == "beta":
            m = (d.center - lo) / max(hi - lo, 1e-12)
            s = d.width / max(hi - lo, 1e-12)
            if not (0 < m < 1 and s * s < m * (1 - m)):
                raise field_error(
                    f"{where}.width",
                    "beta needs width**2 < (center-low)*(high-center) and a center strictly inside the range",
                    d.width,
                    "use a smaller width",
                )
    elif d.kind == "fixed":
        if not is_number(d.value) or not lo <= float(d.value) <= hi:
            raise field_error(f"{where}.value", f"must be a number inside [{lo}, {hi}]", d.value)
    else:
        raise field_error(f"{where}.kind", f"a {p.type} parameter takes uniform, truncnormal, beta or fixed", d.kind)


def _check_categorical(name: str, p: ParamSpec, d: Distribution, at: str = "params.distributions") -> None:
    where = f"{at}.{name}"
    names = [str(c) for c in p.choices or []]
    if d.kind == "uniform":
        return
    if d.kind == "fixed":
        if str(d.value) not in names:
            raise field_error(f"{where}.value", f"must be one of {names}", d.value)
        return
    if d.kind != "categorical":
        raise field_error(f"{where}.kind", f"a {p.type} parameter takes categorical, uniform or fixed", d.kind)
    weights = d.weights or {}
    for k, w in weights.items():
        if k not in names:
            raise field_error(f"{where}.weights", f"keys must be choices {names}", k)
        if not (math.isfinite(w) and w >= 0):
            raise field_error(f"{where}.weights.{k}", "must be a finite number >= 0", w)
    if sum(weights.values()) <= 0:
        raise field_error(f"{where}.weights", "at least one weight must be > 0", weights)


def validate_params(params: GenerationParams, scenario: Scenario) -> GenerationParams:
    if params.scenario != scenario.name:
        raise field_error(
            "params.scenario", f"must name the scenario being rendered ({scenario.name!r})", params.scenario
        )
    _check_distributions(params.distributions, scenario, "params.distributions")
    if params.components is not None:
        _check_components(params, scenario)
    return params


def _check_distributions(dists: dict[str, Distribution], scenario: Scenario, at: str) -> None:
    for name, d in dists.items():
        p = scenario.parameters.get(name)
        if p is None:
            known = ", ".join(sorted(scenario.parameters))
            raise ConfigError(f"{at}.{name}: unknown parameter of scenario {scenario.name!r}; known: {known}")
        (_check_numeric if p.is_numeric else _check_categorical)(name, p, d, at)


def _check_components(params: GenerationParams, scenario: Scenario) -> None:
    comps = params.components or []
    if not comps:
        raise field_error("params.components", "must hold at least one component", [],
                          "omit `components` for a plain params file")
    if params.distributions:
        raise field_error("params.distributions", "must be empty when `components` is given",
                          sorted(params.distributions), "move these distributions into a component")
    names = [c.name for c in comps if c.name is not None]
    if len(set(names)) != len(names):
        raise field_error("params.components", "component names must be unique", names)
    for i, c in enumerate(comps):
        if not (math.isfinite(c.weight) and c.weight >= 0):
            raise field_error(f"params.components[{i}].weight", "must be a finite number >= 0", c.weight)
        _check_distributions(c.distributions, scenario, f"params.components[{i}].distributions")
    if sum(c.weight for c in comps) <= 0:
        raise field_error("params.components", "at least one component weight must be > 0",
                          [c.weight for c in comps], "give the component(s) to sample a positive weight")


def uniform_params(scenario: Scenario) -> GenerationParams:
    """Classic domain randomization: every parameter uniform over its full range."""
    return GenerationParams(scenario=scenario.name)


def fixed_params(scenario: Scenario) -> GenerationParams:
    """No randomization: every parameter at the scenario default."""
    dists = {n: Distribution(kind="fixed", value=p.default) for n, p in scenario.parameters.items()}
    return GenerationParams(scenario=scenario.name, distributions=dists)


def load_params(path: str | Path, scenario: Scenario) -> GenerationParams:
    data = load_yaml_or_json(path, "--params")
    params = parse_model(GenerationParams, data, f"params {Path(path).name}")
    return validate_params(params, scenario)


def _g(x: Any, digits: int = 4) -> str:
    return number(x, digits, "g")


def distribution_text(d: Mapping[str, Any]) -> str:
    """One distribution (its JSON form) as text, e.g. ``truncnormal(centre 3.2, width 1.5)``,
    ``uniform[0, 1]``, ``categorical(a 0.50, b 0.30, c 0.20)`` (the three heaviest), ``fixed 'x'``
    or ``mixture(0.3 uniform, 0.7 …)``: how decisions, lineage and the loop's artifacts show it."""
    kind = d.get("kind", "uniform")
    if kind in ("truncnormal", "beta"):
        return f"{kind}(centre {_g(d.get('center'))}, width {_g(d.get('width'))})"
    if kind == "uniform":
        lo, hi = d.get("low"), d.get("high")
        return "uniform" if lo is None and hi is None else f"uniform[{_g(lo)}, {_g(hi)}]"
    if kind == "fixed":
        return f"fixed {d.get('value')!r}"
    if kind == "mixture":
        return "mixture(" + ", ".join(f"{_g(c.get('weight'), 2)} {distribution_text(c.get('distribution') or {})}"
                                      for c in d.get("components") or []) + ")"
    weights = d.get("weights") or {}
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:3]
    return "categorical(" + ", ".join(f"{k} {v:.2f}" for k, v in top) + (", …)" if len(weights) > 3 else ")")

