"""Turn data-driven targets and one Optuna trial's knobs into the next GenerationParams.

The trial does not pick absolute values; it picks *how to act* on the failure signal
(:class:`Knobs`), a small search space that stays the same from one iteration to the next, so
the objective values told to Optuna stay comparable while the weak slices change:

- ``step`` — how far each implicated parameter's centre moves from where it is now toward its
  data-driven target (1 = all the way), in range units;
- ``width_scale`` — multiplies the target spread (narrow focus vs broad coverage); the spread
  moves toward it by ``step`` like the centre, so repeated moves do not compound;
- ``uniform_share`` — share of images drawn uniformly over the full space (never 0: the
  forgetting guard);
- ``n_slices`` — how many of the top weak slices (those with evidence) to act on.

Numeric parameters become ``truncnormal`` (centre/width), categorical ones ``categorical``
weights blended toward the target weights. A parameter named by several slices is moved by the
highest-ranked one. Parameters nothing implicates keep their current distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from generator.params import Distribution, GenerationParams
from generator.scenario import Scenario
from policy.evidence import EvidenceOptions, Target, find_target
from policy.reports import WeakSlice
from policy.units import categorical_weights, numeric_summary, truncnormal


@dataclass(frozen=True)
class Knobs:
    """What one Optuna trial decides (see the module docstring)."""

    step: float
    width_scale: float
    uniform_share: float
    n_slices: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Targets per weak slice, computed before any trial is asked."""

    slices: list[WeakSlice]  # slices with at least one movable parameter, best first
    targets: list[tuple[WeakSlice, Target]]  # first slice per parameter, in slice order
    ignored: list[dict[str, Any]] = field(default_factory=list)  # implicated but no evidence

    @property
    def movable(self) -> bool:
        return bool(self.slices)


@dataclass
class Change:
    """One parameter's move: the slice that drove it, the evidence, old → new and how far."""

    parameter: str
    slice: dict[str, Any]
    evidence: dict[str, Any]
    old: dict[str, Any]
    new: dict[str, Any]
    centre_shift: float | None = None  # range units, new − old
    width: list[float] | None = None  # [old, new] spread in range units
    weight_shift: float | None = None  # total variation distance of categorical weights

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dist_dict(d: Distribution | None) -> dict[str, Any]:
    return {"kind": "uniform"} if d is None else d.model_dump(mode="json", exclude_none=True)


def make_plan(scenario: Scenario, current: GenerationParams, slices: list[WeakSlice],
              conditions: pd.DataFrame | None, top_k: int, opt: EvidenceOptions) -> Plan:
    """Evidence for the parameters of the top ``top_k`` weak slices that have any evidence."""
    plan = Plan(slices=[], targets=[])
    seen: set[str] = set()
    for ws in slices:
        if len(plan.slices) >= top_k:
            break
        found = []
        for name in ws.parameters:
            if name in seen:
                continue
            spec = scenario.parameters[name]
            t = find_target(conditions, ws, name, spec, current.distributions.get(name), opt)
            if t.method == "none":
                plan.ignored.append({"parameter": name, "slice": ws.describe(), "reason": t.reason})
            else:
                found.append((ws, t))
        if found:
            plan.slices.append(ws)
            plan.targets += found
            seen.update(t.parameter for _, t in found)
        elif not ws.parameters:
            plan.ignored.append({"parameter": None, "slice": ws.describe(),
                                 "reason": "no scenario parameter declares this condition"})
    return plan


def _numeric_change(scenario: Scenario, cur: Distribution | None, t: Target,
                    k: Knobs) -> tuple[Distribution, dict[str, Any]]:
    spec = scenario.parameters[t.parameter]
    c0, w0 = numeric_summary(spec, cur)
    assert t.centre is not None and t.width is not None  # numeric targets carry both
    c1 = c0 + k.step * (t.centre - c0)
    w1 = w0 + k.step * (t.width * k.width_scale - w0)
    new = truncnormal(spec, c1, w1)
    c_new, w_new = numeric_summary(spec, new)
    return new, {"centre_shift": round(c_new - c0, 6), "width": [round(w0, 6), round(w_new, 6)]}


def _categorical_change(scenario: Scenario, cur: Distribution | None, t: Target,
                        k: Knobs) -> tuple[Distribution, dict[str, Any]]:
    spec = scenario.parameters[t.parameter]
    w0 = categorical_weights(spec, cur)
    assert t.weights is not None  # categorical targets carry weights
    w1 = {n: round((1 - k.step) * w0[n] + k.step * t.weights.get(n, 0.0), 6) for n in w0}
    tv = 0.5 * sum(abs(w1[n] - w0[n]) for n in w0)
    return Distribution(kind="categorical", weights=w1), {"weight_shift": round(tv, 6)}


def apply_knobs(scenario: Scenario, current: GenerationParams, plan: Plan,
                knobs: Knobs) -> tuple[GenerationParams, list[Change]]:
    """The next params: the plan's targets for the top ``knobs.n_slices`` slices, moved by
    ``knobs``; everything else as in ``current``."""
    acting = {ws.key for ws in plan.slices[: max(1, knobs.n_slices)]}
    dists = dict(current.distributions)
    changes = []
    for ws, t in plan.targets:
        if ws.key not in acting:
            continue
        cur = current.distributions.get(t.parameter)
        spec = scenario.parameters[t.parameter]
        fn = _numeric_change if spec.is_numeric else _categorical_change
        new, how = fn(scenario, cur, t, knobs)
        dists[t.parameter] = new
        changes.append(Change(parameter=t.parameter, slice=ws.to_dict(), evidence=t.to_dict(),
                              old=dist_dict(cur), new=dist_dict(new), **how))
    share = round(knobs.uniform_share, 6) if changes else current.uniform_share
    params = GenerationParams(scenario=scenario.name, uniform_share=share,
                              distributions=dict(sorted(dists.items())))
    return params, changes


def param_dict(params: GenerationParams, name: str) -> dict[str, Any]:
    """One parameter's distribution as a dict; where mixture components differ on it,
    ``{"kind": "mixture", "components": [{"weight", "distribution"}, …]}`` (weights normalised)."""
    parts = [dist_dict(d.get(name)) for _, d in params.mixture()]
    if all(p == parts[0] for p in parts):  # the same in every component (plain params: one)
        return parts[0]
    return {"kind": "mixture", "components": [{"weight": round(w, 6), "distribution": dist_dict(d.get(name))}
                                              for w, d in params.mixture()]}


def diff(scenario: Scenario, old: GenerationParams, new: GenerationParams) -> list[Change]:
    """Changes between two params with no slice behind them (for the baselines' records)."""
    out = []
    for name in scenario.parameters:
        a, b = param_dict(old, name), param_dict(new, name)
        if a != b:
            out.append(Change(parameter=name, slice={}, evidence={}, old=a, new=b))
    return out
