"""Slices: recall, precision and AP per bin of every scenario condition, and the weak ones.

Each condition of the scenario (``spec.conditions``: column, level, ``bins`` or
``quantiles``) is binned — explicit edges (the outer edges stretched to the observed min/max
so no value falls outside), else equal-count bins from quantiles of this data (tied edges
merge). A bin is ``[lo, hi)``, the last one closed. Per slice:

- ``support_objects`` / ``support_images``, ``recall`` = detected ÷ objects at the operating
  score threshold, with a Wilson 95% interval (``recall_ci``);
- ``precision`` at the operating threshold. Image-level conditions: predictions belong to the
  slice of their image. Object-level: a TP belongs to the slice of its true object, an FP to
  the slice of its own box's condition when a box tells it (``pixel_size``, ``box_size``, …,
  :func:`evaluator.conditions.box_values`) or of its image for image columns; otherwise FPs
  cannot be placed and precision and AP are null for that condition;
- ``ap`` (AP at the matching IoU, 0.5 by default) with a bootstrap interval over images, when
  ``support_objects >= min_support``.

Weak slices: ``gap = overall recall − slice recall``; *significant* when the slice's Wilson
upper bound is below the overall recall; ranked by ``score = gap × sqrt(support_objects)`` (a
z-like score: a large gap on many objects first, tiny slices sink). Each is mapped back to the
generator parameters that declare the condition (``Scenario.parameters_for_condition``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluator.ap import APData, average_precision, bootstrap_ap
from evaluator.conditions import ConditionTables, box_values
from evaluator.matching import Matches
from evaluator.stats import significantly_below, wilson_interval
from generator.scenario import ConditionSpec, Scenario

UNPLACED = -2  # an FP whose condition value cannot be computed


@dataclass(frozen=True)
class SliceOptions:
    min_support: int = 20  # objects needed before a slice gets an AP (bootstrap is noisy below)
    resamples: int = 200  # bootstrap resamples for AP intervals; 0 turns them off


@dataclass
class Binned:
    """One condition, binned: bin index per true object / prediction / image (-1 = no value)."""

    name: str
    spec: ConditionSpec
    edges: np.ndarray
    gt_bin: np.ndarray
    pred_bin: np.ndarray
    image_bin: np.ndarray | None  # image-level conditions only
    placeable: bool  # every FP has a bin
    n_null: int
    binning: str


def bin_edges(values: np.ndarray, spec: ConditionSpec) -> np.ndarray:
    """Bin edges for the non-NaN ``values`` (see the module docstring)."""
    v = values[~np.isnan(values)]
    if spec.bins:
        edges = np.array(sorted(float(e) for e in spec.bins))
        if v.size:
            edges[0], edges[-1] = min(edges[0], v.min()), max(edges[-1], v.max())
        return edges
    edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, spec.quantiles + 1)))
    return edges if edges.size >= 2 else np.array([edges[0], edges[0]])


def assign_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (clamped into the end bins); -1 for NaN."""
    idx = np.searchsorted(edges[1:-1], values, side="right")
    return np.where(np.isnan(values), -1, idx)


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def _fp_values(spec: ConditionSpec, tables: ConditionTables, matches: Matches,
               image_values: pd.Series | None) -> np.ndarray | None:
    preds = matches.preds
    boxes = preds[["x", "y", "w", "h"]].to_numpy(dtype=float)
    vals = box_values(spec.column, boxes, tables.fill_ratio)
    if vals is None and image_values is not None:
        vals = _numeric(preds["image_id"].map(image_values))
    return vals


def bin_condition(name: str, spec: ConditionSpec, tables: ConditionTables,
                  matches: Matches) -> Binned | str:
    """Bin one condition, or return why it cannot be (missing / non-numeric column, bad bins)."""
    source = tables.images if spec.level == "image" else tables.objects
    if spec.column not in source.columns:
        return f"column {spec.column!r} is not in the {spec.level} table"
    if spec.bins is not None and len(spec.bins) < 2:
        return f"bins needs at least two edges, but got {spec.bins}"
    img_vals = (pd.Series(_numeric(tables.images[spec.column]), index=tables.images["image_id"])
                if spec.column in tables.images.columns else None)
    if spec.level == "image":
        assert img_vals is not None
        gt_vals = _numeric(matches.gt["image_id"].map(img_vals))
        all_vals = img_vals.to_numpy()
    else:
        by_ann = tables.objects.set_index("ann_id")[spec.column]
        gt_vals = all_vals = _numeric(matches.gt["ann_id"].map(by_ann))
    if np.isnan(all_vals).all():
        return f"column {spec.column!r} has no numeric values"
    edges = bin_edges(all_vals, spec)
    gt_bin = assign_bins(gt_vals, edges)
    image_bin = assign_bins(all_vals, edges) if spec.level == "image" else None
    pred_bin, placeable = _pred_bins(spec, tables, matches, img_vals, gt_bin, edges)
    return Binned(name, spec, edges, gt_bin, pred_bin, image_bin, placeable,
                  int(np.isnan(all_vals).sum()), "bins" if spec.bins else "quantiles")


def _pred_bins(spec: ConditionSpec, tables: ConditionTables, matches: Matches,
               img_vals: pd.Series | None, gt_bin: np.ndarray,
               edges: np.ndarray) -> tuple[np.ndarray, bool]:
    preds = matches.preds
    if spec.level == "image":
        assert img_vals is not None
        return assign_bins(_numeric(preds["image_id"].map(img_vals)), edges), True
    row_of_ann = pd.Series(np.arange(len(matches.gt)), index=matches.gt["ann_id"].to_numpy())
    tp = preds["tp"].to_numpy(dtype=bool)
    out = np.full(len(preds), UNPLACED)
    if tp.any():
        out[tp] = gt_bin[row_of_ann.loc[preds["ann_id"][tp].to_numpy()].to_numpy()]
    fp_vals = _fp_values(spec, tables, matches, img_vals)
    if fp_vals is not None:
        out[~tp] = assign_bins(fp_vals[~tp], edges)
    return out, fp_vals is not None or not (~tp).any()


def ap_data(matches: Matches, image_ids: list[int], gt_sel: np.ndarray | None = None,
            pred_sel: np.ndarray | None = None) -> APData:
    """:class:`APData` for the selected true objects and predictions (default: all)."""
    index = {iid: i for i, iid in enumerate(image_ids)}
    gt, preds = matches.gt, matches.preds
    gs = np.ones(len(gt), bool) if gt_sel is None else gt_sel
    ps = np.ones(len(preds), bool) if pred_sel is None else pred_sel
    return APData(
        pred_score=preds["score"].to_numpy(float)[ps], pred_tp=preds["tp"].to_numpy(bool)[ps],
        pred_image=preds["image_id"].map(index).to_numpy(int)[ps],
        pred_class=preds["category_id"].to_numpy(int)[ps],
        gt_image=gt["image_id"].map(index).to_numpy(int)[gs],
        gt_class=gt["category_id"].to_numpy(int)[gs], n_images=len(image_ids))


def _side(b: int, n_bins: int) -> str:
    if n_bins == 1:
        return "all"
    return "low" if b == 0 else "high" if b == n_bins - 1 else "middle"


def _slice(c: Binned, b: int, matches: Matches, image_ids: list[int], overall: float,
           options: SliceOptions, rng: np.random.Generator) -> dict[str, Any]:
    gt, preds = matches.gt, matches.preds
    in_gt, in_pred = c.gt_bin == b, c.pred_bin == b
    n, k = int(in_gt.sum()), int(gt["detected"].to_numpy()[in_gt].sum())
    above, tp = preds["above"].to_numpy(bool), preds["tp"].to_numpy(bool)
    n_tp, n_fp = int((in_pred & above & tp).sum()), int((in_pred & above & ~tp).sum())
    recall = k / n if n else None
    ap = ci = None
    if c.placeable and n >= options.min_support:
        data = ap_data(matches, image_ids, in_gt, in_pred)
        ap, ci = average_precision(data), bootstrap_ap(data, rng, options.resamples)
    n_images = (int((c.image_bin == b).sum()) if c.image_bin is not None
                else int(gt["image_id"][in_gt].nunique()))
    gap = None if recall is None else overall - recall
    return {
        "condition": c.name, "column": c.spec.column, "level": c.spec.level, "bin": b,
        "n_bins": len(c.edges) - 1, "range": [float(c.edges[b]), float(c.edges[b + 1])],
        "side": _side(b, len(c.edges) - 1), "support_objects": n, "support_images": n_images,
        "detected": k, "recall": recall, "recall_ci": list(wilson_interval(k, n)) if n else None,
        "tp": n_tp, "fp": n_fp,
        "precision": n_tp / (n_tp + n_fp) if c.placeable and n_tp + n_fp else None,
        "ap": ap, "ap_ci": list(ci) if ci else None, "gap": gap,
        "significant": significantly_below(k, n, overall),
        "score": None if gap is None else gap * math.sqrt(n),
    }


def condition_slices(scenario: Scenario, tables: ConditionTables, matches: Matches,
                     options: SliceOptions, rng: np.random.Generator,
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(conditions, slices)``: one entry per scenario condition (status, edges, binning) and
    one row per (condition, bin) with the metrics of the module docstring."""
    image_ids = [int(i) for i in tables.images["image_id"]]
    n_gt = len(matches.gt)
    overall = float(matches.gt["detected"].sum()) / n_gt if n_gt else 0.0
    conditions, slices = [], []
    for name, spec in scenario.spec.conditions.items():
        entry: dict[str, Any] = {"name": name, "column": spec.column, "level": spec.level,
                                 "description": spec.description,
                                 "source": tables.sources.get(spec.column, "metadata")}
        binned = bin_condition(name, spec, tables, matches)
        if isinstance(binned, str):
            conditions.append({**entry, "status": "unavailable", "reason": binned})
            continue
        conditions.append({**entry, "status": "ok", "binning": binned.binning,
                           "edges": [float(e) for e in binned.edges], "n_null": binned.n_null,
                           "fp_placeable": binned.placeable})
        for b in range(len(binned.edges) - 1):
            slices.append(_slice(binned, b, matches, image_ids, overall, options, rng))
    return conditions, slices


def param_spec(scenario: Scenario, name: str) -> dict[str, Any]:
    p = scenario.parameters[name]
    out: dict[str, Any] = {"type": p.type, "scope": p.scope, "default": p.default}
    if p.range is not None:
        out["range"] = list(p.range)
    if p.choices is not None:
        out["choices"] = list(p.choices)
    return out


def weak_slices(slices: list[dict[str, Any]], scenario: Scenario,
                overall_recall: float) -> list[dict[str, Any]]:
    """Significant slices, best first by score, each mapped to generator parameters."""
    weak = sorted((s for s in slices if s["significant"]),
                  key=lambda s: (-s["score"], s["condition"], s["bin"]))
    out = []
    for rank, s in enumerate(weak, start=1):
        params = scenario.parameters_for_condition(s["condition"])
        out.append({
            "rank": rank, "condition": s["condition"], "column": s["column"], "level": s["level"],
            "bin": s["bin"], "range": s["range"], "side": s["side"], "parameters": params,
            "parameter_specs": {p: param_spec(scenario, p) for p in params},
            "recall": s["recall"], "ci": s["recall_ci"], "overall_recall": overall_recall,
            "gap": s["gap"], "support": s["support_objects"],
            "support_images": s["support_images"], "precision": s["precision"],
            "ap": s["ap"], "score": s["score"],
        })
    return out
