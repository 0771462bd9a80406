"""Match predictions to true objects: per image and class, greedily by score, COCO-style.

Predictions are processed from the highest score down; each takes the unmatched true object
of its image and class with the highest IoU, if that IoU is at least ``iou``. Because the
greedy order is by score, the matches of the predictions above any score threshold are exactly
what the same greedy pass would give on those predictions alone, so one pass serves both AP
(all scores) and the operating point (scores >= ``score_threshold``):

- a true object is *detected* when its matched prediction scores >= ``score_threshold``;
- a prediction at or above the threshold is a TP when matched, else an FP.

Like COCOeval, at most ``max_dets`` predictions per image and class are kept (highest scores).
Crowd annotations (``iscrowd: 1``) are treated as ordinary objects; synthloop never writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from generator.errors import DataError, is_number

MAX_DETS = 100


@dataclass
class Matches:
    """``gt``: one row per true object (``ann_id, image_id, category_id, pred, score, iou,
    detected``); ``preds``: one row per kept prediction (``pred, image_id, category_id, score,
    x, y, w, h, ann_id, tp, above``). ``pred``/``ann_id`` are -1 when unmatched; ``tp`` is
    "matched at any score", ``above`` is "score >= score_threshold"."""

    gt: pd.DataFrame
    preds: pd.DataFrame
    iou: float
    score_threshold: float
    dropped: int  # predictions beyond max_dets per image and class


def _finite(values: Any, n: int) -> bool:
    if not isinstance(values, list | tuple) or len(values) != n:
        return False
    return all(is_number(v)
               for v in values)


def validate_predictions(predictions: Any, image_ids: set[int], category_ids: set[int]) -> None:
    """Raise :class:`DataError` naming the first malformed prediction (field, rule, value)."""
    if not isinstance(predictions, list):
        raise DataError("predictions: must be a COCO results list, "
                        f"but got {type(predictions).__name__}")
    for i, p in enumerate(predictions):
        where = f"predictions[{i}]"
        if not isinstance(p, dict):
            raise DataError(f"{where}: must be an object with image_id, category_id, bbox, "
                            f"score, but got {p!r}")
        if p.get("image_id") not in image_ids:
            raise DataError(f"{where}.image_id: must be an image id of the shard, "
                            f"but got {p.get('image_id')!r}")
        if p.get("category_id") not in category_ids:
            raise DataError(f"{where}.category_id: must be one of {sorted(category_ids)} "
                            f"(1-based class index), but got {p.get('category_id')!r}")
        bbox: Any = p.get("bbox")
        if not _finite(bbox, 4) or bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{where}.bbox: must be 4 finite numbers [x, y, w, h] with "
                            f"w, h >= 0, but got {bbox!r}")
        if not _finite([p.get("score")], 1):
            raise DataError(f"{where}.score: must be a finite number, but got {p.get('score')!r}")


def _iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if dt.size == 0 or gt.size == 0:
        return np.zeros((len(dt), len(gt)))
    return np.asarray(mask_utils.iou(dt, gt, [0] * len(gt)), dtype=float).reshape(len(dt), len(gt))


def _greedy(ious: np.ndarray, thr: float) -> list[int]:
    """For each prediction row (already sorted by score), the matched GT column or -1."""
    taken = np.zeros(ious.shape[1], dtype=bool)
    out = []
    for row in ious:
        cand = np.where(~taken & (row >= thr), row, -1.0)
        j = int(np.argmax(cand)) if cand.size else -1
        if j >= 0 and cand[j] >= 0:
            taken[j] = True
            out.append(j)
        else:
            out.append(-1)
    return out


def _group(items: list[dict[str, Any]]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((int(it["image_id"]), int(it["category_id"])), []).append(i)
    return groups


def _match_group(key: tuple[int, int], idx: list[int], predictions: list[dict[str, Any]],
                 anns: list[dict[str, Any]], g_idx: list[int], iou: float,
                 rows: list[dict[str, Any]], gt_pred: np.ndarray, gt_iou: np.ndarray) -> None:
    """Match one image/class group; append prediction rows and record matches on the GT."""
    dt_boxes = np.array([predictions[i]["bbox"] for i in idx], dtype=float).reshape(-1, 4)
    gt_boxes = np.array([anns[j]["bbox"] for j in g_idx], dtype=float).reshape(-1, 4)
    ious = _iou(dt_boxes, gt_boxes)
    for r, (i, col) in enumerate(zip(idx, _greedy(ious, iou), strict=True)):
        ann_id = -1
        if col >= 0:
            j = g_idx[col]
            ann_id = int(anns[j]["id"])
            gt_pred[j], gt_iou[j] = len(rows), ious[r, col]
        x, y, w, h = (float(v) for v in predictions[i]["bbox"])
        rows.append({"pred": len(rows), "image_id": key[0], "category_id": key[1],
                     "score": float(predictions[i]["score"]), "x": x, "y": y, "w": w, "h": h,
                     "ann_id": ann_id, "tp": col >= 0})


def match_predictions(gt: dict[str, Any], predictions: list[dict[str, Any]], iou: float = 0.5,
                      score_threshold: float = 0.3, max_dets: int = MAX_DETS) -> Matches:
    """Match a COCO results list against a COCO ground truth (see module docstring)."""
    anns = gt["annotations"]
    gt_groups = _group(anns)
    gt_pred = np.full(len(anns), -1)
    gt_iou = np.full(len(anns), np.nan)
    rows: list[dict[str, Any]] = []
    dropped = 0
    for key, idx in sorted(_group(predictions).items()):
        idx = sorted(idx, key=lambda i: -float(predictions[i]["score"]))  # stable: ties keep order
        dropped += max(0, len(idx) - max_dets)
        _match_group(key, idx[:max_dets], predictions, anns, gt_groups.get(key, []), iou,
                     rows, gt_pred, gt_iou)
    preds = pd.DataFrame(rows, columns=["pred", "image_id", "category_id", "score", "x", "y", "w",
                                        "h", "ann_id", "tp"])
    preds["tp"] = preds["tp"].astype(bool)
    preds["above"] = preds["score"] >= score_threshold
    scores = np.full(len(anns), np.nan)
    hit = gt_pred >= 0
    scores[hit] = preds["score"].to_numpy()[gt_pred[hit]]
    gt_df = pd.DataFrame({
        "ann_id": [int(a["id"]) for a in anns], "image_id": [int(a["image_id"]) for a in anns],
        "category_id": [int(a["category_id"]) for a in anns], "pred": gt_pred,
        "score": scores, "iou": gt_iou,
    })
    gt_df["detected"] = gt_df["score"].fillna(-np.inf) >= score_threshold
    return Matches(gt=gt_df, preds=preds, iou=iou, score_threshold=score_threshold, dropped=dropped)
