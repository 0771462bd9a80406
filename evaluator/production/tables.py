"""Condition tables of a production window and of the reference (training) shards.

Production frames carry no metadata, so their conditions are estimated the way the evaluator
estimates them for imported data (:mod:`evaluator.conditions`):

- image conditions (``stat.brightness``, ``stat.contrast``, ``stat.sharpness``, ``stat.noise``,
  ``stat.texture``) from the pixels with :func:`generator.imagestats.image_stats`;
- ``n_objects`` from the count of predictions at or above the operating threshold;
- object conditions that a box determines (``pixel_size`` = √(fill · w · h) with the reference's
  median fill ratio, ``box_size``, ``area``, ``bbox_w``, ``bbox_h``:
  :func:`evaluator.conditions.box_values`) from predicted boxes at or above the operating
  threshold, or from reviewed label boxes.

Conditions that need a mask or generator metadata (stroke width, visibility, …) are not
available for production; :func:`production_values` says so instead of inventing a value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluator.conditions import BOX_ESTIMATORS, STAT_COLUMNS, box_values, condition_tables
from evaluator.production.ingest import Window
from generator import imagestats
from generator.errors import DataError, ShardError
from generator.real.splits import check_split_access
from generator.scenario import ConditionSpec
from generator.shard import Shard

PRED_COLUMNS = ["image_id", "category_id", "score", "x", "y", "w", "h"]
LABEL_COLUMNS = ["ann_id", "image_id", "category_id", "x", "y", "w", "h"]
ImageLoader = Callable[[Path], np.ndarray | None]


def load_rgb(path: Path) -> np.ndarray | None:
    """RGB uint8 pixels of an image file, or None when it cannot be decoded. The file is opened
    without following a final symlink and read up to the frame size cap: a frame checked at
    ingest and swapped for a link (or grown) since is not read."""
    import io
    import os

    from PIL import Image

    from evaluator.production.log import MAX_FRAME_BYTES

    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
            data = fh.read(MAX_FRAME_BYTES + 1)
        if len(data) > MAX_FRAME_BYTES:
            return None
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        return None


@dataclass
class WindowTables:
    """``images``: one row per record (``image_id`` = position in the window, ``key``,
    ``timestamp``, ``model_version``, ``reviewed``, ``readable``, ``stat.*``, ``n_predicted``
    (at or above the threshold), ``max_score`` (highest logged score, 0 without any));
    ``predictions`` (all logged detections) and ``labels`` (reviewed images only): one row per
    box, ``category_id`` 1-based into the classes."""

    images: pd.DataFrame
    predictions: pd.DataFrame
    labels: pd.DataFrame
    classes: list[str] = field(default_factory=list)


def _category(cls: str, classes: list[str], where: str) -> int:
    if cls not in classes:
        raise DataError(f"{where}: class must be one of {classes}, but got {cls!r}; ingest with the "
                        "model's classes so such lines are reported as malformed")
    return classes.index(cls) + 1


def window_tables(window: Window, classes: list[str], score_threshold: float,
                  load_image: ImageLoader = load_rgb) -> WindowTables:
    """Tables of a window's records (pixels are read once per record)."""
    images: list[dict[str, Any]] = []
    preds: list[list[Any]] = []
    labels: list[list[Any]] = []
    for iid, item in enumerate(window.records):
        rec = item.record
        where = f"{item.file}:{item.line}"
        pixels = load_image(item.image_path)
        stats = imagestats.image_stats(pixels) if pixels is not None else {}
        row: dict[str, Any] = {"image_id": iid, "key": rec.key, "file": item.file, "line": item.line,
                               "timestamp": rec.timestamp.isoformat(), "model_version": rec.model_version,
                               "reviewed": rec.reviewed, "readable": pixels is not None}
        row.update({c: stats.get(c.split(".", 1)[1], np.nan) for c in STAT_COLUMNS})
        row["n_predicted"] = sum(p.score >= score_threshold for p in rec.predictions)
        row["max_score"] = max((p.score for p in rec.predictions), default=0.0)
        images.append(row)
        for p in rec.predictions:
            preds.append([iid, _category(p.cls, classes, where), p.score, *p.bbox])
        for lab in rec.labels or []:
            labels.append([len(labels) + 1, iid, _category(lab.cls, classes, where), *lab.bbox])
    return WindowTables(images=pd.DataFrame(images), predictions=pd.DataFrame(preds, columns=PRED_COLUMNS),
                        labels=pd.DataFrame(labels, columns=LABEL_COLUMNS), classes=list(classes))


@dataclass
class ReferenceTables:
    """The reference distribution: condition tables of the given shards, concatenated."""

    images: pd.DataFrame
    objects: pd.DataFrame
    fill_ratio: float
    shards: list[dict[str, Any]]


def reference_tables(paths: Sequence[str | Path]) -> ReferenceTables:
    """Condition tables (:func:`evaluator.conditions.condition_tables`) of every reference shard.
    Refuses a missing shard and the held-out ``real-test`` split."""
    if not paths:
        raise DataError("--reference: at least one shard is needed (the model's training shards)")
    images, objects, info = [], [], []
    for p in paths:
        try:
            shard = Shard(p)
        except ShardError as exc:
            raise DataError(f"--reference: {exc}") from exc
        check_split_access(shard.manifest, "production-reference")
        parquet = shard.conditions() if (shard.path / "conditions.parquet").is_file() else None
        t = condition_tables(shard.coco, parquet, shard.load_image)
        images.append(t.images)
        objects.append(t.objects)
        info.append({"path": str(shard.path), "kind": shard.manifest.get("kind"),
                     "split": shard.manifest.get("split"), "fingerprint": shard.fingerprint,
                     "images": len(t.images), "objects": len(t.objects)})
    objs = pd.concat(objects, ignore_index=True)
    return ReferenceTables(pd.concat(images, ignore_index=True), objs, _fill_ratio(objs), info)


def _fill_ratio(objects: pd.DataFrame) -> float:
    """Median visible area / box area of the reference objects (1 when unknown)."""
    box = objects["bbox_w"] * objects["bbox_h"]
    ok = objects["area"].notna() & (box > 0) & (objects["area"] > 0)
    return float(np.clip(np.median(objects["area"][ok] / box[ok]), 1e-3, 1.0)) if ok.any() else 1.0


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def reference_values(spec: ConditionSpec, ref: ReferenceTables) -> np.ndarray | str:
    """The reference's non-NaN values of a condition, or why there are none."""
    frame = ref.images if spec.level == "image" else ref.objects
    if spec.column not in frame.columns:
        return f"the reference shards have no column {spec.column!r}"
    v = _numeric(frame[spec.column])
    v = v[~np.isnan(v)]
    return v if v.size else f"the reference shards have no numeric {spec.column!r} values"


def box_frame_values(column: str, boxes: pd.DataFrame, fill_ratio: float) -> np.ndarray | None:
    """A box-determined object condition for each row of a predictions/labels frame."""
    return box_values(column, boxes[["x", "y", "w", "h"]].to_numpy(dtype=float), fill_ratio)


def production_values(spec: ConditionSpec, t: WindowTables, fill_ratio: float,
                      score_threshold: float) -> tuple[np.ndarray, str] | str:
    """``(values, source)`` of a condition over the window — one value per readable image
    (image level) or per prediction at or above the threshold (object level) — or the reason
    the condition cannot be estimated from a production log."""
    if spec.level == "image":
        readable = t.images[t.images["readable"]] if len(t.images) else t.images
        if spec.column in STAT_COLUMNS:
            return _numeric(readable[spec.column]), "pixels"
        if spec.column == "n_objects":
            return _numeric(t.images["n_predicted"]), f"predictions with score >= {score_threshold}"
        return f"image column {spec.column!r} needs generator metadata; a production log has only pixels"
    if spec.column in BOX_ESTIMATORS:
        above = t.predictions[t.predictions["score"] >= score_threshold]
        values = box_frame_values(spec.column, above, fill_ratio)
        return np.asarray(values, dtype=float), f"predicted boxes with score >= {score_threshold}"
    return f"object column {spec.column!r} needs a mask; a production log has only boxes"
