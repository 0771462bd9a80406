"""Annotation maths from exact renderer outputs: masks, RLE, boxes, visibility, truncation.

Pure numpy + pycocotools; never imports the renderer, so it is tested with hand-made masks.
Conventions: masks are boolean ``(H, W)``; boxes are COCO ``[x, y, w, h]`` in pixels with
``x, y`` the top-left corner of the top-left pixel, so a single pixel at (r, c) has box
``[c, r, 1, 1]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

Box = list[float]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE (compressed counts as str) of a boolean mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    counts = rle["counts"]
    raw = {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(raw).astype(bool)


def mask_bbox(mask: np.ndarray) -> Box:
    """Tight box of the True pixels; ``[0, 0, 0, 0]`` for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    y0, y1 = int(rows[0]), int(rows[-1])
    x0, x1 = int(cols[0]), int(cols[-1])
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


def visibility(visible: np.ndarray, amodal: np.ndarray) -> float:
    """Visible ÷ unoccluded pixels (both inside the image); 0 when the object is off-screen."""
    full = int(amodal.sum())
    if full == 0:
        return 0.0
    return float(np.logical_and(visible, amodal).sum()) / full


def project_points(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project camera-frame points (OpenCV convention: +z forward) to pixel coordinates."""
    z = np.clip(points_cam[:, 2:3], 1e-9, None)
    uv = (points_cam[:, :2] / z) @ K[:2, :2].T + K[:2, 2]
    return uv


def truncation(points_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> float:
    """Share of the object's projected extent (box of projected vertices) outside the image."""
    uv = project_points(points_cam, K)
    x0, y0 = uv.min(axis=0)
    x1, y1 = uv.max(axis=0)
    full = max(x1 - x0, 1e-9) * max(y1 - y0, 1e-9)
    ix = max(0.0, min(x1, width) - max(x0, 0.0))
    iy = max(0.0, min(y1, height) - max(y0, 0.0))
    return float(np.clip(1.0 - (ix * iy) / full, 0.0, 1.0))


def gl_to_cv_pose(pose_gl_cam_obj: np.ndarray) -> np.ndarray:
    """Object-to-camera pose from OpenGL camera axes (-z forward, +y up) to OpenCV (+z, +y down)."""
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    return flip @ pose_gl_cam_obj


def depth_to_png_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres (0 = no surface) to uint16 millimetres, saturating at 65.535 m."""
    mm = np.rint(np.nan_to_num(depth_m, nan=0.0) * 1000.0)
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def semantic_mask(instance_ids: np.ndarray, category_of_instance: dict[int, int]) -> np.ndarray:
    """Per-pixel category id (0 = background or unlabelled) from per-pixel instance ids."""
    lut = np.zeros(int(instance_ids.max(initial=0)) + 1, dtype=np.uint8)
    for inst, cat in category_of_instance.items():
        if inst < lut.size:
            lut[inst] = cat
    return lut[instance_ids]


def keypoints(points_obj: np.ndarray, obj_to_cam: np.ndarray, K: np.ndarray, depth: np.ndarray,
              tolerance: float = 0.02) -> np.ndarray:
    """COCO keypoints ``(K, 3)`` rows ``(x, y, v)`` of object-frame points seen through ``K``.

    ``v = 2``: inside the image and not hidden (the rendered depth at its pixel is not nearer
    than the point by more than ``tolerance`` of its depth, or nothing is there); ``v = 1``:
    inside the image but behind a surface (another object or the object itself); ``v = 0``:
    outside the image or behind the camera, with ``x = y = 0`` as COCO asks. ``x, y`` are
    continuous pixel coordinates (pixel centres at ``.5``)."""
    pts = (np.c_[points_obj, np.ones(len(points_obj))] @ np.asarray(obj_to_cam, float).T)[:, :3]
    uv = project_points(pts, K)
    h, w = depth.shape
    out = np.zeros((len(pts), 3))
    for k, ((x, y), z) in enumerate(zip(uv, pts[:, 2], strict=True)):
        if z <= 0 or not (0 <= x < w and 0 <= y < h):
            continue
        d = float(depth[int(y), int(x)])
        hidden = 0 < d < z * (1 - tolerance)
        out[k] = (x, y, 1 if hidden else 2)
    return out
