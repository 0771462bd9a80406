"""Conditions per image and per object: the values the evaluator slices on.

:func:`condition_tables` returns two tables, from metadata where the shard has it and from
pixels and boxes where it does not (imported COCO, production windows):

- ``images``: one row per image — ``image_id, file_name, width, height, n_objects``,
  ``stat.<name>`` (brightness, contrast, sharpness, noise, texture: :mod:`generator.imagestats`)
  and ``param.<name>`` (the image's sampled parameters, when it has any);
- ``objects``: one row per annotation — ``ann_id, image_id, category_id, bbox_x/y/w/h, area,
  pixel_size`` (√area, else √(w·h) of the box), ``box_size``, ``visibility``, ``truncation``,
  ``object_contrast``, ``stroke_width``, ``slant`` (from the mask when metadata lacks them),
  ``obj.<name>`` attributes, plus every image column repeated (as in conditions.parquet).

Precedence: COCO extra fields, then ``conditions.parquet`` columns the COCO file lacks, then
estimates. ``sources`` says per column whether values came from ``metadata``, were
``estimated``, are ``mixed``, or are ``missing``. :func:`box_values` estimates an object
condition for a *predicted* box (used to bin false positives).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from generator import imagestats

IMAGE_STATS = ("brightness", "contrast", "sharpness", "noise", "texture")
STAT_COLUMNS = tuple(f"stat.{s}" for s in IMAGE_STATS)
MASK_COLUMNS = ("object_contrast", "stroke_width", "slant")
OBJECT_FIELDS = ("visibility", "truncation", *MASK_COLUMNS)
ImageLoader = Callable[[dict[str, Any]], np.ndarray]


@dataclass
class ConditionTables:
    objects: pd.DataFrame
    images: pd.DataFrame
    sources: dict[str, str] = field(default_factory=dict)
    fill_ratio: float = 1.0  # median visible area / box area of true objects

    def image_columns(self) -> list[str]:
        return [c for c in self.images.columns if c not in ("file_name", "width", "height")]


def _scalar(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v


def _image_frame(coco: dict[str, Any]) -> pd.DataFrame:
    counts: dict[int, int] = {}
    for a in coco["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    rows = []
    for img in coco["images"]:
        row = {"image_id": int(img["id"]), "file_name": img.get("file_name", ""),
               "width": img.get("width"), "height": img.get("height"),
               "n_objects": counts.get(img["id"], 0)}
        row.update({f"stat.{k}": v for k, v in (img.get("stats") or {}).items()})
        row.update({f"param.{k}": _scalar(v) for k, v in (img.get("conditions") or {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else ["image_id", "file_name", "width",
                                                          "height", "n_objects"])
    for col in STAT_COLUMNS:
        if col not in frame:
            frame[col] = np.nan
    return frame


def _object_frame(coco: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for a in coco["annotations"]:
        x, y, w, h = (float(v) for v in a["bbox"])
        area = a.get("area")
        row = {"ann_id": int(a["id"]), "image_id": int(a["image_id"]),
               "category_id": int(a["category_id"]), "bbox_x": x, "bbox_y": y, "bbox_w": w,
               "bbox_h": h, "area": float(area) if area else np.nan,
               "pixel_size": float(np.sqrt(area)) if area else np.nan, "box_size": max(w, h)}
        row.update({k: a.get(k, np.nan) for k in OBJECT_FIELDS})
        row.update({f"obj.{k}": _scalar(v) for k, v in (a.get("attributes") or {}).items()})
        rows.append(row)
    cols = ["ann_id", "image_id", "category_id", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area",
            "pixel_size", "box_size", *OBJECT_FIELDS]
    frame = pd.DataFrame(rows, columns=None if rows else cols)
    for col in OBJECT_FIELDS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def _fill(frame: pd.DataFrame, key: str, source: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Fill ``frame``'s NaNs (and add absent columns) from ``source`` rows matched on ``key``."""
    lookup = source.drop_duplicates(key).set_index(key)
    frame = frame.copy()
    for col in columns:
        values = frame[key].map(lookup[col])
        frame[col] = frame[col].where(frame[col].notna(), values) if col in frame else values
    return frame


def _merge_parquet(images: pd.DataFrame, objects: pd.DataFrame,
                   conditions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill in from conditions.parquet what annotations.json lacks (image and object columns
    are told apart the way the shard writer lays them out)."""
    img_cols = [c for c in conditions.columns if c.startswith(("stat.", "param."))]
    if img_cols and "image_id" in conditions:
        images = _fill(images, "image_id", conditions, img_cols)
    skip = {"image_id", "file_name", "n_objects", "category", "ann_id", *img_cols}
    obj_cols = [c for c in conditions.columns if c not in skip]
    if obj_cols and "ann_id" in conditions:
        rows = conditions[conditions["ann_id"].notna()].copy()
        rows["ann_id"] = rows["ann_id"].astype(int)
        objects = _fill(objects, "ann_id", rows, obj_cols)
    return images, objects


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Boolean mask from COCO RLE (compressed or not) or polygons."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return np.asarray(mask_utils.decode(rle), dtype=bool)


def _mask_values(mask: np.ndarray, image: np.ndarray | None) -> dict[str, float]:
    out = {"stroke_width": imagestats.stroke_width(mask), "slant": imagestats.slant(mask)}
    if image is not None:
        out["object_contrast"] = imagestats.object_contrast(image, mask)
    return out


def _fill_from_pixels(coco: dict[str, Any], images: pd.DataFrame, objects: pd.DataFrame,
                      load_image: ImageLoader | None) -> None:
    """Estimate missing image stats and mask-derived object values in place."""
    need_stats = set(images.loc[images[list(STAT_COLUMNS)].isna().any(axis=1), "image_id"])
    need_obj = objects[list(MASK_COLUMNS)].isna().any(axis=1)
    obj_rows = {int(a): i for i, a in zip(objects.index[need_obj], objects["ann_id"][need_obj],
                                          strict=True)}
    anns_by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        if int(a["id"]) in obj_rows and "segmentation" in a:
            anns_by_image.setdefault(int(a["image_id"]), []).append(a)
    img_row = {int(i): r for r, i in zip(images.index, images["image_id"], strict=True)}
    for img in coco["images"]:
        iid = int(img["id"])
        if iid not in need_stats and iid not in anns_by_image:
            continue
        pixels = load_image(img) if load_image is not None else None
        if pixels is not None and iid in need_stats:
            for k, v in imagestats.image_stats(pixels).items():
                if pd.isna(images.at[img_row[iid], f"stat.{k}"]):
                    images.at[img_row[iid], f"stat.{k}"] = v
        h, w = (pixels.shape[:2] if pixels is not None else (img.get("height"), img.get("width")))
        for a in anns_by_image.get(iid, []):
            r = obj_rows[int(a["id"])]
            for k, v in _mask_values(decode_mask(a["segmentation"], h, w), pixels).items():
                if pd.isna(objects.at[r, k]):
                    objects.at[r, k] = v


def _source(before: pd.Series, after: pd.Series) -> str:
    if after.isna().all():
        return "missing"
    if before.notna().sum() == after.notna().sum():
        return "metadata"
    return "estimated" if before.isna().all() else "mixed"


def condition_tables(coco: dict[str, Any], conditions: pd.DataFrame | None = None,
                     load_image: ImageLoader | None = None) -> ConditionTables:
    """Per-object and per-image condition tables (see the module docstring).

    ``conditions`` is the shard's conditions.parquet frame, if any; ``load_image(coco_image)``
    returns its pixels (e.g. ``Shard.load_image``) and is only called for images that need
    estimates. Without it, image stats missing from metadata stay NaN.
    """
    images, objects = _image_frame(coco), _object_frame(coco)
    if conditions is not None and len(conditions):
        images, objects = _merge_parquet(images, objects, conditions)
    before_i, before_o = images.copy(), objects.copy()
    from_box = objects["pixel_size"].isna()
    objects.loc[from_box, "pixel_size"] = np.sqrt(objects["bbox_w"] * objects["bbox_h"])[from_box]
    _fill_from_pixels(coco, images, objects, load_image)
    sources = {c: _source(before_i[c], images[c]) for c in STAT_COLUMNS}
    sources.update({c: _source(before_o[c], objects[c]) for c in ("pixel_size", *OBJECT_FIELDS)})
    sources["n_objects"] = "metadata"
    image_cols = [c for c in images.columns if c not in ("file_name", "width", "height")]
    objects = objects.merge(images[image_cols], on="image_id", how="left")
    return ConditionTables(objects=objects, images=images, sources=sources,
                           fill_ratio=_fill_ratio(objects))


def _fill_ratio(objects: pd.DataFrame) -> float:
    box = objects["bbox_w"] * objects["bbox_h"]
    ok = objects["area"].notna() & (box > 0) & (objects["area"] > 0)
    if not ok.any():
        return 1.0
    return float(np.clip(np.median(objects["area"][ok] / box[ok]), 1e-3, 1.0))


BOX_ESTIMATORS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "pixel_size": lambda b, f: np.sqrt(f * b[:, 2] * b[:, 3]),
    "area": lambda b, f: f * b[:, 2] * b[:, 3],
    "box_size": lambda b, f: np.maximum(b[:, 2], b[:, 3]),
    "bbox_w": lambda b, f: b[:, 2],
    "bbox_h": lambda b, f: b[:, 3],
}


def box_values(column: str, boxes: np.ndarray, fill_ratio: float) -> np.ndarray | None:
    """An object condition estimated from predicted ``[x, y, w, h]`` boxes, or None when the
    condition cannot be read off a box (e.g. stroke width needs a mask).

    ``pixel_size`` of a box is √(fill_ratio · w · h): true objects fill only part of their box,
    and the shard's median fill ratio keeps predicted and true sizes on the same scale."""
    fn = BOX_ESTIMATORS.get(column)
    return None if fn is None else fn(np.asarray(boxes, dtype=float).reshape(-1, 4), fill_ratio)
