"""Observable image statistics, measured the same way on synthetic, real and production images.

The generator stores them with every image; the evaluator recomputes them on data that has
no metadata. Pure numpy; inputs are uint8 RGB ``(H, W, 3)`` or grey ``(H, W)``.
"""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def grey(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float64)
    return img @ LUMA if img.ndim == 3 else img


def laplacian(g: np.ndarray) -> np.ndarray:
    p = np.pad(g, 1, mode="edge")
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * g


def brightness(image: np.ndarray) -> float:
    """Mean luma, 0..255."""
    return float(grey(image).mean())


def contrast(image: np.ndarray) -> float:
    """RMS contrast: standard deviation of luma, 0..~128."""
    return float(grey(image).std())


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian (higher = sharper); the usual blur estimate."""
    return float(laplacian(grey(image)).var())


def noise_sigma(image: np.ndarray) -> float:
    """Immerkaer's fast noise estimate (sigma of additive Gaussian noise, luma units)."""
    g = grey(image)
    if min(g.shape) < 3:
        return 0.0
    k = g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:] - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1]
    k += -2 * g[1:-1, 2:] + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:]
    h, w = g.shape
    return float(np.sqrt(np.pi / 2) * np.abs(k).sum() / (6.0 * (w - 2) * (h - 2)))


def texture_energy(image: np.ndarray) -> float:
    """Mean absolute gradient of luma: how busy the background is."""
    g = grey(image)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def image_stats(image: np.ndarray, g: np.ndarray | None = None) -> dict[str, float]:
    """All image statistics; ``g``: ``grey(image)`` when the caller already has it (the same
    numbers, one luma conversion instead of five)."""
    g = grey(image) if g is None else g
    return {
        "brightness": brightness(g),
        "contrast": contrast(g),
        "sharpness": sharpness(g),
        "noise": noise_sigma(g),
        "texture": texture_energy(g),
    }


def object_contrast(image: np.ndarray, mask: np.ndarray, g: np.ndarray | None = None) -> float:
    """|mean luma inside mask − mean luma of a ring around it| (0 when undefined); ``g`` as in
    :func:`image_stats`."""
    g = grey(image) if g is None else g
    if not mask.any() or mask.all():
        return 0.0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    pad = max(2, int(0.25 * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)))
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, g.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, g.shape[1])
    # the window holds the mask and its ring: the same pixels in the same order as on the full image
    m, gw = mask[r0:r1, c0:c1], g[r0:r1, c0:c1]
    ring = ~m
    if not ring.any():
        return 0.0
    return float(abs(gw[m].mean() - gw[ring].mean()))


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: area ÷ skeleton length (0 for an empty mask)."""
    from skimage.morphology import skeletonize

    area = int(mask.sum())
    if area == 0:
        return 0.0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    # thinning is local (3x3 neighbourhoods): the mask's box plus a 2-pixel border of background
    # (or the image edge) gives the same skeleton as the whole image
    r0, r1 = max(int(rows[0]) - 2, 0), int(rows[-1]) + 3
    c0, c1 = max(int(cols[0]) - 2, 0), int(cols[-1]) + 3
    length = max(int(skeletonize(mask[r0:r1, c0:c1]).sum()), 1)
    return float(area / length)


def slant(mask: np.ndarray) -> float:
    """Slant in degrees from second moments: positive leans right (top to the right)."""
    ys, xs = np.nonzero(mask)
    if ys.size < 3:
        return 0.0
    y = ys - ys.mean()
    x = xs - xs.mean()
    vy = float((y * y).mean())
    if vy <= 1e-9:
        return 0.0
    shear = float((x * y).mean()) / vy  # dx per dy, image y grows downwards
    return float(np.degrees(np.arctan(-shear))) + 0.0  # no "-0.0"
