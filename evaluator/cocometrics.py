"""COCO detection metrics through pycocotools' ``COCOeval`` (the reference implementation).

:func:`coco_metrics` takes the ground truth as a COCO dict and the predictions as a COCO
*results* list (``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, optionally
``"segmentation"`` as RLE) and returns box mAP@[.5:.95], mAP@0.5, mAP@0.75 and per-class
AP@0.5; mask metrics are added when predictions carry ``segmentation`` and the ground truth has
masks. COCOeval's console output is captured, empty predictions give 0 (not a crash), and a
class without any true object gets ``None`` (COCO leaves it out of the mean).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np

BoxMetrics = dict[str, Any]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No console output from pycocotools: stdout is redirected and its modules' ``print`` is
    shadowed too (an orchestrator that turns prints into log records, such as Prefect's
    ``log_prints``, would otherwise log every line of COCOeval's summary)."""
    import pycocotools.coco
    import pycocotools.cocoeval

    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        for module in (pycocotools.coco, pycocotools.cocoeval):
            stack.enter_context(mock.patch.object(module, "print", lambda *a, **k: None, create=True))
        yield


def _gt_api(gt: dict[str, Any]) -> Any:
    """A ``pycocotools.coco.COCO`` built from a dict, with ``iscrowd``/``area`` filled in."""
    from pycocotools.coco import COCO

    data = {
        "info": gt.get("info", {}),
        "images": [{"id": i["id"], "width": i.get("width"), "height": i.get("height"),
                    "file_name": i.get("file_name", "")} for i in gt["images"]],
        "categories": copy.deepcopy(gt["categories"]),
        "annotations": [],
    }
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        ann = {"id": a["id"], "image_id": a["image_id"], "category_id": a["category_id"],
               "bbox": [x, y, w, h], "iscrowd": int(a.get("iscrowd", 0)),
               "area": float(a.get("area") or w * h)}
        if "segmentation" in a:
            ann["segmentation"] = a["segmentation"]
        data["annotations"].append(ann)
    api = COCO()
    api.dataset = data
    with _quiet():
        api.createIndex()
    return api


def _empty(gt: dict[str, Any]) -> BoxMetrics:
    with_gt = {a["category_id"] for a in gt["annotations"]}
    none_gt = not with_gt
    per_class = {int(c["id"]): (0.0 if c["id"] in with_gt else None) for c in gt["categories"]}
    value = None if none_gt else 0.0
    return {"map": value, "map50": value, "map75": value, "per_class_ap50": per_class}


def _stat(x: float) -> float | None:
    return None if x < 0 else float(x)


def _run(api: Any, results: list[dict[str, Any]], iou_type: str) -> BoxMetrics:
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        dt = api.loadRes(copy.deepcopy(results))
        ev = COCOeval(api, dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision[T, R, K, A, M]: T=0 is IoU 0.5, A=0 all areas, M=-1 is 100 detections
    precision = ev.eval["precision"]
    per_class: dict[int, float | None] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[0, :, k, 0, -1]
        per_class[int(cat_id)] = float(np.mean(p[p > -1])) if (p > -1).any() else None
    return {"map": _stat(ev.stats[0]), "map50": _stat(ev.stats[1]), "map75": _stat(ev.stats[2]),
            "per_class_ap50": per_class}


def coco_metrics(gt: dict[str, Any], predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"bbox": {...}, "segm": {...} | None}`` for a COCO ground truth and results list.

    Each block holds ``map`` (mAP@[.5:.95]), ``map50``, ``map75`` and ``per_class_ap50``
    (category id → AP@0.5 or None). Values are None when the ground truth has no objects.
    Predictions must already be valid (see :func:`evaluator.matching.validate_predictions`).
    """
    api = _gt_api(gt)
    bbox = _run(api, predictions, "bbox") if predictions else _empty(gt)
    segm = None
    with_masks = [p for p in predictions if "segmentation" in p]
    gt_masks = bool(gt["annotations"]) and all("segmentation" in a for a in gt["annotations"])
    if with_masks and gt_masks:
        segm = _run(api, [{k: v for k, v in p.items() if k != "bbox"} for p in with_masks], "segm")
    return {"bbox": bbox, "segm": segm}
