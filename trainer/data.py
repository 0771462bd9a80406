"""Training data: shards checked, decoded once and held in memory, letterboxed to the input.

Every ``--data DIR[:weight]`` entry is a :class:`DataSource`. :func:`check_sources` reads only
manifests and refuses, one line each: missing/unfinished shards, ``split: real-test`` (held out
for final reporting), unknown kinds, class lists that differ, empty shards. :func:`load_store`
then decodes every image once (``annotations.json`` and every image are verified against
their sha256 in the manifest by :class:`generator.shard.Shard`, so a corrupt or edited file is
named with the shard and the fix, never trained on) into one ``uint8 (N, S, S, 3)`` array —
5,000 images at 128² are ~250 MB — with boxes as ``x1, y1, x2, y2`` input pixels and 0-based
labels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from generator.errors import ConfigError, DataError, ShardError, SynthloopError, is_int
from generator.real.splits import HELD_OUT_SPLIT
from generator.shard import Shard
from trainer.geometry import letterbox, xywh_to_input

REAL_KINDS = ("real", "imported", "production")
SYNTHETIC_KINDS = ("synthetic",)


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` entry: a shard directory and its sampling weight (default 1).

    The weight multiplies the sampling probability of each of the shard's images, so equal
    weights mean plain concatenation and weight 2 shows every image twice as often.
    """

    path: Path
    weight: float = 1.0


def parse_data_arg(text: str) -> DataSource:
    """Parse ``DIR`` or ``DIR:weight`` (a directory whose own name has a ``:`` also works)."""
    path, sep, weight = str(text).rpartition(":")
    if not sep or Path(text).is_dir():
        return DataSource(Path(text))
    try:
        value = float(weight)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--data: the weight after ':' must be a number > 0, but got {weight!r} "
                          f"in {text!r}; write DIR or DIR:WEIGHT, e.g. {path}:2")
    return DataSource(Path(path), value)


@dataclass
class ShardInfo:
    """A checked shard (manifest only) and how it is used."""

    source: DataSource
    shard: Shard
    group: str  # "synthetic" | "real"

    @property
    def kind(self) -> str:
        return str(self.shard.manifest.get("kind"))

    @property
    def scenario(self) -> str | None:
        s = self.shard.manifest.get("scenario")
        if isinstance(s, dict):
            s = s.get("name")
        return str(s) if s else None

    def record(self) -> dict[str, Any]:
        """What model.json stores about this training shard."""
        m = self.shard.manifest
        return {"path": str(self.source.path), "name": m.get("name"), "kind": self.kind,
                "fingerprint": self.shard.fingerprint, "weight": self.source.weight,
                "images": len(self.shard.coco["images"]),
                "annotations": len(self.shard.coco["annotations"])}


def check_source(source: DataSource) -> ShardInfo:
    """Read one shard's manifest and refuse what must not be trained on."""
    shard = Shard(source.path)  # ShardError for a missing or unfinished directory
    m = shard.manifest
    where = f"--data {str(source.path)!r}"
    split = m.get("split")
    if split == HELD_OUT_SPLIT:
        raise DataError(f"{where}: manifest split is {split!r}, which is held out for final "
                        "reporting and never trained on; train on the real-train split instead")
    kind = m.get("kind")
    if kind not in SYNTHETIC_KINDS + REAL_KINDS:
        raise DataError(f"{where}: manifest kind must be one of "
                        f"{', '.join(SYNTHETIC_KINDS + REAL_KINDS)}, but got {kind!r}")
    if not isinstance(m.get("classes"), list) or not m["classes"]:
        raise DataError(f"{where}: manifest classes must be a non-empty list, but got "
                        f"{m.get('classes')!r}; re-create the shard")
    n_images, n_anns = len(shard.coco.get("images", [])), len(shard.coco.get("annotations", []))
    if n_images == 0 or n_anns == 0:
        raise DataError(f"{where}: a training shard needs images and annotations, but it has "
                        f"{n_images} images and {n_anns} annotations; drop it")
    group = "synthetic" if kind in SYNTHETIC_KINDS else "real"
    return ShardInfo(source, shard, group)


def check_sources(sources: list[DataSource], classes: list[str] | None = None) -> list[ShardInfo]:
    """Check every source (manifests only); all must share one class list (``classes`` if given)."""
    if not sources:
        raise ConfigError("--data: at least one shard is needed, but got none; pass --data DIR")
    seen: set[Path] = set()
    infos: list[ShardInfo] = []
    for src in sources:
        key = src.path.resolve()
        if key in seen:
            raise ConfigError(f"--data: shard {str(src.path)!r} is listed twice; list it once and "
                              "give it a weight (DIR:2) to show it more often")
        seen.add(key)
        try:
            infos.append(check_source(src))
        except SynthloopError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DataError(f"--data {str(src.path)!r}: manifest.json or annotations.json is "
                            f"malformed ({exc!r}); re-create the shard") from exc
    reference = classes if classes is not None else infos[0].shard.classes
    origin = "the model (--init)" if classes is not None else f"{str(infos[0].source.path)!r}"
    for info in infos:
        if info.shard.classes != reference:
            raise DataError(f"--data {str(info.source.path)!r}: classes {info.shard.classes} differ "
                            f"from {reference} of {origin}; train one model per class list")
    return infos


@dataclass
class Store:
    """All training images in memory. Image ``i`` belongs to shard ``shard_of[i]``; its boxes
    are ``boxes[offsets[i]:offsets[i + 1]]``."""

    images: np.ndarray  # uint8 (N, S, S, 3), letterboxed
    boxes: np.ndarray  # float32 (M, 4) x1, y1, x2, y2 in input pixels
    labels: np.ndarray  # int64 (M,) 0-based class index
    offsets: np.ndarray  # int64 (N + 1,)
    shard_of: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.images)


def decode_image(shard: Shard, image: dict[str, Any]) -> np.ndarray:
    """Read and verify one image file; a corrupt, edited or missing file is a DataError."""
    rel = image["file_name"]
    path = shard.path / rel
    try:
        data = shard.verified_bytes(rel)  # missing, unlisted, edited or corrupt: one line naming it
    except ShardError as exc:
        raise DataError(f"data: {exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"data: image file {str(path)!r} cannot be decoded ({exc}); "
                        "re-create or re-import the shard") from exc


def load_store(infos: list[ShardInfo], size: int, progress: bool = False) -> Store:
    """Decode every image of every shard into one letterboxed in-memory :class:`Store`."""
    from generator.progress import bar as progress_bar  # a bar on a terminal only

    total = sum(len(i.shard.coco["images"]) for i in infos)
    images = np.zeros((total, size, size, 3), dtype=np.uint8)
    boxes: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    shard_of = np.zeros(total, dtype=np.int64)
    n = 0
    with progress_bar(total, "loading shards", "img", show=progress, leave=False) as bar:
        for k, info in enumerate(infos):
            by_image = info.shard.annotations_by_image()
            for img in info.shard.coco["images"]:
                try:
                    images[n], b, lab = _load_one(info, img, by_image.get(img["id"], []), size)
                except (KeyError, TypeError, IndexError) as exc:
                    raise DataError(f"data: image {img.get('id')!r} of {str(info.source.path)!r} "
                                    f"has malformed annotations ({exc!r}); re-create the shard"
                                    ) from exc
                boxes.append(b)
                labels.append(lab)
                shard_of[n] = k
                n += 1
                bar.update(1)
    offsets = np.concatenate([[0], np.cumsum([len(lab) for lab in labels])]).astype(np.int64)
    return Store(images, np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
                 np.concatenate(labels).astype(np.int64), offsets, shard_of)


def _load_one(info: ShardInfo, img: dict[str, Any], anns: list[dict[str, Any]],
              size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pixels = decode_image(info.shard, img)
    canvas, sx, sy = letterbox(pixels, size)
    n_classes = len(info.shard.classes)
    kept = [a for a in anns if not a.get("iscrowd") and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    for a in kept:
        cid = a.get("category_id")
        if not is_int(cid) or not 1 <= cid <= n_classes:
            raise DataError(f"data: annotation {a.get('id')} in {str(info.source.path)!r} has "
                            f"category_id {cid!r}, outside 1..{n_classes}; fix the shard")
    b = xywh_to_input(np.array([a["bbox"] for a in kept], dtype=np.float32), sx, sy)
    lab = np.array([a["category_id"] - 1 for a in kept], dtype=np.int64)
    return canvas, b, lab

