"""Export a shard as an Ultralytics-style YOLO dataset (detection boxes or segmentation polygons).

Layout written (atomically, via :func:`generator.atomic.atomic_dir`)::

    out/
      images/train/000000.png       copies of the shard's images (images/val/ with a split)
      labels/train/000000.txt       one line per annotation
      data.yaml                     path, train, val, names

Label lines, coordinates normalised by the image width/height, class = 0-based index of the
category in id order (= class index for synthloop shards):

- ``detect``:  ``class cx cy w h``
- ``segment``: ``class x1 y1 x2 y2 …`` — the outline of the mask's largest contour (traced on
  pixel edges, so its extent equals the COCO box), simplified to 0.5 px.

Without ``val_fraction`` the whole shard is ``train`` and also ``val`` (data.yaml points both at
images/train). With it, the split is deterministic by image id: images are ranked by
sha256(image id) and the first ``round(F × N)`` go to val.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import generator.annotations as ann
from generator import atomic
from generator.errors import ConfigError, ShardError
from generator.qc import require_coco
from generator.shard import Shard

TASKS = ("detect", "segment")


@dataclass
class ExportSummary:
    out: Path
    task: str
    n_train: int
    n_val: int
    n_labels: int
    skipped: int  # annotations without a usable polygon (segment task only)


def split_ids(ids: list[int], val_fraction: float | None) -> set[int]:
    """Image ids that go to val: none without a fraction, else round(F·N) ranked by sha256(id)."""
    if val_fraction is None:
        return set()
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction: must lie strictly between 0 and 1, but got "
                          f"{val_fraction}; omit it to use the whole shard as train and val")
    k = round(val_fraction * len(ids))
    if len(ids) >= 2:
        k = min(max(k, 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(str(i).encode()).hexdigest())
    return set(ranked[:k])


def box_line(cls: int, bbox: list[float], w: int, h: int) -> str:
    x, y, bw, bh = bbox
    return f"{cls} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """Outline (N, 2) of the largest connected contour in pixel-edge coordinates (x, y)."""
    from skimage import measure

    padded = np.pad(mask.astype(np.uint8), 1)
    best, best_area = None, 0.0
    for c in measure.find_contours(padded, 0.5):
        xy = c[:, ::-1] - 0.5  # (row, col) of the padded array -> (x, y) on pixel edges
        area = 0.5 * abs(float(np.dot(xy[:, 0], np.roll(xy[:, 1], 1))
                               - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))))
        if area > best_area:
            best, best_area = xy, area
    if best is None:
        return None
    poly = measure.approximate_polygon(best, tolerance=0.5)
    if len(poly) > 1 and np.allclose(poly[0], poly[-1]):
        poly = poly[:-1]
    return poly if len(poly) >= 3 else None


def polygon_line(cls: int, poly: np.ndarray, w: int, h: int) -> str:
    pts = np.clip(poly / [w, h], 0.0, 1.0)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in pts.reshape(-1))


def _label_lines(anns: list[dict[str, Any]], classes: dict[int, int], img: dict[str, Any],
                 task: str) -> tuple[list[str], int]:
    lines, skipped = [], 0
    for a in anns:
        cls = classes[a["category_id"]]
        if task == "detect":
            lines.append(box_line(cls, a["bbox"], img["width"], img["height"]))
            continue
        poly = mask_polygon(ann.decode_rle(a["segmentation"]))
        if poly is None:
            skipped += 1
        else:
            lines.append(polygon_line(cls, poly, img["width"], img["height"]))
    return lines, skipped


def _target_names(images: list[dict[str, Any]]) -> dict[int, str]:
    """Output file name per image id: the shard's base name, or ``<id>_<name>`` on clashes."""
    names = {i["id"]: Path(i["file_name"]).name for i in images}
    if len(set(names.values())) == len(names):
        return names
    return {i: f"{i:06d}_{n}" for i, n in names.items()}


def _write_files(shard: Shard, tmp: Path, val: set[int], classes: dict[int, int], task: str,
                 progress: bool) -> tuple[int, int]:
    """Copy images and write label files under ``tmp``; returns (label lines, skipped)."""
    from generator.progress import bar as progress_bar  # a bar on a terminal only

    coco = shard.coco
    by_image = shard.annotations_by_image()
    targets = _target_names(coco["images"])
    n_labels = skipped = 0
    for img in progress_bar(None, "export", "img", show=progress, iterable=coco["images"]):
        split = "val" if img["id"] in val else "train"
        try:  # inside the shard, listed in manifest.json and matching its sha256
            data = shard.verified_bytes(img["file_name"])
        except ShardError as exc:
            raise ShardError(f"export: image {img['id']}: {exc}") from None
        name = targets[img["id"]]
        for sub in ("images", "labels"):
            (tmp / sub / split).mkdir(parents=True, exist_ok=True)
        (tmp / "images" / split / name).write_bytes(data)
        lines, skip = _label_lines(by_image.get(img["id"], []), classes, img, task)
        (tmp / "labels" / split / f"{Path(name).stem}.txt").write_text(
            "".join(f"{line}\n" for line in lines))
        n_labels, skipped = n_labels + len(lines), skipped + skip
    return n_labels, skipped


def default_out(path: str | Path) -> Path:
    """``<DIR>-yolo`` beside the shard directory as named (symlinks are not followed)."""
    p = Path(os.path.abspath(path))
    return p.with_name(f"{p.name}-yolo")


def export_yolo(path: str | Path, out: str | Path | None = None, task: str = "detect",
                val_fraction: float | None = None, overwrite: bool = False,
                progress: bool = False) -> ExportSummary:
    """Write the YOLO dataset of the shard at ``path`` to ``out`` (default ``<path>-yolo``).

    Refuses a non-empty ``out`` unless ``overwrite``; nothing is published on failure.
    """
    if task not in TASKS:
        raise ConfigError(f"--task: must be one of {', '.join(TASKS)}, but got {task!r}")
    shard = Shard(path)
    coco = require_coco(shard)
    out = Path(out) if out is not None else default_out(path)
    val = split_ids([i["id"] for i in coco["images"]], val_fraction)
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    classes = {c["id"]: k for k, c in enumerate(cats)}
    unknown = {a["category_id"] for a in coco["annotations"]} - set(classes)
    if unknown:
        raise ShardError(f"export: annotations use category ids {sorted(unknown)} that are not "
                         f"in categories; run `synthloop validate {path}`")
    with atomic.atomic_dir(out, overwrite) as tmp:
        n_labels, skipped = _write_files(shard, tmp, val, classes, task, progress)
        data = {"path": os.path.abspath(out), "train": "images/train",
                "val": "images/val" if val else "images/train",
                "names": {k: str(c["name"]) for k, c in enumerate(cats)}}
        (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    n_images = len(coco["images"])
    return ExportSummary(out, task, n_images - len(val), len(val), n_labels, skipped)
