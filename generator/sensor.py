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
    img = color.astype(np.float64) / 255.0
    sigma = float(values.get("sensor.blur", 0.0))
    if sigma > 0.05:
        img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
    length = float(values.get("sensor.motion_blur", 0.0))
    if length >= 1.0:
        k = motion_kernel(length, float(rng.uniform(0, 180)))
        img = np.stack([ndimage.convolve(img[..., c], k, mode="nearest") for c in range(3)], axis=-1)
    img = img * 2.0 ** float(values.get("sensor.exposure", 0.0))
    noise = float(values.get("sensor.noise", 0.0))
    if noise > 0:
        img = img + rng.normal(0.0, noise / 255.0, img.shape)
    img = np.clip(img, 0.0, 1.0) ** float(values.get("sensor.gamma", 1.0))
    out = (img * 255.0 + 0.5).astype(np.uint8)
    quality = int(values.get("sensor.jpeg_quality", 100))
    if quality < 100:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    return out
