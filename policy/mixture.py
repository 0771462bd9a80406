"""The bounded-mixture policy mode: uniform share + calibrated base + a capped tilt.

Each iteration's params are a mixture (:class:`generator.params.GenerationParams` with
``components``):

- **uniform** with ``uniform_share`` — never below ``MixtureOptions.uniform_floor``, whatever
  the trial says (the forgetting guard);
- **base** — the calibrated base (``synthloop calibrate``'s plain params; uniform when none);
- **tilt** — the base (or the previous round's tilt) moved toward the data-driven targets
  (:mod:`policy.evidence`) of at most ``n_slices`` weak slices, each move **capped per round**:
  a numeric centre (and spread) moves at most ``max_shift`` range units, categorical weights
  move at most ``max_shift`` in total variation and no choice's weight more than
  ``max_ratio`` × (×2 by default). Several rounds may go further, one capped step at a time.

**Eligibility.** Only weak slices whose recall CI lies wholly below the overall recall
(``ci[1] < overall_recall``) can drive the tilt; ``production-drift`` slices (no recall, a
drift target from :mod:`evaluator.production.merge`) stay eligible as they are. No eligible
slice with evidence ⇒ tilt weight 0: the params are the uniform share + the base, and the
decision record says why.

What Optuna decides per trial (:class:`MixtureKnobs`): ``uniform_share``, ``tilt_share`` (the
tilt's share of the non-uniform images; the base gets the rest), ``max_shift`` (the cap),
``width_scale`` and ``n_slices``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from generator.errors import ConfigError, field_error
from generator.params import Component, Distribution, GenerationParams
from generator.scenario import Scenario
from policy.knobs import KnobSpace
from policy.moves import Change, Plan, dist_dict
from policy.reports import finite
from policy.units import categorical_weights, numeric_summary, truncnormal

BASE, TILT = "base", "tilt"
DRIFT_SOURCE = "production-drift"


@dataclass(frozen=True)
class MixtureKnobs:
    """What one Optuna trial decides in mixture mode (see the module docstring)."""

    uniform_share: float
    tilt_share: float
    max_shift: float
    width_scale: float
    n_slices: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MixtureOptions(KnobSpace):
    """Bounds of the mixture knobs, the heuristic's values and the fixed guards."""

    FLOAT_KNOBS: ClassVar[tuple[str, ...]] = ("uniform_share", "tilt_share", "max_shift", "width_scale")
    FIELD: ClassVar[str] = "policy.mixture"

    uniform_floor: float = 0.2  # no trial can put the uniform share below this
    max_ratio: float = 2.0  # a categorical choice's weight grows at most this factor per round
    uniform_share: tuple[float, float] = (0.2, 0.6)
    tilt_share: tuple[float, float] = (0.1, 0.7)
    max_shift: tuple[float, float] = (0.05, 0.3)
    width_scale: tuple[float, float] = (0.5, 2.0)
    heuristic_uniform_share: float = 0.3
    heuristic_tilt_share: float = 0.3
    heuristic_max_shift: float = 0.15
    heuristic_width_scale: float = 1.0

    def validate(self) -> MixtureOptions:
        if not (isinstance(self.uniform_floor, int | float) and 0 < self.uniform_floor < 1):
            raise field_error("policy.mixture.uniform_floor", "must lie in (0, 1): the uniform share is "
                              "never 0", self.uniform_floor, "use e.g. 0.2")
        if not (isinstance(self.max_ratio, int | float) and self.max_ratio > 1):
            raise field_error("policy.mixture.max_ratio", "must be > 1", self.max_ratio, "use e.g. 2")
        self.check_knobs()
        if self.uniform_share[0] < self.uniform_floor:
            raise field_error("policy.mixture.uniform_share", f"low must be >= uniform_floor "
                              f"{self.uniform_floor}", self.uniform_share, "raise the lower bound")
        return self

    def distributions(self, top_k: int) -> dict[str, Any]:
        return self.knob_distributions(top_k)

    def heuristic(self, top_k: int) -> dict[str, Any]:
        return self.knob_heuristic(top_k)

    def knobs(self, p: dict[str, Any]) -> MixtureKnobs:
        return MixtureKnobs(uniform_share=float(p["uniform_share"]), tilt_share=float(p["tilt_share"]),
                            max_shift=float(p["max_shift"]), width_scale=float(p["width_scale"]),
                            n_slices=int(p["n_slices"]))


# ---------------------------------------------------------------------- eligibility
def ineligibility(w: dict[str, Any], report: dict[str, Any]) -> str | None:
    """Why weak slice ``w`` of ``report`` may not drive the tilt, or None when it may."""
    if w.get("source") == DRIFT_SOURCE:
        return None
    ci = w.get("ci")
    hi = finite(ci[1]) if isinstance(ci, list | tuple) and len(ci) == 2 else None
    overall = finite(w.get("overall_recall"))
    if overall is None:
        overall = finite((report.get("overall") or {}).get("recall"))
    if hi is None:
        return "no recall CI (`ci`) on the weak slice"
    if overall is None:
        return "no finite overall recall to compare the CI with"
    if hi >= overall:
        return f"recall CI upper bound {hi:.4g} is not below the overall recall {overall:.4g}"
    return None


def eligible_reports(reports: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reports with only eligible weak slices, and ``{slice, reason}`` for each dropped one."""
    kept, dropped = [], []
    for i, r in enumerate(reports):
        ok = []
        for w in r.get("weak_slices") or []:
            why = ineligibility(w, r) if isinstance(w, dict) else "not a weak-slice object"
            if why is None:
                ok.append(w)
            else:
                name = w.get("condition") if isinstance(w, dict) else None
                side = w.get("side") if isinstance(w, dict) else None
                dropped.append({"slice": f"{name} {side} (report {i})", "reason": why})
        kept.append({**r, "weak_slices": ok})
    return kept, dropped


# ---------------------------------------------------------------------- the tilt
def check_base(base: GenerationParams | None, scenario: Scenario) -> GenerationParams:
    """The base as a validated plain params (uniform when None)."""
    from generator.params import uniform_params, validate_params

    if base is None:
        return uniform_params(scenario)
    if base.is_mixture:
        raise field_error("policy base", "must be a plain params file (no `components`)",
                          f"{len(base.components or [])} components",
                          "pass the params file `synthloop calibrate` wrote")
    return validate_params(base, scenario)


def load_base(path: str | Path, scenario: Scenario) -> GenerationParams:
    """The calibrated base from a params file (``synthloop calibrate``'s output), checked."""
    from generator.params import load_params

    return check_base(load_params(path, scenario), scenario)


def initial_params(scenario: Scenario, base: GenerationParams | None = None,
                   options: MixtureOptions | None = None) -> GenerationParams:
    """What a mixture loop renders before any report: the heuristic uniform share (>= the
    floor) + the base, no tilt (plain format). Without a base that is all uniform, so it is
    exactly :func:`~generator.params.uniform_params` (the uniform arm's iteration 0, same
    fingerprint)."""
    opts = (options or MixtureOptions()).validate()
    if base is None:
        from generator.params import uniform_params

        return uniform_params(scenario)
    return mixture_params(scenario, check_base(base, scenario), None, opts.heuristic_uniform_share, 0.0,
                          opts.uniform_floor)


def previous_tilt(current: GenerationParams, base: GenerationParams) -> dict[str, Distribution]:
    """Where this round's tilt starts: the current params' ``tilt`` component, else the base."""
    for c in current.components or []:
        if c.name == TILT:
            return dict(c.distributions)
    return dict(base.distributions)


def _clip(x: float, cap: float) -> float:
    return max(-cap, min(cap, x))


def numeric_move(scenario: Scenario, name: str, cur: Distribution | None, centre: float,
                 width: float, k: MixtureKnobs) -> tuple[Distribution, dict[str, Any]]:
    """Move ``cur`` toward ``(centre, width × width_scale)``, at most ``max_shift`` each."""
    spec = scenario.parameters[name]
    c0, w0 = numeric_summary(spec, cur)
    want = centre - c0
    dc = _clip(want, k.max_shift)
    dw = _clip(width * k.width_scale - w0, k.max_shift)
    new = truncnormal(spec, c0 + dc, w0 + dw)
    c1, w1 = numeric_summary(spec, new)
    return new, {"centre_shift": round(c1 - c0, 6), "width": [round(w0, 6), round(w1, 6)],
                 "wanted_shift": round(want, 6), "capped": abs(want) > k.max_shift}


def categorical_move(scenario: Scenario, name: str, cur: Distribution | None,
                     target: dict[str, float], k: MixtureKnobs,
                     max_ratio: float) -> tuple[Distribution, dict[str, Any]]:
    """``(1 − λ) · current + λ · target`` with the largest ``λ <= 1`` such that the total
    variation moved is ``<= max_shift`` and no choice's weight grows beyond ``max_ratio`` ×
    (a choice at weight 0 may enter, bounded by the total-variation cap)."""
    w0 = categorical_weights(scenario.parameters[name], cur)
    t = {n: float(target.get(n, 0.0)) for n in w0}
    tv = 0.5 * sum(abs(t[n] - w0[n]) for n in w0)
    lam = 1.0 if tv <= k.max_shift else k.max_shift / tv
    for n in w0:
        if w0[n] > 0 and t[n] > w0[n]:
            lam = min(lam, (max_ratio - 1) * w0[n] / (t[n] - w0[n]))
    w1 = {n: round((1 - lam) * w0[n] + lam * t[n], 6) for n in w0}
    moved = 0.5 * sum(abs(w1[n] - w0[n]) for n in w0)
    return Distribution(kind="categorical", weights=w1), {
        "weight_shift": round(moved, 6), "wanted_shift": round(tv, 6), "capped": lam < 1.0}


def tilt(scenario: Scenario, prev: dict[str, Distribution], plan: Plan, k: MixtureKnobs,
         max_ratio: float) -> tuple[dict[str, Distribution], list[Change]]:
    """The tilt's distributions: ``prev`` with the parameters of the top ``k.n_slices`` slices
    moved one capped step toward their targets; and one :class:`Change` per moved parameter."""
    acting = {ws.key for ws in plan.slices[: max(1, k.n_slices)]}
    dists = dict(prev)
    changes = []
    for ws, t in plan.targets:
        if ws.key not in acting:
            continue
        dists[t.parameter], change = _step(scenario, t.parameter, prev.get(t.parameter), t.centre, t.width,
                                           t.weights, k, max_ratio, ws.to_dict(), t.to_dict())
        changes.append(change)
    return dict(sorted(dists.items())), changes


def _step(scenario: Scenario, name: str, cur: Distribution | None, centre: float | None, width: float | None,
          weights: dict[str, float] | None, k: MixtureKnobs, max_ratio: float, slice_: dict[str, Any],
          evidence: dict[str, Any]) -> tuple[Distribution, Change]:
    """``cur`` moved one capped step toward ``centre``/``width`` (numeric) or ``weights``
    (categorical), and the :class:`Change` recording it with ``evidence``."""
    if scenario.parameters[name].is_numeric:
        assert centre is not None and width is not None  # numeric targets carry both
        new, how = numeric_move(scenario, name, cur, centre, width, k)
    else:
        assert weights is not None  # categorical targets carry weights
        new, how = categorical_move(scenario, name, cur, weights, k, max_ratio)
    evidence = {**evidence, "wanted_shift": how.pop("wanted_shift"), "capped": how.pop("capped")}
    return new, Change(parameter=name, slice=slice_, evidence=evidence, old=dist_dict(cur), new=dist_dict(new), **how)


def toward(scenario: Scenario, start: dict[str, Distribution], target: dict[str, Distribution],
           k: MixtureKnobs, max_ratio: float, why: dict[str, Any]) -> tuple[dict[str, Distribution], list[Change]]:
    """``start`` with every parameter whose ``target`` distribution differs moved one capped step
    toward it (the same caps as :func:`tilt`); ``why`` is each Change's evidence (e.g. the
    failure-weighted calibration that produced ``target``)."""
    dists = dict(start)
    changes = []
    for name in sorted(target):
        cur, goal = start.get(name), target[name]
        if dist_dict(cur) == dist_dict(goal):
            continue
        spec = scenario.parameters[name]
        centre, width = numeric_summary(spec, goal) if spec.is_numeric else (None, None)
        weights = None if spec.is_numeric else categorical_weights(spec, goal)
        dists[name], change = _step(scenario, name, cur, centre, width, weights, k, max_ratio, {},
                                    {**why, "target": dist_dict(goal)})
        changes.append(change)
    return dict(sorted(dists.items())), changes


def mixture_params(scenario: Scenario, base: GenerationParams, tilt_dists: dict[str, Distribution] | None,
                   uniform_share: float, tilt_share: float, floor: float) -> GenerationParams:
    """Uniform (``max(floor, uniform_share)``) + base + tilt (weight ``tilt_share``); without a
    tilt (None or weight 0) the plain format: the base's distributions and the uniform share."""
    u = round(max(floor, min(1.0, uniform_share)), 6)
    if tilt_dists is None or tilt_share <= 0:
        return GenerationParams(scenario=scenario.name, uniform_share=u,
                                distributions=dict(sorted(base.distributions.items())))
    ts = round(min(1.0, tilt_share), 6)
    comps = [Component(name=BASE, weight=round(1 - ts, 6), distributions=dict(sorted(base.distributions.items()))),
             Component(name=TILT, weight=ts, distributions=tilt_dists)]
    return GenerationParams(scenario=scenario.name, uniform_share=u, components=comps)


def summary(params: GenerationParams, floor: float, **extra: Any) -> dict[str, Any]:
    """The decision record's ``mixture`` block: shares of images per component and guards."""
    if params.uniform_share < floor - 1e-9:
        raise ConfigError(f"policy mixture: uniform_share {params.uniform_share} fell below the floor "
                          f"{floor}; this is a bug, please report it")
    shares = [{"component": n, "share": round(s, 6)} for n, s in params.image_shares()]
    return {"uniform_floor": floor, "uniform_share": params.uniform_share, "shares": shares, **extra}
