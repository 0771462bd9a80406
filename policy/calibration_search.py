"""What a calibration moves and where it starts looking.

- **Blocks.** Each condition the real set measures is a block: the parameters the scenario
  maps to it (``light.intensity`` → ``brightness``). A parameter mapped to several conditions
  joins the block where it moves its condition most. Unless parameters are named explicitly,
  a parameter joins only if it visibly moves its condition in the starting render
  (``|Spearman ρ| >= min_effect`` for numbers, correlation ratio ``η >= min_effect`` for
  choices), at most ``max_per_condition`` per block (strongest first): a parameter that does
  not move what we measure cannot be calibrated by it.
- **The data-driven start** (:func:`reweighted_proposal`). The starting render knows every
  image's sampled values and measured conditions. Per block, each row is weighted by the
  density ratio real/synthetic of its condition value (10 synthetic-quantile bins); the
  weighted parameter values give a ``truncnormal`` centre and width (categorical weights:
  the start weight × the mean ratio of that choice). One importance-weighting step of the
  start, per condition; the Optuna trials refine it.
- **Optuna's space** per block and round (:func:`block_space`): around the incumbent, a centre
  within ±``radius`` range units and a width within ×/÷ ``ratio`` for each numeric parameter,
  a log-weight within ×/÷ ``ratio`` for each categorical choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from optuna.distributions import BaseDistribution, FloatDistribution
from scipy import stats

from generator.params import Distribution, GenerationParams
from generator.scenario import ParamSpec, Scenario
from policy.calibration_distance import ConditionRef, Measured
from policy.units import MAX_WIDTH, MIN_WIDTH, categorical_weights, numeric_summary, to_units, truncnormal

MIN_WEIGHT = 1e-3  # smallest categorical weight Optuna may propose (before normalising)


@dataclass
class Block:
    condition: ConditionRef
    parameters: list[str]
    effects: dict[str, float]  # parameter -> |ρ| or η in the starting render


def param_column(p: ParamSpec, name: str) -> str:
    return f"param.{name}" if p.scope == "image" else f"obj.{name}"


def _rows(ref: ConditionRef, p: ParamSpec, measured: Measured) -> pd.DataFrame | None:
    if ref.level == "image" and p.scope == "image":
        return measured.images
    return measured.objects


def _pairs(scenario: Scenario, ref: ConditionRef, name: str,
           measured: Measured) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parameter values, condition values and the uniform-share flag of the rows that have both."""
    p = scenario.parameters[name]
    frame = _rows(ref, p, measured)
    col = param_column(p, name)
    if frame is None or col not in frame or ref.column not in frame:
        return pd.Series(dtype=object), np.zeros(0), np.zeros(0, dtype=bool)
    y = pd.to_numeric(frame[ref.column], errors="coerce")
    ok = y.notna() & frame[col].notna()
    mixed = frame["uniform_mix"].fillna(False).astype(bool) if "uniform_mix" in frame else pd.Series(False, frame.index)
    return frame.loc[ok, col], y[ok].to_numpy(dtype=float), mixed[ok].to_numpy(dtype=bool)


def effect(scenario: Scenario, ref: ConditionRef, name: str, measured: Measured) -> float:
    """|Spearman ρ| (numeric) or correlation ratio η (categorical) of parameter vs condition."""
    x, y = _pairs(scenario, ref, name, measured)[:2]
    if len(y) < 5 or np.ptp(y) == 0:
        return 0.0
    if scenario.parameters[name].is_numeric:
        xs = x.to_numpy(dtype=float)
        rho = stats.spearmanr(xs, y).statistic if np.ptp(xs) > 0 else 0.0
        return float(abs(rho)) if math.isfinite(float(rho)) else 0.0
    groups = pd.Series(y).groupby(x.astype(str).to_numpy())
    between = float((groups.count() * (groups.mean() - y.mean()) ** 2).sum())
    return float(np.sqrt(between / max(float(((y - y.mean()) ** 2).sum()), 1e-12)))


def make_blocks(scenario: Scenario, refs: list[ConditionRef], pilot: Measured, explicit: list[str] | None,
                min_effect: float, max_per_condition: int) -> list[Block]:
    """Blocks (see the module docstring); explicit parameters join whatever their effect."""
    best: dict[str, tuple[float, str]] = {}
    for ref in refs:
        for name in scenario.parameters_for_condition(ref.name):
            if explicit is not None and name not in explicit:
                continue
            e = effect(scenario, ref, name, pilot)
            if name not in best or e > best[name][0]:
                best[name] = (e, ref.name)
    blocks = []
    for ref in refs:
        mine = sorted(((e, n) for n, (e, c) in best.items() if c == ref.name), reverse=True)
        if explicit is None:
            mine = [(e, n) for e, n in mine if e >= min_effect][:max_per_condition]
        if mine:
            blocks.append(Block(ref, [n for _, n in mine], {n: round(e, 4) for e, n in mine}))
    return blocks


def density_ratio(real: np.ndarray, synth: np.ndarray, bins: int = 10) -> np.ndarray:
    """Per synthetic value: (real share + ε) / (synthetic share + ε) of its quantile bin."""
    edges = np.unique(np.quantile(synth, np.linspace(0, 1, bins + 1))) if synth.size else np.zeros(0)
    if edges.size < 3 or real.size == 0:
        return np.ones(synth.size)
    nb = edges.size - 1
    real_share = np.histogram(np.clip(real, edges[0], edges[-1]), edges)[0] / real.size
    synth_share = np.histogram(synth, edges)[0] / synth.size
    ratio = (real_share + 1e-3) / (synth_share + 1e-3)
    return np.asarray(ratio[np.clip(np.searchsorted(edges, synth, side="right") - 1, 0, nb - 1)])


def _weighted_numeric(p: ParamSpec, x: pd.Series, w: np.ndarray) -> Distribution:
    u = np.array([to_units(p, float(v)) for v in x])
    m = float(np.average(u, weights=w))
    sd = float(np.sqrt(np.average((u - m) ** 2, weights=w)))
    return truncnormal(p, m, sd)


def _weighted_categorical(p: ParamSpec, start: Distribution | None, x: pd.Series, w: np.ndarray) -> Distribution:
    base = categorical_weights(p, start)
    keys = x.astype(str).to_numpy()
    out = {}
    for c, b in base.items():
        sel = keys == c
        out[c] = b * (float(w[sel].mean()) if sel.any() else 1.0)
    total = sum(out.values()) or 1.0
    return Distribution(kind="categorical", weights={c: round(max(v / total, 0.01), 4) for c, v in out.items()})


def reweighted_proposal(scenario: Scenario, block: Block, real: np.ndarray, pilot: Measured,
                        start: GenerationParams) -> dict[str, Distribution]:
    """The data-driven start of one block (see the module docstring)."""
    out = {}
    for name in block.parameters:
        p = scenario.parameters[name]
        x, y, mixed = _pairs(scenario, block.condition, name, pilot)
        if len(y) < 5:
            continue
        y = np.log1p(np.maximum(y, 0.0)) if block.condition.log else y
        w = density_ratio(real, y)
        if (~mixed).sum() >= 5:  # the uniform-share rows were not drawn from `start`
            x, w = x[~mixed], w[~mixed]
        if p.is_numeric:
            out[name] = _weighted_numeric(p, x, w)
        else:
            out[name] = _weighted_categorical(p, start.distributions.get(name), x, w)
    return out


def block_space(scenario: Scenario, block: Block, incumbent: GenerationParams, radius: float,
                ratio: float) -> tuple[dict[str, BaseDistribution], dict[str, float]]:
    """Optuna distributions around the incumbent and the incumbent's own point in them."""
    space: dict[str, BaseDistribution] = {}
    point: dict[str, float] = {}
    for name in block.parameters:
        p, d = scenario.parameters[name], incumbent.distributions.get(name)
        if p.is_numeric:
            c, w = numeric_summary(p, d)
            c, w = min(1.0, max(0.0, c)), min(MAX_WIDTH, max(MIN_WIDTH, w))
            space[f"{name}|centre"] = FloatDistribution(max(0.0, c - radius), min(1.0, c + radius))
            space[f"{name}|width"] = FloatDistribution(max(MIN_WIDTH, w / ratio), min(MAX_WIDTH, w * ratio), log=True)
            point.update({f"{name}|centre": c, f"{name}|width": w})
            continue
        for choice, wt in categorical_weights(p, d).items():
            wt = min(1.0, max(MIN_WEIGHT, wt))
            space[f"{name}|w|{choice}"] = FloatDistribution(max(MIN_WEIGHT, wt / ratio), min(1.0, wt * ratio),
                                                            log=True)
            point[f"{name}|w|{choice}"] = wt
    return space, point


def decode(scenario: Scenario, block: Block, values: dict[str, float]) -> dict[str, Distribution]:
    """Distributions from one point of :func:`block_space`."""
    out = {}
    for name in block.parameters:
        p = scenario.parameters[name]
        if p.is_numeric:
            out[name] = truncnormal(p, values[f"{name}|centre"], values[f"{name}|width"])
            continue
        raw = {str(c): values[f"{name}|w|{c}"] for c in p.choices or []}
        total = sum(raw.values())
        out[name] = Distribution(kind="categorical", weights={c: round(v / total, 4) for c, v in raw.items()})
    return out


def blend(scenario: Scenario, old: GenerationParams, new: dict[str, Distribution],
          alpha: float) -> dict[str, Distribution]:
    """``alpha`` of the way from ``old``'s distributions to ``new`` (centres linearly, widths
    geometrically in range units; categorical weights linearly)."""
    out = {}
    for name, d in new.items():
        p, prev = scenario.parameters[name], old.distributions.get(name)
        if p.is_numeric:
            c0, w0 = numeric_summary(p, prev)
            c1, w1 = numeric_summary(p, d)
            w0, w1 = (min(MAX_WIDTH, max(MIN_WIDTH, w)) for w in (w0, w1))
            out[name] = truncnormal(p, (1 - alpha) * c0 + alpha * c1, w0 ** (1 - alpha) * w1**alpha)
            continue
        a, b = categorical_weights(p, prev), categorical_weights(p, d)
        out[name] = Distribution(kind="categorical",
                                 weights={c: round((1 - alpha) * a[c] + alpha * b[c], 4) for c in a})
    return out


def with_distributions(params: GenerationParams, update: dict[str, Distribution]) -> GenerationParams:
    return GenerationParams(scenario=params.scenario, uniform_share=params.uniform_share,
                            distributions={**params.distributions, **update})
