"""gallery.png: the worst images of an evaluation, with true and predicted boxes drawn.

Each tile is one image, upscaled (nearest neighbour) so small renders stay readable, with true
boxes in green (missed ones thicker) and predictions at or above the operating threshold in
red with their score; a caption names the image and its missed / false-positive counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

GREEN = (40, 220, 60)
RED = (235, 40, 40)
CAPTION_H = 16


def _tile(pixels: np.ndarray, gt: pd.DataFrame, preds: pd.DataFrame, caption: str,
          tile: int) -> Image.Image:
    h, w = pixels.shape[:2]
    scale = max(1, tile // max(h, w))
    img = Image.fromarray(pixels).convert("RGB")
    img = img.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for _, g in gt.iterrows():
        x, y, bw, bh = (float(v) * scale for v in (g.bbox_x, g.bbox_y, g.bbox_w, g.bbox_h))
        draw.rectangle([x, y, x + bw - 1, y + bh - 1], outline=GREEN, width=1 if g.detected else 2)
    for _, p in preds.iterrows():
        x, y, bw, bh = (float(v) * scale for v in (p.x, p.y, p.w, p.h))
        draw.rectangle([x, y, x + bw - 1, y + bh - 1], outline=RED, width=1)
        draw.text((x + 2, max(0.0, y - 11)), f"{p.score:.2f}", fill=RED)
    out = Image.new("RGB", (max(img.width, tile), img.height + CAPTION_H), (20, 20, 20))
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((3, img.height + 2), caption, fill=(235, 235, 235))
    return out


def render_gallery(worst: list[dict[str, Any]], coco: dict[str, Any], objects: pd.DataFrame,
                   gt: pd.DataFrame, preds: pd.DataFrame,
                   load_image: Callable[[dict[str, Any]], np.ndarray], tile: int = 192,
                   columns: int = 4) -> Image.Image:
    """A grid of the ``worst`` images (rows of :func:`evaluator.evaluate.worst_images`).

    ``objects`` supplies true boxes (``bbox_*``), ``gt`` the ``detected`` flag per ``ann_id``,
    ``preds`` the predictions (only ``above`` ones are drawn). With no failures the gallery is
    a small card that says so.
    """
    if not worst:
        card = Image.new("RGB", (320, 40), (20, 20, 20))
        ImageDraw.Draw(card).text((8, 14), "no missed objects and no false positives", fill=GREEN)
        return card
    by_id = {int(i["id"]): i for i in coco["images"]}
    boxes = objects[["ann_id", "image_id", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]].merge(
        gt[["ann_id", "detected"]], on="ann_id")
    shown = preds[preds["above"]]
    tiles = []
    for row in worst:
        iid = row["image_id"]
        caption = f"#{iid} missed {row['missed']} fp {row['fp']}"
        tiles.append(_tile(load_image(by_id[iid]), boxes[boxes["image_id"] == iid],
                           shown[shown["image_id"] == iid], caption, tile))
    cols = min(columns, len(tiles))
    cw, ch = max(t.width for t in tiles), max(t.height for t in tiles)
    sheet = Image.new("RGB", (cols * cw + (cols - 1) * 4, -(-len(tiles) // cols) * (ch + 4) - 4),
                      (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (cw + 4), (i // cols) * (ch + 4)))
    return sheet
