"""Sensor effects applied to the rendered colour image (annotations stay exact geometry).

Order follows a camera pipeline: optics (Gaussian blur, motion blur) → exposure → noise →
gamma → JPEG. Parameters are read from the image's sampled ``sensor.*`` values; a scenario
without them gets the image back unchanged.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    n = max(1, int(np.ceil(length)))
    size = 2 * n + 1
    k = np.zeros((size, size))
    t = np.linspace(-length / 2, length / 2, 4 * size)
    a = np.radians(angle_deg)
    xs = np.clip(np.round(n + t * np.cos(a)).astype(int), 0, size - 1)
    ys = np.clip(np.round(n + t * np.sin(a)).astype(int), 0, size - 1)
    k[ys, xs] = 1.0
    return k / k.sum()


def apply(color: np.ndarray, values: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    # in place on one float64 buffer; the same operations, in the same order, as
    # blur -> motion -> `img * 2**exposure` -> `img + rng.normal(0, s, shape)` -> `clip ** gamma`
    img = color.astype(np.float64) / 255.0
    sigma = float(values.get("sensor.blur", 0.0))
    if sigma > 0.05:
        img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
    length = float(values.get("sensor.motion_blur", 0.0))
    if length >= 1.0:
        k = motion_kernel(length, float(rng.uniform(0, 180)))
        planes = np.ascontiguousarray(np.moveaxis(img, -1, 0))  # one contiguous plane per channel
        for c in range(3):
            img[..., c] = ndimage.convolve(planes[c], k, mode="nearest")
    img *= 2.0 ** float(values.get("sensor.exposure", 0.0))
    noise = float(values.get("sensor.noise", 0.0))
    if noise > 0:
        # Generator.normal(0, s) draws 0 + s * standard_normal from the same stream
        z = rng.standard_normal(img.shape)
        z *= noise / 255.0
        img += z
    np.clip(img, 0.0, 1.0, out=img)
    img **= float(values.get("sensor.gamma", 1.0))  # `**=` keeps `**`'s special cases (0.5, 2, ...)
    img *= 255.0
    img += 0.5
    out = img.astype(np.uint8)
    quality = int(values.get("sensor.jpeg_quality", 100))
    if quality < 100:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    return out
