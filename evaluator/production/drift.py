"""Drift per condition: production window vs the reference (training) distribution.

For every condition of the scenario that a production log can estimate
(:func:`evaluator.production.tables.production_values`), two tests of production values
against the reference values:

- **PSI** (population stability index): the reference's deciles cut both samples into
  ``psi_bins`` bins (open-ended outer bins, tied edges merged);
  ``PSI = Σ (p_i − q_i) · ln(p_i / q_i)`` with production shares ``p`` and reference shares
  ``q``, each smoothed by half a count per bin (``(count + 0.5) / (n + 0.5·bins)``), so an
  empty bin in a small window gives a finite term instead of the explosion a fixed 1e-4
  floor gives (one empty decile of 40 frames alone would add ~0.7).
  Rule of thumb: < 0.1 stable, 0.1–0.2 moderate, > 0.2 a real shift.
- **KS** (two-sample Kolmogorov–Smirnov, ``scipy.stats.ks_2samp``): the largest gap between
  the two empirical CDFs and its p-value.

``status``: ``drift`` when PSI > ``psi_drift`` **and** KS p < ``ks_alpha``; ``watch`` when only
one of them fires or PSI is in (``psi_watch``, ``psi_drift``]; ``stable`` otherwise;
``insufficient`` when either side has fewer than ``min_samples`` values (no test is made: a
tiny window never raises a drift flag); ``unavailable`` when the condition cannot be estimated.
``direction`` compares medians (``lower`` / ``higher`` / ``same``); ``reference_range`` and
``production_range`` are each sample's 10th–90th percentiles (what a drift target aims at:
:mod:`evaluator.production.merge`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluator.production.options import ProductionOptions
from evaluator.production.tables import ReferenceTables, WindowTables, production_values, reference_values
from generator.scenario import Scenario

SMOOTHING = 0.5  # counts added to every bin (Jeffreys)
RANGE_QUANTILES = (0.1, 0.9)  # the central range reported for each sample


def _range(values: np.ndarray) -> list[float] | None:
    return [float(q) for q in np.quantile(values, RANGE_QUANTILES)] if values.size else None


def psi(reference: np.ndarray, production: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``production`` against ``reference`` (see module doc)."""
    ref = np.asarray(reference, dtype=float)
    prod = np.asarray(production, dtype=float)
    inner = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    k = inner.size + 1
    q = (np.bincount(np.searchsorted(inner, ref, side="right"), minlength=k) + SMOOTHING) / (ref.size + SMOOTHING * k)
    p = (np.bincount(np.searchsorted(inner, prod, side="right"), minlength=k) + SMOOTHING) / (prod.size + SMOOTHING * k)
    return float(np.sum((p - q) * np.log(p / q)))


def ks_test(reference: np.ndarray, production: np.ndarray) -> tuple[float, float]:
    """``(statistic, p_value)`` of the two-sample KS test."""
    from scipy.stats import ks_2samp

    res = ks_2samp(np.asarray(reference, dtype=float), np.asarray(production, dtype=float))
    return float(res.statistic), float(res.pvalue)


def classify(psi_value: float, ks_p: float, options: ProductionOptions) -> str:
    """``drift`` / ``watch`` / ``stable`` from the two statistics (module docstring)."""
    big, real = psi_value > options.psi_drift, ks_p < options.ks_alpha
    if big and real:
        return "drift"
    if big or real or psi_value > options.psi_watch:
        return "watch"
    return "stable"


def _direction(ref: np.ndarray, prod: np.ndarray) -> str:
    a, b = float(np.median(ref)), float(np.median(prod))
    scale = max(abs(a), abs(b), 1e-12)
    return "same" if abs(b - a) <= 1e-9 * scale else ("lower" if b < a else "higher")


def compare(reference: np.ndarray, production: np.ndarray, options: ProductionOptions) -> dict[str, Any]:
    """The drift entry for one condition's two samples (NaNs dropped)."""
    ref = reference[~np.isnan(reference)]
    prod = production[~np.isnan(production)]
    out: dict[str, Any] = {"n_reference": int(ref.size), "n_production": int(prod.size),
                           "psi": None, "ks_stat": None, "ks_p": None,
                           "reference_median": float(np.median(ref)) if ref.size else None,
                           "production_median": float(np.median(prod)) if prod.size else None,
                           "reference_range": _range(ref), "production_range": _range(prod),
                           "direction": None}
    if min(ref.size, prod.size) < options.min_samples:
        return {**out, "status": "insufficient",
                "reason": f"needs >= {options.min_samples} values on each side "
                          f"(reference {ref.size}, production {prod.size})"}
    value = psi(ref, prod, options.psi_bins)
    stat, p = ks_test(ref, prod)
    return {**out, "psi": value, "ks_stat": stat, "ks_p": p, "direction": _direction(ref, prod),
            "status": classify(value, p, options)}


def drift_table(scenario: Scenario, ref: ReferenceTables, prod: WindowTables,
                options: ProductionOptions) -> list[dict[str, Any]]:
    """One entry per scenario condition: ``condition``, ``column``, ``level``, ``source`` and
    the fields of :func:`compare`, or ``status: unavailable`` with the ``reason``."""
    rows = []
    for name, spec in scenario.spec.conditions.items():
        head = {"condition": name, "column": spec.column, "level": spec.level}
        got = production_values(spec, prod, ref.fill_ratio, options.score_threshold)
        ref_values = reference_values(spec, ref)
        if isinstance(got, str) or isinstance(ref_values, str):
            reason = got if isinstance(got, str) else ref_values
            rows.append({**head, "source": None, "status": "unavailable", "reason": reason})
            continue
        values, source = got
        rows.append({**head, "source": source, **compare(ref_values, values, options)})
    return rows


def drifted(table: list[dict[str, Any]]) -> list[str]:
    """Names of the conditions flagged ``drift``."""
    return [r["condition"] for r in table if r["status"] == "drift"]
