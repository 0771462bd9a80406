"""The real set a calibration matches: a shard, or a plain directory of frames.

- **A shard** (a directory with ``manifest.json``: the built-in ``real-train``/``real-val``,
  an imported COCO set, a production shard): image conditions and, where it has labels, object
  conditions, through :func:`evaluator.conditions.condition_tables` (metadata where present,
  else measured from pixels and masks). The held-out ``real-test`` split is refused.
- **A directory of frames** (e.g. a frozen production window's ``frames/``): every image under
  it (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.webp``, recursively), measured with
  :mod:`generator.imagestats`; unlabeled, so only image-level conditions. A directory that
  *contains* shards (e.g. the output of ``synthloop data real``) is refused: name one split.

At most ``max_images`` images are used (a seeded subsample, recorded in the report).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluator.checks import HELD_OUT_SPLIT
from generator import imagestats
from generator.errors import ConfigError, DataError
from generator.shard import Shard
from policy.calibration_distance import Measured
from policy.calibration_render import shard_measured

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class RealSet:
    measured: Measured
    source: dict[str, Any] = field(default_factory=dict)  # path, kind, split, images, sizes


def _refuse_held_out(path: Path, manifest: dict[str, Any]) -> None:
    if manifest.get("split") == HELD_OUT_SPLIT:
        raise DataError(
            f"--real: shard {str(path)!r} is the held-out {HELD_OUT_SPLIT} split (manifest split = "
            f"{HELD_OUT_SPLIT!r}), kept for the final report so nothing is ever tuned to it; calibrate on "
            "real-val or real-train")


def _subsample(n: int, max_images: int, seed: int) -> np.ndarray:
    if n <= max_images:
        return np.arange(n)
    return np.sort(np.random.default_rng(np.random.SeedSequence([seed, 3])).choice(n, max_images, replace=False))


def _load_shard(path: Path, max_images: int, seed: int) -> RealSet:
    shard = Shard(path)
    _refuse_held_out(path, shard.manifest)
    measured = shard_measured(shard)
    if measured.images.empty:
        raise DataError(f"--real: shard {str(path)!r} has no images (counts.images = 0); pass a non-empty shard")
    keep = measured.images.iloc[_subsample(len(measured.images), max_images, seed)]
    labelled = bool(shard.coco.get("annotations"))
    objects = measured.objects if labelled else None
    if objects is not None:
        objects = objects[objects["image_id"].isin(keep["image_id"])]
    sizes = sorted({(int(i.get("width") or 0), int(i.get("height") or 0)) for i in shard.coco["images"]})
    source = {"path": str(path), "kind": "shard", "manifest_kind": shard.manifest.get("kind"),
              "split": shard.manifest.get("split"), "images": len(keep), "labelled": labelled,
              "sizes": [list(s) for s in sizes[:5]]}
    return RealSet(Measured(images=keep.reset_index(drop=True), objects=objects), source)


def _refuse_inside_held_out(path: Path) -> None:
    """Refuse a frames directory that lies inside the held-out shard (e.g. its ``images/``)."""
    for parent in path.resolve().parents:
        manifest = parent / "manifest.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                _refuse_held_out(parent, data)


def _frame_files(path: Path) -> list[Path]:
    nested = sorted(p.parent for p in path.rglob("manifest.json"))
    if nested:
        raise ConfigError(
            f"--real: {str(path)!r} is not a shard but holds shard(s) ({', '.join(str(p) for p in nested[:3])}); "
            "pass one shard directory, e.g. DIR/real-val (never real-test)")
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _load_frames(path: Path, max_images: int, seed: int) -> RealSet:
    from PIL import Image

    from evaluator.production.log import check_frame

    _refuse_inside_held_out(path)
    files = _frame_files(path)
    if not files:
        raise DataError(f"--real: directory {str(path)!r} has no manifest.json and no image files "
                        f"({', '.join(IMAGE_SUFFIXES)}); pass a shard or a directory of frames")
    rows, sizes = [], set()
    for k, i in enumerate(_subsample(len(files), max_images, seed)):
        checked = check_frame(files[i], path)
        if isinstance(checked, str):
            raise DataError(f"--real: frame {str(files[i])!r}: {checked}; remove it or fix the directory")
        with Image.open(checked[0]) as im:
            pixels = np.asarray(im.convert("RGB"))
        sizes.add(checked[1])
        rows.append({"image_id": k + 1, "file_name": str(files[i].relative_to(path)),
                     **{f"stat.{s}": v for s, v in imagestats.image_stats(pixels).items()}})
    source = {"path": str(path), "kind": "frames", "images": len(rows), "labelled": False,
              "sizes": [list(s) for s in sorted(sizes)[:5]]}
    return RealSet(Measured(images=pd.DataFrame(rows), objects=None), source)


def load_real(path: str | Path, max_images: int, seed: int) -> RealSet:
    """Measured conditions of the real set at ``path`` (see the module docstring)."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"--real: must be a shard or a directory of frames, but {str(p)!r} is not a directory; "
                          "check the path (e.g. data/real/real-val)")
    if max_images < 1:
        raise ConfigError(f"--max-real-images: must be >= 1, but got {max_images}")
    if (p / "manifest.json").is_file():
        return _load_shard(p, max_images, seed)
    return _load_frames(p, max_images, seed)
