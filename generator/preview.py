"""Preview grid of a shard: images with boxes, class labels and translucent instance masks.

:func:`preview_grid` picks ``n`` images (a seeded ``numpy.random.Generator``, so the same seed
shows the same images), scales each to fit a ``tile`` × ``tile`` panel and draws every
annotation: its visible mask blended in a per-instance colour, its box and its class name. When
the shard has depth maps, the depth (viridis, near = dark, no surface = black) is shown beside
each image. Layout, with ``panels`` = 2 with depth else 1::

    width  = cols * panels * tile + (cols + 1) * PAD
    height = rows * (tile + LABEL_H) + (rows + 1) * PAD
    cols = ceil(sqrt(k)), rows = ceil(k / cols)

:func:`write_preview` saves it as PNG atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import generator.annotations as ann
from generator import atomic
from generator.errors import ConfigError, ShardError
from generator.qc import require_coco
from generator.shard import Shard

PAD = 6
LABEL_H = 14
ALPHA = 0.45
BACKGROUND = (24, 24, 24)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 255, 255)]


def grid_size(k: int, with_depth: bool, tile: int) -> tuple[int, int]:
    """Canvas (width, height) for ``k`` images; see the module docstring."""
    cols = max(1, math.ceil(math.sqrt(k)))
    rows = max(1, math.ceil(k / cols))
    panels = 2 if with_depth else 1
    return cols * panels * tile + (cols + 1) * PAD, rows * (tile + LABEL_H) + (rows + 1) * PAD


def pick_images(images: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` images (all when fewer), chosen by a seeded generator, in shard order."""
    if n < 1:
        raise ConfigError(f"-n: must be >= 1 image, but got {n}")
    rng = np.random.default_rng(seed)
    k = min(n, len(images))
    idx = sorted(rng.choice(len(images), size=k, replace=False).tolist()) if k else []
    return [images[i] for i in idx]


def _fit(w: int, h: int, tile: int) -> tuple[float, tuple[int, int]]:
    s = min(tile / w, tile / h)
    return s, (max(1, round(w * s)), max(1, round(h * s)))


def _overlay(rgb: np.ndarray, anns: list[dict[str, Any]], names: dict[int, str], tile: int,
             font: Any) -> Image.Image:
    """The image scaled into the tile with masks, boxes and class labels drawn on it."""
    h, w = rgb.shape[:2]
    s, size = _fit(w, h, tile)
    resample = Image.Resampling.NEAREST if s >= 1 else Image.Resampling.BILINEAR
    out = np.asarray(Image.fromarray(rgb).resize(size, resample)).astype(np.float32)
    for i, a in enumerate(anns):
        mask = Image.fromarray(ann.decode_rle(a["segmentation"])).resize(size)
        sel = np.asarray(mask, dtype=bool)
        out[sel] = (1 - ALPHA) * out[sel] + ALPHA * np.array(PALETTE[i % len(PALETTE)])
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for i, a in enumerate(anns):
        x, y, bw, bh = (v * s for v in a["bbox"])
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([x, y, max(x, x + bw - 1), max(y, y + bh - 1)], outline=colour)
        text = names.get(a["category_id"], str(a["category_id"]))
        tx, ty = x, max(0.0, y - 11)
        box = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle(box, fill=colour)
        draw.text((tx, ty), text, fill=(0, 0, 0), font=font)
    return img


def _depth_panel(shard: Shard, image: dict[str, Any], tile: int, font: Any) -> Image.Image:
    """Colour-mapped depth (viridis over this image's depth range; 0 = no surface = black)."""
    from matplotlib import colormaps

    depth = shard.load_depth(image)
    if depth is None:
        panel = Image.new("RGB", (tile, tile), BACKGROUND)
        ImageDraw.Draw(panel).text((4, 4), "no depth", fill=(200, 200, 200), font=font)
        return panel
    valid = depth > 0
    lo, hi = (float(depth[valid].min()), float(depth[valid].max())) if valid.any() else (0, 1)
    norm = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = (colormaps["viridis"](norm)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    _, size = _fit(depth.shape[1], depth.shape[0], tile)
    return Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST)


def preview_grid(path: str | Path, n: int = 16, seed: int = 0, tile: int = 160) -> Image.Image:
    """The preview image of the shard at ``path`` (see the module docstring for the layout)."""
    if tile < 16:
        raise ConfigError(f"--tile: must be >= 16 pixels, but got {tile}")
    shard = Shard(path)
    coco = require_coco(shard)
    chosen = pick_images(coco["images"], n, seed)
    with_depth = any("depth_file" in i for i in coco["images"])
    names = {c["id"]: str(c["name"]) for c in coco["categories"]}
    by_image = shard.annotations_by_image()
    font = ImageFont.load_default()
    canvas = Image.new("RGB", grid_size(len(chosen), with_depth, tile), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    cols = max(1, math.ceil(math.sqrt(len(chosen))))
    panels = 2 if with_depth else 1
    for k, image in enumerate(chosen):
        x0 = PAD + (k % cols) * (panels * tile + PAD)
        y0 = PAD + (k // cols) * (tile + LABEL_H + PAD)
        try:
            rgb = shard.load_image(image)
            depth = _depth_panel(shard, image, tile, font) if with_depth else None
        except OSError as exc:
            raise ShardError(f"preview: image {image['id']} or its depth cannot be read ({exc}); "
                             f"run `synthloop validate {shard.path}`") from exc
        canvas.paste(_overlay(rgb, by_image.get(image["id"], []), names, tile, font), (x0, y0))
        if depth is not None:
            canvas.paste(depth, (x0 + tile, y0))
        draw.text((x0, y0 + tile + 1), f"#{image['id']} {Path(image['file_name']).name}",
                  fill=(220, 220, 220), font=font)
    return canvas


def write_preview(path: str | Path, out: str | Path, n: int = 16, seed: int = 0,
                  tile: int = 160) -> Image.Image:
    """Render the preview and write it to ``out`` as PNG (atomically); returns the image."""
    grid = preview_grid(path, n=n, seed=seed, tile=tile)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic.write_bytes(out, buf.getvalue())
    return grid
