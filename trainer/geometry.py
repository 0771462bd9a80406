"""Letterboxing: fit any image into the model's square input and map boxes both ways.

An image of ``w × h`` pixels is resized by ``s = size / max(w, h)`` (aspect kept, bilinear) and
pasted at the top-left of a ``size × size`` black canvas. Because the padding sits right and
bottom, a point maps as ``x_in = x * sx`` and back as ``x = x_in / sx`` (``sx = new_w / w``,
exact after rounding the new size). Boxes here are COCO ``[x, y, w, h]`` in image pixels or
``x1, y1, x2, y2`` in input pixels (what models consume).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from generator.errors import DataError


def as_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return ``image`` as uint8 ``(H, W, 3)``; grey and RGBA are converted, others refused."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise DataError(f"{what}: pixels must be uint8 RGB, but got dtype {arr.dtype}; "
                        "convert with np.clip(x, 0, 255).astype(np.uint8)")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise DataError(f"{what}: must have shape (H, W, 3), but got {arr.shape}; pass RGB images")
    return np.ascontiguousarray(arr[:, :, :3])


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    """Fit ``image`` (uint8 RGB) into ``size × size``; return ``(canvas, sx, sy)``."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) == (w, h):
        resized = image
    else:
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    if (nw, nh) == (size, size):
        return np.ascontiguousarray(resized), nw / w, nh / h
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, nw / w, nh / h


def xywh_to_input(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """COCO boxes ``(n, 4)`` in image pixels → ``x1, y1, x2, y2`` in letterboxed input pixels."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] * sx
    out[:, 1] = b[:, 1] * sy
    out[:, 2] = (b[:, 0] + b[:, 2]) * sx
    out[:, 3] = (b[:, 1] + b[:, 3]) * sy
    return out


def input_to_xywh(boxes: np.ndarray, sx: float, sy: float, width: int, height: int) -> np.ndarray:
    """``x1, y1, x2, y2`` in input pixels → COCO boxes in image pixels, clipped to the image."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.clip(b[:, 0] / sx, 0, width)
    y1 = np.clip(b[:, 1] / sy, 0, height)
    x2 = np.clip(b[:, 2] / sx, 0, width)
    y2 = np.clip(b[:, 3] / sy, 0, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
