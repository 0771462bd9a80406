"""Failure signals per slice of a production window: prevalence, confidence, reviewed errors.

Slices are the bins of the scenario's conditions, cut with the **real-val report's edges**
when one is given (so production bins line up with its weak slices), else with edges from the
reference values (:func:`evaluator.slices.bin_edges`: the condition's ``bins`` or quantiles).
Outer bins are open-ended, as in the evaluator. Per bin:

- ``prevalence``: share of the window's units in the bin — readable frames (image conditions)
  or objects (object conditions): reviewed label boxes when the window holds at least
  ``min_samples`` of them, else predicted boxes at or above the operating threshold
  (``prevalence_source`` says which; predicted boxes under-count what the model misses);
- confidence proxies over the *accepted* detections (score >= the operating threshold; an
  image condition puts a detection in its frame's bin, an object condition in its own box's
  bin): ``low_conf_rate`` = share scoring below ``confident``; ``mean_entropy`` = mean binary
  entropy of their scores in bits (1 = a coin flip, 0 = certain); for image conditions also
  ``empty_rate`` = share of frames without an accepted detection and ``mean_max_score`` = mean
  over frames of the highest logged score (0 without any): it falls when scores sink below the
  threshold, which the accepted-only rates cannot see;
- ``reviewed`` (frames with reviewed labels only): true objects, ``detected``, ``recall`` with
  its Wilson 95% interval, ``tp`` / ``fp`` / ``precision`` at the operating point, matched at
  ``iou`` greedily by score (:func:`evaluator.matching.match_predictions`).

Proxies are signals, not errors: only reviewed labels measure errors.

:func:`window_signals` puts one window together (``synthloop-production-signals``, schema 1):
the ingest counts and malformed lines (:mod:`~evaluator.production.ingest`), drift per condition
(:mod:`~evaluator.production.drift`) and the slice signals above. A
:class:`~evaluator.production.ingest.NoData` result gives ``status: "no_data"`` with its reason
and counts, and **no** drift, overall or slice signals — an empty window never produces a number
that looks like a measurement. Key by key, the dict is documented in docs/production.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from evaluator.checks import report_identity
from evaluator.matching import match_predictions
from evaluator.production.drift import drift_table, drifted
from evaluator.production.ingest import NoData, Window
from evaluator.production.options import ProductionOptions
from evaluator.production.tables import (
    ImageLoader,
    ReferenceTables,
    WindowTables,
    box_frame_values,
    load_rgb,
    reference_values,
    window_tables,
)
from evaluator.slices import assign_bins, bin_edges
from evaluator.stats import wilson_interval
from generator import atomic
from generator.scenario import ConditionSpec, Scenario


def entropy_bits(scores: np.ndarray) -> np.ndarray:
    """Binary entropy of each score, in bits."""
    s = np.clip(np.asarray(scores, dtype=float), 1e-12, 1 - 1e-12)
    return -(s * np.log2(s) + (1 - s) * np.log2(1 - s))


def _side(b: int, n: int) -> str:
    return "all" if n == 1 else "low" if b == 0 else "high" if b == n - 1 else "middle"


def _ratio(k: float, n: float) -> float | None:
    return float(k) / float(n) if n else None


def confidence(scores: np.ndarray, options: ProductionOptions) -> dict[str, Any]:
    """``n_predictions``, ``low_conf_rate``, ``mean_entropy`` of the accepted detections."""
    s = scores[scores >= options.score_threshold]
    return {"n_predictions": int(s.size), "low_conf_rate": _ratio(int((s < options.confident).sum()), s.size),
            "mean_entropy": float(entropy_bits(s).mean()) if s.size else None}


def reviewed_matches(t: WindowTables, options: ProductionOptions) -> Any | None:
    """Matches of the reviewed frames' predictions against their labels (None: none reviewed)."""
    reviewed = t.images.loc[t.images["reviewed"], "image_id"] if len(t.images) else pd.Series([], dtype=int)
    if reviewed.empty:
        return None
    gt = {"images": [{"id": int(i)} for i in reviewed],
          "annotations": [{"id": int(r.ann_id), "image_id": int(r.image_id), "category_id": int(r.category_id),
                           "bbox": [r.x, r.y, r.w, r.h]} for r in t.labels.itertuples()]}
    preds = t.predictions[t.predictions["image_id"].isin(set(reviewed))]
    results = [{"image_id": int(r.image_id), "category_id": int(r.category_id), "score": float(r.score),
                "bbox": [r.x, r.y, r.w, r.h]} for r in preds.itertuples()]
    return match_predictions(gt, results, options.iou, options.score_threshold)


def _reviewed_counts(detected: np.ndarray, tp: np.ndarray, fp: np.ndarray, images: int) -> dict[str, Any]:
    n, k = int(detected.size), int(detected.sum())
    n_tp, n_fp = int(tp.sum()), int(fp.sum())
    return {"support": n, "support_images": images, "detected": k, "recall": _ratio(k, n),
            "recall_ci": list(wilson_interval(k, n)) if n else None,
            "tp": n_tp, "fp": n_fp, "precision": _ratio(n_tp, n_tp + n_fp)}


def frame_stats(t: WindowTables, frames: np.ndarray) -> dict[str, Any]:
    """``empty_rate`` and ``mean_max_score`` over the selected frames (None when there are none)."""
    n = int(frames.sum())
    if not n:
        return {"empty_rate": None, "mean_max_score": None}
    return {"empty_rate": _ratio(int((t.images["n_predicted"].to_numpy()[frames] == 0).sum()), n),
            "mean_max_score": float(t.images["max_score"].to_numpy(float)[frames].mean())}


def overall_signals(t: WindowTables, matches: Any | None, options: ProductionOptions) -> dict[str, Any]:
    """Window-wide confidence proxies and, when frames were reviewed, real errors."""
    n_img = int(t.images["readable"].sum()) if len(t.images) else 0
    out = {"frames": len(t.images), "readable_frames": n_img,
           "reviewed_frames": int(t.images["reviewed"].sum()) if len(t.images) else 0,
           **confidence(t.predictions["score"].to_numpy(float), options),
           **frame_stats(t, np.ones(len(t.images), bool))}
    if matches is None:
        return {**out, "reviewed": None}
    above, tp = matches.preds["above"].to_numpy(bool), matches.preds["tp"].to_numpy(bool)
    gt = matches.gt
    return {**out, "reviewed": _reviewed_counts(gt["detected"].to_numpy(bool), above & tp, above & ~tp,
                                                int(gt["image_id"].nunique()))}


def _unit_values(spec: ConditionSpec, t: WindowTables, fill: float) -> tuple[np.ndarray, np.ndarray] | str:
    """``(image values by image_id, detection values by prediction row)`` of one condition."""
    preds = t.predictions
    if spec.level == "image":
        if spec.column.startswith("stat."):
            img = pd.to_numeric(t.images[spec.column], errors="coerce").to_numpy(float)
        elif spec.column == "n_objects":
            img = t.images["n_predicted"].to_numpy(float)
        else:
            return f"image column {spec.column!r} needs generator metadata"
        return img, img[preds["image_id"].to_numpy(int)] if len(preds) else np.zeros(0)
    box = box_frame_values(spec.column, preds, fill)
    if box is None:
        return f"object column {spec.column!r} needs a mask"
    return np.full(len(t.images), np.nan), np.asarray(box, dtype=float)


def _edges(name: str, spec: ConditionSpec, ref: ReferenceTables,
           report_edges: dict[str, list[float]] | None) -> tuple[np.ndarray, str] | str:
    if report_edges is not None:
        if name not in report_edges:
            return "the real-val report did not slice this condition"
        return np.asarray(report_edges[name], dtype=float), "real-val report"
    values = reference_values(spec, ref)
    return values if isinstance(values, str) else (bin_edges(values, spec), "reference")


def _prevalence_units(spec: ConditionSpec, t: WindowTables, img: np.ndarray, fill: float,
                      options: ProductionOptions) -> tuple[np.ndarray, str]:
    if spec.level == "image":
        return img[t.images["readable"].to_numpy(bool)], "readable frames"
    if len(t.labels) >= options.min_samples:
        return np.asarray(box_frame_values(spec.column, t.labels, fill), float), "reviewed label boxes"
    above = t.predictions[t.predictions["score"] >= options.score_threshold]
    return np.asarray(box_frame_values(spec.column, above, fill), float), \
        f"predicted boxes with score >= {options.score_threshold}"


def _reviewed_bins(spec: ConditionSpec, t: WindowTables, matches: Any, img: np.ndarray, edges: np.ndarray,
                   fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each reviewed true object and of each matched-set prediction."""
    gt, preds = matches.gt, matches.preds
    if spec.level == "image":
        return (assign_bins(img[gt["image_id"].to_numpy(int)], edges),
                assign_bins(img[preds["image_id"].to_numpy(int)], edges))
    labels = t.labels.set_index("ann_id").loc[gt["ann_id"].to_numpy(int)]
    gt_bin = assign_bins(np.asarray(box_frame_values(spec.column, labels, fill), float), edges)
    own = assign_bins(np.asarray(box_frame_values(spec.column, preds, fill), float), edges)
    row_of = pd.Series(np.arange(len(gt)), index=gt["ann_id"].to_numpy(int))
    tp = preds["tp"].to_numpy(bool)
    if tp.any():
        own[tp] = gt_bin[row_of.loc[preds["ann_id"].to_numpy(int)[tp]].to_numpy()]
    return gt_bin, own


def _bin_entry(b: int, edges: np.ndarray, units: np.ndarray, scores: np.ndarray, det_bin: np.ndarray,
               options: ProductionOptions) -> dict[str, Any]:
    n_bins = len(edges) - 1
    in_bin = int((units == b).sum())
    return {"bin": b, "range": [float(edges[b]), float(edges[b + 1])], "side": _side(b, n_bins),
            "n": in_bin, "prevalence": _ratio(in_bin, int((units >= 0).sum())),
            **confidence(scores[det_bin == b], options)}


def condition_signals(name: str, spec: ConditionSpec, t: WindowTables, ref: ReferenceTables, matches: Any | None,
                      options: ProductionOptions, report_edges: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Per-bin prevalence, confidence and reviewed errors of one condition (module docstring)."""
    head: dict[str, Any] = {"condition": name, "column": spec.column, "level": spec.level}
    values = _unit_values(spec, t, ref.fill_ratio)
    got = _edges(name, spec, ref, report_edges)
    if isinstance(values, str) or isinstance(got, str):
        return {**head, "status": "unavailable", "reason": values if isinstance(values, str) else got}
    img, det_values = values
    edges, edges_from = got
    units, prevalence_source = _prevalence_units(spec, t, img, ref.fill_ratio, options)
    unit_bin, det_bin = assign_bins(units, edges), assign_bins(det_values, edges)
    scores = t.predictions["score"].to_numpy(float)
    bins = [_bin_entry(b, edges, unit_bin, scores, det_bin, options) for b in range(len(edges) - 1)]
    if spec.level == "image":
        frame_bin = assign_bins(img, edges)
        for e in bins:
            e.update(frame_stats(t, frame_bin == e["bin"]))
    if matches is not None:
        gt_bin, pred_bin = _reviewed_bins(spec, t, matches, img, edges, ref.fill_ratio)
        above, tp = matches.preds["above"].to_numpy(bool), matches.preds["tp"].to_numpy(bool)
        detected = matches.gt["detected"].to_numpy(bool)
        for e in bins:
            g, p = gt_bin == e["bin"], pred_bin == e["bin"]
            images = int(matches.gt["image_id"][g].nunique())
            e["reviewed"] = _reviewed_counts(detected[g], p & above & tp, p & above & ~tp, images)
    return {**head, "status": "ok", "edges": [float(x) for x in edges], "edges_from": edges_from,
            "prevalence_source": prevalence_source, "bins": bins}


def slice_signals(scenario: Scenario, t: WindowTables, ref: ReferenceTables, matches: Any | None,
                  options: ProductionOptions,
                  report_edges: dict[str, list[float]] | None = None) -> list[dict[str, Any]]:
    """:func:`condition_signals` for every condition of the scenario."""
    return [condition_signals(name, spec, t, ref, matches, options, report_edges)
            for name, spec in scenario.spec.conditions.items()]


def report_edges(report: dict[str, Any]) -> dict[str, list[float]]:
    """The bin edges of every condition a failure report sliced (``status: ok``)."""
    return {c["name"]: list(c["edges"]) for c in report.get("conditions") or []
            if isinstance(c, dict) and c.get("status") == "ok" and isinstance(c.get("edges"), list)}


# ------------------------------------------------------------------ one window → its signals

SIGNALS_KIND = "synthloop-production-signals"
SIGNALS_VERSION = 1


def _window_block(result: Window | NoData) -> dict[str, Any]:
    block: dict[str, Any] = {"id": result.window_id, "log": str(result.log), "state": str(result.state_path)}
    if isinstance(result, Window):
        stamps = sorted(r.record.timestamp for r in result.records)
        block.update(first_timestamp=stamps[0].isoformat(), last_timestamp=stamps[-1].isoformat(),
                     model_versions=dict(sorted(Counter(r.record.model_version for r in result.records).items())))
    return block


def window_signals(result: Window | NoData, ref: ReferenceTables, scenario: Scenario,
                   options: ProductionOptions | None = None, val_report: dict[str, Any] | None = None,
                   load_image: ImageLoader = load_rgb) -> dict[str, Any]:
    """The signals of one ingest result (see the module docstring).

    ``val_report`` (a real-val ``report.json`` dict), when given, supplies the bin edges so the
    production slices line up with its weak slices; the merge needs that alignment."""
    options = (options or ProductionOptions()).validate()
    head: dict[str, Any] = {
        "schema_version": SIGNALS_VERSION, "kind": SIGNALS_KIND, "window": _window_block(result),
        "counts": dict(result.counts), "malformed": [m.to_dict() for m in result.malformed],
        "notes": list(result.notes), "settings": options.to_dict(),
        "scenario": {"name": scenario.name, "version": scenario.spec.version},
        "reference": {"shards": ref.shards, "fill_ratio": ref.fill_ratio},
    }
    if isinstance(result, NoData):
        return atomic.jsonable({**head, "status": "no_data", "reason": result.reason, "drift": [],
                                "drifted": [], "overall": None, "slices": [], "sliced_with": None})
    t = window_tables(result, scenario.classes, options.score_threshold, load_image)
    matches = reviewed_matches(t, options)
    drift = drift_table(scenario, ref, t, options)
    edges = report_edges(val_report) if val_report is not None else None
    return atomic.jsonable({
        **head, "status": "ok", "drift": drift, "drifted": drifted(drift),
        "overall": overall_signals(t, matches, options),
        "slices": slice_signals(scenario, t, ref, matches, options, edges),
        "sliced_with": _sliced_with(val_report),
    })


def _sliced_with(val_report: dict[str, Any] | None) -> dict[str, Any]:
    if val_report is None:
        return {"edges_from": "reference"}
    return {"edges_from": "real-val report", "report": report_identity(val_report)}
