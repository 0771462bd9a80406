"""Average precision at one IoU threshold, computed exactly like COCOeval, plus a bootstrap.

COCOeval is the reference for the headline numbers (:mod:`evaluator.cocometrics`), but it is
far too slow to rerun for every slice and bootstrap resample. This module recomputes AP from an
already-made matching (:mod:`evaluator.matching`): per class, predictions sorted by score,
cumulative TP/FP, precision made monotone, sampled at COCO's 101 recall points; AP of a set is
the mean over classes that have at least one true object. On the whole data set it equals
COCOeval's AP@0.5 (tested).

Bootstrap over images: each resample weighs every image by how often it was drawn, so one
resample is a weighted cumulative sum, and all resamples of a class are computed as one matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REC_THRS = np.linspace(0.0, 1.0, 101)
_EPS = float(np.spacing(1))


@dataclass(frozen=True)
class APData:
    """What AP needs, for one set of ground truth and predictions over ``n_images`` images.

    ``pred_*`` arrays describe predictions (any score; image index in ``[0, n_images)``,
    ``pred_tp`` = matched to a true object of the set), ``gt_*`` the true objects.
    Predictions matched to objects outside the set must already be left out.
    """

    pred_score: np.ndarray
    pred_tp: np.ndarray
    pred_image: np.ndarray
    pred_class: np.ndarray
    gt_image: np.ndarray
    gt_class: np.ndarray
    n_images: int


def _class_ap(score: np.ndarray, tp: np.ndarray, image: np.ndarray, npos_img: np.ndarray,
              weights: np.ndarray) -> np.ndarray:
    """AP of one class for each row of ``weights`` ``(B, n_images)``; NaN without positives."""
    n_rows = weights.shape[0]
    npos = weights @ npos_img
    out = np.full(n_rows, np.nan)
    has = npos > 0
    if not has.any():
        return out
    if score.size == 0:
        out[has] = 0.0
        return out
    order = np.argsort(-score, kind="mergesort")
    w = weights[:, image[order]]
    t = tp[order]
    tps = np.cumsum(w * t, axis=1)
    fps = np.cumsum(w * ~t, axis=1)
    rc = tps / np.where(has, npos, 1.0)[:, None]
    pr = tps / (tps + fps + _EPS)
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    nd = score.size
    # one searchsorted for all rows: row b lives in [2b, 2b + 1], so the flat array is sorted
    offs = 2.0 * np.arange(n_rows)[:, None]
    flat = np.searchsorted((rc + offs).ravel(), (REC_THRS[None, :] + offs).ravel(), side="left")
    local = flat.reshape(n_rows, -1) - nd * np.arange(n_rows)[:, None]
    valid = local < nd
    q = np.where(valid, np.take_along_axis(pr, np.minimum(local, nd - 1), axis=1), 0.0)
    out[has] = q.mean(axis=1)[has]
    return out


def _weighted_ap(data: APData, weights: np.ndarray) -> np.ndarray:
    """Mean AP over classes with positives, for each row of ``weights``; NaN where none."""
    classes = np.union1d(np.unique(data.gt_class), np.unique(data.pred_class))
    per_class = []
    for c in classes:
        npos_img = np.bincount(data.gt_image[data.gt_class == c], minlength=data.n_images)
        sel = data.pred_class == c
        per_class.append(_class_ap(data.pred_score[sel], data.pred_tp[sel].astype(bool),
                                   data.pred_image[sel], npos_img.astype(float), weights))
    if not per_class:
        return np.full(weights.shape[0], np.nan)
    stacked = np.vstack(per_class)
    counts = np.sum(~np.isnan(stacked), axis=0)
    sums = np.nansum(stacked, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def average_precision(data: APData) -> float | None:
    """COCO-style AP (101-point) at the matching's IoU; None when there are no true objects."""
    value = float(_weighted_ap(data, np.ones((1, data.n_images)))[0])
    return None if np.isnan(value) else value


def bootstrap_ap(data: APData, rng: np.random.Generator, resamples: int = 200,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of :func:`average_precision`, resampling images.

    Returns None when there are no true objects or no resamples were asked for.
    """
    if resamples <= 0 or data.n_images == 0 or data.gt_class.size == 0:
        return None
    draws = rng.integers(0, data.n_images, size=(resamples, data.n_images))
    weights = np.zeros((resamples, data.n_images))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    values = _weighted_ap(data, weights)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
