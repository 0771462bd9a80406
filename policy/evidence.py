"""Learn from the failure: where each implicated parameter should go, read off synthetic data.

The scenario says *which* parameters control a condition (``camera.distance`` → object size)
but not *which way*. The latest synthetic shard knows: its ``conditions.parquet`` holds, per
object, the sampled parameter values (``param.<name>`` image scope, ``obj.<name>`` object
scope) next to the measured conditions (``pixel_size``, ``stat.brightness``, …). For a weak
slice ``[lo, hi]`` of a condition and one implicated parameter:

- **conditional** — the synthetic rows whose condition falls in ``[lo, hi]`` show which
  parameter values produced that condition: their median (range units) is the target centre,
  their spread the target width.
- **push** — when the weak range is barely covered by synthetic data (real digits smaller than
  any synthetic digit), the Spearman correlation of parameter vs condition over all rows gives
  the direction: push the parameter toward the end of its range that moves the condition
  toward the weak range, as far as ``|ρ| / full_push_rho`` (capped at the edge).
- the two blend by the share of ``[lo, hi]`` the synthetic data covers.

A parameter without a monotone relation to the condition (``|ρ| < min_rho``), or without
enough rows, gets no target: the evidence says nothing, so the policy leaves it alone.
Categorical parameters get weights ∝ P(condition in ``[lo, hi]`` | choice), smoothed toward
the base rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from generator.params import Distribution
from generator.scenario import ParamSpec
from policy.reports import WeakSlice
from policy.units import MIN_WIDTH, choice_names, numeric_summary, to_units

MAX_TARGET_WIDTH = 0.35  # range units: a target spread wider than this is not a focus


@dataclass(frozen=True)
class EvidenceOptions:
    min_rows: int = 20  # rows needed (overall, and inside the weak range for "conditional")
    min_rho: float = 0.1  # |Spearman ρ| below this: the parameter does not drive the condition
    full_push_rho: float = 0.5  # |ρ| at which a push goes all the way to the range's edge
    push_width: float = 0.15  # target spread (range units) of a push
    min_lift: float = 0.2  # a categorical choice must be this much above the base rate


@dataclass(frozen=True)
class Target:
    """Where one parameter should go for one weak slice (range units), and why."""

    parameter: str
    method: str  # conditional | conditional+push | push | none
    reason: str
    rows: int = 0
    rows_in_range: int = 0
    rho: float | None = None
    covered: float | None = None
    centre: float | None = None
    width: float | None = None
    weights: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_column(name: str, spec: ParamSpec) -> str:
    return f"param.{name}" if spec.scope == "image" else f"obj.{name}"


def coverage(smin: float, smax: float, lo: float, hi: float) -> float:
    """Share of ``[lo, hi]`` inside the synthetic data's ``[smin, smax]``."""
    if hi <= lo:
        return 1.0 if smin <= lo <= smax else 0.0
    return max(0.0, min(hi, smax) - max(lo, smin)) / (hi - lo)


def _frame(df: pd.DataFrame | None, ws: WeakSlice, name: str,
           spec: ParamSpec) -> tuple[pd.DataFrame, str]:
    """Rows with both the condition and the parameter present; or an empty frame and why."""
    pcol = param_column(name, spec)
    if df is None or df.empty:
        return pd.DataFrame(), "no synthetic conditions were given (pass the latest shard)"
    for col in (ws.column, pcol):
        if col not in df.columns:
            return pd.DataFrame(), f"column {col!r} is not in the synthetic conditions"
    sub = df
    if ws.level == "image" and spec.scope == "image" and "image_id" in df.columns:
        sub = df.drop_duplicates("image_id")  # one row per image, not per object
    out = pd.DataFrame({"c": pd.to_numeric(sub[ws.column], errors="coerce"), "x": sub[pcol]})
    out = out[np.isfinite(out["c"].to_numpy(dtype=float)) & out["x"].notna()]
    return out.reset_index(drop=True), ""


def _spearman(x: pd.Series, c: pd.Series) -> float:
    rho = x.rank().corr(c.rank())
    return 0.0 if rho is None or not np.isfinite(rho) else float(rho)


def numeric_target(df: pd.DataFrame | None, ws: WeakSlice, name: str, spec: ParamSpec,
                   current: Distribution | None, opt: EvidenceOptions) -> Target:
    rows, why = _frame(df, ws, name, spec)
    if why or len(rows) < opt.min_rows:
        return Target(name, "none", why or f"only {len(rows)} synthetic rows (< {opt.min_rows})",
                      rows=len(rows))
    x = pd.to_numeric(rows["x"], errors="coerce").astype(float)
    c = rows["c"].astype(float)
    rho = _spearman(x, c)
    inside = ((c >= ws.lo) & (c <= ws.hi)).to_numpy()
    covered = coverage(float(c.min()), float(c.max()), ws.lo, ws.hi)
    base: dict[str, Any] = dict(rows=len(rows), rows_in_range=int(inside.sum()), rho=round(rho, 6),
                                covered=round(covered, 6))
    if abs(rho) < opt.min_rho:
        return Target(name, "none", f"no monotone relation to {ws.column} (|ρ| = {abs(rho):.3f} "
                      f"< {opt.min_rho})", **base)
    cur_c, _ = numeric_summary(spec, current)
    down = (ws.lo + ws.hi) / 2 < float(c.median())  # the weak range lies below the bulk
    edge = 1.0 if (rho > 0) != down else 0.0
    push = cur_c + min(1.0, abs(rho) / opt.full_push_rho) * (edge - cur_c)
    if inside.sum() < opt.min_rows:
        return Target(name, "push", f"{int(inside.sum())} synthetic rows in the weak range "
                      f"(< {opt.min_rows}): pushed toward the {'upper' if edge else 'lower'} end "
                      f"by ρ = {rho:+.2f}", centre=round(push, 6), width=opt.push_width,
                      **base)
    u = np.array([to_units(spec, v) for v in x[inside]])
    cond_c = float(np.median(u))
    cond_w = float(np.clip(u.std(), MIN_WIDTH, MAX_TARGET_WIDTH))
    method = "conditional" if covered >= 0.999 else "conditional+push"
    return Target(name, method, f"{int(inside.sum())} synthetic rows in the weak range; "
                  f"{covered:.0%} of it covered", centre=round(covered * cond_c + (1 - covered) * push, 6),
                  width=round(covered * cond_w + (1 - covered) * opt.push_width, 6),
                  **base)


def categorical_target(df: pd.DataFrame | None, ws: WeakSlice, name: str, spec: ParamSpec,
                       current: Distribution | None, opt: EvidenceOptions) -> Target:
    rows, why = _frame(df, ws, name, spec)
    inside = ((rows["c"] >= ws.lo) & (rows["c"] <= ws.hi)) if len(rows) else pd.Series([], dtype=bool)
    n_in = int(inside.sum())
    if why or n_in < opt.min_rows:
        return Target(name, "none", why or f"{n_in} synthetic rows in the weak range (< {opt.min_rows}): "
                      "choices cannot be ranked", rows=len(rows), rows_in_range=n_in)
    x = rows["x"].astype(str)
    rate = n_in / len(rows)
    p = {}
    for choice in choice_names(spec):
        sel = (x == choice).to_numpy()
        p[choice] = (float(inside[sel].sum()) + 2 * rate) / (float(sel.sum()) + 2)
    base: dict[str, Any] = dict(rows=len(rows), rows_in_range=n_in)
    if max(p.values()) < rate * (1 + opt.min_lift):
        return Target(name, "none", f"no choice is over-represented in the weak range "
                      f"(max lift < {1 + opt.min_lift:.2f})", **base)
    total = sum(p.values())
    return Target(name, "conditional", f"{n_in} synthetic rows in the weak range; weights ∝ "
                  "P(weak | choice)", weights={k: round(v / total, 6) for k, v in p.items()},
                  **base)


def find_target(df: pd.DataFrame | None, ws: WeakSlice, name: str, spec: ParamSpec,
                current: Distribution | None, opt: EvidenceOptions) -> Target:
    """The data-driven target of parameter ``name`` for weak slice ``ws`` (see module doc)."""
    fn = numeric_target if spec.is_numeric else categorical_target
    return fn(df, ws, name, spec, current, opt)

