"""Evaluate predictions on a shard: the library entry point behind ``synthloop evaluate``.

Predictions are data (a COCO results list), so this runs and tests without any model::

    from evaluator import EvalOptions, evaluate, write_report
    ev = evaluate(Shard("runs/real-val"), predictions, load_scenario("digits"))
    write_report(ev, Shard("runs/real-val"), "runs/report")

Steps: refuse unusable input (:mod:`evaluator.checks`), COCO metrics through COCOeval
(:mod:`evaluator.cocometrics`), greedy matching at ``iou`` (:mod:`evaluator.matching`),
condition tables from metadata or pixels (:mod:`evaluator.conditions`), slices and weak slices
(:mod:`evaluator.slices`), and the report dict whose schema docs/failure-report.md documents.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evaluator.ap import average_precision, bootstrap_ap
from evaluator.checks import REPORT_KIND, check_shard, manifest_scenario
from evaluator.cocometrics import coco_metrics
from evaluator.conditions import ConditionTables, condition_tables
from evaluator.matching import Matches, match_predictions, validate_predictions
from evaluator.slices import SliceOptions, ap_data, condition_slices, weak_slices
from evaluator.stats import wilson_interval
from generator import atomic
from generator.errors import field_error, is_int
from generator.scenario import Scenario
from generator.shard import Shard

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class EvalOptions:
    """Operating point and statistics settings (CLI flags in brackets)."""

    iou: float = 0.5  # [--iou] IoU a prediction needs to match a true object
    score_threshold: float = 0.3  # [--score-threshold] operating point for recall/precision
    min_support: int = 20  # [--min-support] objects a slice needs before it gets an AP
    resamples: int = 200  # [--resamples] bootstrap resamples for AP intervals (0 = none)
    seed: int = 0  # [--seed] seeds the bootstrap's numpy Generator
    gallery_size: int = 12  # [--gallery-size] worst images drawn in gallery.png

    def validate(self) -> EvalOptions:
        if not (isinstance(self.iou, float | int) and 0.0 < self.iou <= 1.0):
            raise field_error("--iou", "must be a number in (0, 1]", self.iou,
                              "the COCO default is 0.5")
        thr = self.score_threshold
        if not (isinstance(thr, float | int) and 0.0 <= thr <= 1.0):
            raise field_error("--score-threshold", "must be a number in [0, 1]", thr)
        for name, value, low in (("--min-support", self.min_support, 1),
                                 ("--resamples", self.resamples, 0), ("--seed", self.seed, 0),
                                 ("--gallery-size", self.gallery_size, 0)):
            if not is_int(value) or value < low:
                raise field_error(name, f"must be an integer >= {low}", value)
        return self


@dataclass
class Evaluation:
    """The report dict plus the tables it was computed from (for notebooks and the gallery)."""

    report: dict[str, Any]
    tables: ConditionTables
    matches: Matches
    slices: list[dict[str, Any]] = field(default_factory=list)


def _ratio(k: int, n: int) -> float | None:
    return k / n if n else None


def _overall(metrics: dict[str, Any], matches: Matches, image_ids: list[int],
             options: EvalOptions, rng: np.random.Generator) -> dict[str, Any]:
    gt, preds = matches.gt, matches.preds
    n, k = len(gt), int(gt["detected"].sum())
    above, tp = preds["above"].to_numpy(bool), preds["tp"].to_numpy(bool)
    n_tp, n_fp = int((above & tp).sum()), int((above & ~tp).sum())
    data = ap_data(matches, image_ids)
    ci = bootstrap_ap(data, rng, options.resamples)
    bbox, segm = metrics["bbox"], metrics["segm"]
    return {
        "map": bbox["map"], "map50": bbox["map50"], "map75": bbox["map75"],
        "segm": None if segm is None else {k2: segm[k2] for k2 in ("map", "map50", "map75")},
        "recall": _ratio(k, n), "recall_ci": list(wilson_interval(k, n)) if n else None,
        "precision": _ratio(n_tp, n_tp + n_fp), "ap": average_precision(data),
        "ap_ci": list(ci) if ci else None, "n_objects": n, "detected": k, "tp": n_tp,
        "fp": n_fp, "fn": n - k,
    }


def _per_class(coco: dict[str, Any], metrics: dict[str, Any],
               matches: Matches) -> list[dict[str, Any]]:
    gt, preds = matches.gt, matches.preds
    segm = metrics["segm"]
    out = []
    for cat in coco["categories"]:
        cid = int(cat["id"])
        g = gt[gt["category_id"] == cid]
        p = preds[(preds["category_id"] == cid) & preds["above"]]
        n, k = len(g), int(g["detected"].sum())
        n_tp, n_fp = int(p["tp"].sum()), int((~p["tp"]).sum())
        out.append({
            "category_id": cid, "class": cat["name"],
            "ap50": metrics["bbox"]["per_class_ap50"].get(cid),
            "segm_ap50": None if segm is None else segm["per_class_ap50"].get(cid),
            "n_objects": n, "detected": k, "recall": _ratio(k, n),
            "recall_ci": list(wilson_interval(k, n)) if n else None,
            "tp": n_tp, "fp": n_fp, "precision": _ratio(n_tp, n_tp + n_fp),
        })
    return out


def worst_images(matches: Matches, coco: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Images with the most missed objects + false positives (at the operating point)."""
    gt, preds = matches.gt, matches.preds
    missed = gt[~gt["detected"]].groupby("image_id").size()
    fps = preds[preds["above"] & ~preds["tp"]].groupby("image_id").size()
    rows = []
    for img in coco["images"]:
        iid = int(img["id"])
        m, f = int(missed.get(iid, 0)), int(fps.get(iid, 0))
        if m + f:
            rows.append({"image_id": iid, "file_name": img.get("file_name", ""),
                         "missed": m, "fp": f})
    rows.sort(key=lambda r: (-(r["missed"] + r["fp"]), r["image_id"]))
    return rows[:n]


def _data_block(shard: Shard) -> dict[str, Any]:
    m = shard.manifest
    return {"path": str(shard.path), "name": m.get("name"), "kind": m.get("kind"),
            "split": m.get("split"), "fingerprint": m.get("fingerprint"),
            "scenario": manifest_scenario(m), "counts": m.get("counts")}


def _report(shard: Shard, scenario: Scenario, options: EvalOptions, metrics: dict[str, Any],
            matches: Matches, tables: ConditionTables, model: dict[str, Any] | None,
            final_report: bool) -> dict[str, Any]:
    coco = shard.coco
    rng = np.random.default_rng(options.seed)
    image_ids = [int(i["id"]) for i in coco["images"]]
    overall = _overall(metrics, matches, image_ids, options, rng)
    conditions, slices = condition_slices(
        scenario, tables, matches, SliceOptions(options.min_support, options.resamples), rng)
    return {
        "schema_version": SCHEMA_VERSION, "kind": REPORT_KIND, "final_report": final_report,
        "model": model or {}, "data": _data_block(shard),
        "scenario": {"name": scenario.name, "version": scenario.spec.version,
                     "spec_sha256": scenario.spec_hash()},
        "settings": {**asdict(options), "max_dets": 100},
        "overall": overall, "per_class": _per_class(coco, metrics, matches),
        "conditions": conditions, "slices": slices,
        "weak_slices": weak_slices(slices, scenario, overall["recall"] or 0.0),
        "counts": {
            "images": len(coco["images"]), "objects": len(matches.gt),
            "images_without_objects": int((tables.images["n_objects"] == 0).sum()),
            "predictions": len(matches.preds) + matches.dropped,
            "predictions_above_threshold": int(matches.preds["above"].sum()),
            "predictions_dropped": matches.dropped,
        },
        "gallery": {"file": "gallery.png",
                    "images": worst_images(matches, coco, options.gallery_size)},
    }


def evaluate(shard: Shard, predictions: list[dict[str, Any]], scenario: Scenario,
             options: EvalOptions | None = None, model: dict[str, Any] | None = None,
             final_report: bool = False) -> Evaluation:
    """Measure ``predictions`` (COCO results list) against ``shard`` and find weak slices.

    ``model`` is an identity block copied into the report (path, sha256, classes, scenario…).
    Raises :class:`generator.errors.DataError` for an empty shard, malformed predictions, or
    the ``real-test`` split without ``final_report=True``.
    """
    options = (options or EvalOptions()).validate()
    check_shard(shard, final_report)
    coco = shard.coco
    validate_predictions(predictions, {int(i["id"]) for i in coco["images"]},
                         {int(c["id"]) for c in coco["categories"]})
    metrics = coco_metrics(coco, predictions)
    matches = match_predictions(coco, predictions, options.iou, options.score_threshold)
    parquet = shard.conditions() if (shard.path / "conditions.parquet").is_file() else None
    tables = condition_tables(coco, parquet, shard.load_image)
    report = _report(shard, scenario, options, metrics, matches, tables, model, final_report)
    report = atomic.jsonable(report)
    return Evaluation(report=report, tables=tables, matches=matches, slices=report["slices"])
