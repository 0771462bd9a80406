"""Shard directories: the unit of data every stage reads and writes.

Layout (see docs/shard-format.md)::

    shard/
      images/000000.png      RGB, lossless
      depth/000000.png       uint16 millimetres (0 = no surface), when rendered
      semantic/000000.png    uint8 category id per pixel (0 = background), when rendered
      annotations.json       COCO + extra fields (visibility, truncation, amodal, pose, conditions)
      conditions.parquet     one row per annotation, image-level columns repeated
      manifest.json          identity, counts, sha256 per file, fingerprint

Images are encoded by :func:`encode_image` (safe to call in worker processes: it writes its own
files and returns a small JSON-able :class:`ImageEntry`); :class:`ShardWriter` collects entries,
assigns ids in index order and writes the JSON/Parquet files, then renames the directory into
place. :class:`Shard` reads one back, and every file it reads (``annotations.json`` once per
load, each image, depth map and ``conditions.parquet`` as it is read) is checked against its
sha256 in ``manifest.json``: an edited or corrupt file is a one-line :class:`ShardError`
naming the shard, the file and the fix, never silently trained or evaluated on.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from generator import annotations as ann
from generator import atomic, imagestats
from generator.errors import ShardError
from generator.fingerprint import sha256_file
from generator.timing import NO_TIMES, StageTimes

FORMAT = "synthloop-shard/1"
MIN_VISIBLE_PIXELS = 4


@dataclass
class ObjectRecord:
    """One labelled object of one image, straight from the renderer (or compositor)."""

    category_id: int
    mask: np.ndarray  # visible pixels, bool (H, W)
    amodal_mask: np.ndarray | None = None  # unoccluded pixels inside the image
    truncation: float = 0.0
    pose: np.ndarray | None = None  # 4x4 object-to-camera, OpenCV camera axes, metres
    attributes: dict[str, Any] = field(default_factory=dict)
    keypoints: np.ndarray | None = None  # (K, 3) COCO (x, y, v), see generator.annotations.keypoints


@dataclass
class ImageRecord:
    index: int
    image: np.ndarray  # uint8 (H, W, 3)
    objects: list[ObjectRecord]
    depth: np.ndarray | None = None  # float metres, 0 = background
    intrinsics: np.ndarray | None = None  # 3x3, OpenCV
    conditions: dict[str, Any] = field(default_factory=dict)  # sampled values + sources
    hidden_objects: int = 0  # objects placed but not visible at all (fully occluded/off-screen)


@dataclass
class ImageEntry:
    """What a worker hands back: COCO fragments with ids still unassigned."""

    index: int
    image: dict[str, Any]
    annotations: list[dict[str, Any]]
    files: dict[str, str]  # relative path -> sha256


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG. uint8 RGB, uint8 grey and uint16 grey (the shard's images, semantic maps
    and depth maps) are written directly: every scanline "Up"-filtered (NumPy) and deflated at
    zlib level 1 (which releases the GIL), 2x faster than Pillow's adaptive filtering and no
    larger on renders; anything else goes through Pillow. Decodes to exactly ``array``."""
    a = np.ascontiguousarray(array)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        colour_type, bit_depth = 2, 8
    elif a.dtype == np.uint8 and a.ndim == 2:
        colour_type, bit_depth = 0, 8
    elif a.dtype == np.uint16 and a.ndim == 2:
        colour_type, bit_depth = 0, 16
    else:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    h, w = a.shape[:2]
    rows = (a.astype(">u2") if bit_depth == 16 else a).reshape(h, -1).view(np.uint8)  # PNG is big-endian
    filtered = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # "Up": byte minus the byte above (the row above the first is zeros), mod 256
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(filtered.data, 1)),
            _png_chunk(b"IEND", b""),
        )
    )


def _write_file(root: Path, rel: str, data: bytes, files: dict[str, str]) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)  # inside the shard's temp dir: the dir rename is the atomic step
    files[rel] = hashlib.sha256(data).hexdigest()


def _round(x: float, nd: int = 6) -> float:
    return float(round(float(x), nd))



def _object_annotation(
    obj: ObjectRecord, image: np.ndarray, times: StageTimes = NO_TIMES, grey: np.ndarray | None = None
) -> dict[str, Any]:
    with times("stats"):
        measured = {
            "object_contrast": _round(imagestats.object_contrast(image, obj.mask, grey)),
            "stroke_width": _round(imagestats.stroke_width(obj.mask)),
            "slant": _round(imagestats.slant(obj.mask)),
        }
    with times("annotate"):
        a: dict[str, Any] = {
            "category_id": int(obj.category_id),
            "segmentation": ann.encode_rle(obj.mask),
            "area": float(obj.mask.sum()),
            "bbox": ann.mask_bbox(obj.mask),
            "iscrowd": 0,
            "truncation": _round(obj.truncation),
            **measured,
            "attributes": atomic.jsonable(obj.attributes),
        }
        if obj.amodal_mask is not None:
            a["amodal_segmentation"] = ann.encode_rle(obj.amodal_mask)
            a["amodal_bbox"] = ann.mask_bbox(obj.amodal_mask)
            a["visibility"] = _round(ann.visibility(obj.mask, obj.amodal_mask))
        if obj.pose is not None:
            a["pose"] = [[_round(v) for v in row] for row in np.asarray(obj.pose, dtype=float)]
        if obj.keypoints is not None:  # only objects whose asset declares keypoints
            kp = np.asarray(obj.keypoints, dtype=float)
            a["keypoints"] = [_round(v, 3) if j % 3 < 2 else int(v) for j, v in enumerate(kp.ravel())]
            a["num_keypoints"] = int((kp[:, 2] > 0).sum())
    return a


def encode_image(record: ImageRecord, root: Path, times: StageTimes = NO_TIMES) -> ImageEntry:
    """Write one image's files under ``root`` and return its COCO fragments (``times``: per-stage
    wall time, see :mod:`generator.timing`)."""
    h, w = record.image.shape[:2]
    stem = f"{record.index:06d}"
    files: dict[str, str] = {}
    pngs: list[tuple[str, np.ndarray]] = [(f"images/{stem}.png", record.image)]
    img: dict[str, Any] = {"file_name": f"images/{stem}.png", "width": w, "height": h}
    kept = [o for o in record.objects if int(o.mask.sum()) >= MIN_VISIBLE_PIXELS]
    if record.depth is not None:
        with times("annotate"):
            depth_mm = ann.depth_to_png_mm(record.depth)
            sem = np.zeros((h, w), dtype=np.uint8)
            for o in kept:
                sem[o.mask] = o.category_id
        pngs += [(f"depth/{stem}.png", depth_mm), (f"semantic/{stem}.png", sem)]
        img["depth_file"] = f"depth/{stem}.png"
        img["semantic_file"] = f"semantic/{stem}.png"
    for rel, array in pngs:
        with times("png"):
            data = _png_bytes(array)
        with times("write"):
            _write_file(root, rel, data, files)
    if record.intrinsics is not None:
        img["intrinsics"] = [[_round(v) for v in row] for row in np.asarray(record.intrinsics)]
    with times("stats"):
        grey = imagestats.grey(record.image)  # once for the image's and every object's statistics
        stats = imagestats.image_stats(record.image, grey)
    img["conditions"] = atomic.jsonable(record.conditions)
    img["stats"] = atomic.jsonable(stats)
    img["hidden_objects"] = int(record.hidden_objects + len(record.objects) - len(kept))
    anns = [_object_annotation(o, record.image, times, grey) for o in kept]
    return ImageEntry(index=record.index, image=img, annotations=anns, files=files)


def _condition_rows(coco: dict[str, Any]) -> pd.DataFrame:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    rows: list[dict[str, Any]] = []
    for img in coco["images"]:
        base: dict[str, Any] = {"image_id": img["id"], "file_name": img["file_name"]}
        base["n_objects"] = len(by_image.get(img["id"], []))
        base.update({f"stat.{k}": v for k, v in img.get("stats", {}).items()})
        base.update({f"param.{k}": _scalar(v) for k, v in img.get("conditions", {}).items()})
        objs: list[dict[str, Any] | None] = list(by_image.get(img["id"], [])) or [None]
        for a in objs:
            row = dict(base)
            if a is not None:
                x, y, w, h = a["bbox"]
                row.update(
                    ann_id=a["id"],
                    category_id=a["category_id"],
                    category=names[a["category_id"]],
                    bbox_x=x,
                    bbox_y=y,
                    bbox_w=w,
                    bbox_h=h,
                    area=a["area"],
                    pixel_size=float(np.sqrt(a["area"])),
                    box_size=float(max(w, h)),
                    visibility=a.get("visibility", 1.0),
                    truncation=a.get("truncation", 0.0),
                    object_contrast=a.get("object_contrast"),
                    stroke_width=a.get("stroke_width"),
                    slant=a.get("slant"),
                )
                row.update({f"obj.{k}": _scalar(v) for k, v in a.get("attributes", {}).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def _scalar(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v


class ShardWriter:
    """Collect :class:`ImageEntry` objects and publish a complete shard atomically.

    ``info`` becomes the manifest's identity block; it must hold ``name``, ``kind``
    (``synthetic`` / ``real`` / ``imported`` / ``production``), ``classes`` and
    ``fingerprint``; anything else (scenario, params, seed, split, sources) is kept as given.
    """

    def __init__(self, out: str | Path, info: dict[str, Any], overwrite: bool = False) -> None:
        missing = [k for k in ("name", "kind", "classes", "fingerprint") if k not in info]
        if missing:
            raise ValueError(f"ShardWriter info lacks {missing}")
        self.out = Path(out)
        self.info = info
        self.overwrite = overwrite
        self.entries: dict[int, ImageEntry] = {}
        self._ctx: Any = None
        self.root = Path()

    def __enter__(self) -> ShardWriter:
        self._ctx = atomic.atomic_dir(self.out, self.overwrite)
        self.root = self._ctx.__enter__()
        return self

    def add_record(self, record: ImageRecord) -> ImageEntry:
        entry = encode_image(record, self.root)
        self.add(entry)
        return entry

    def add(self, entry: ImageEntry) -> None:
        if entry.index in self.entries:
            raise ValueError(f"image index {entry.index} added twice")
        self.entries[entry.index] = entry

    def coco(self) -> dict[str, Any]:
        cats = [
            {"id": i + 1, "name": c, "supercategory": self.info["name"]} for i, c in enumerate(self.info["classes"])
        ]
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        for image_id, idx in enumerate(sorted(self.entries), start=1):
            e = self.entries[idx]
            images.append({"id": image_id, **e.image})
            for a in e.annotations:
                anns.append({"id": len(anns) + 1, "image_id": image_id, **a})
        return {
            "info": {"description": f"synthloop shard {self.info['name']}", "version": FORMAT},
            "images": images,
            "annotations": anns,
            "categories": cats,
        }

    def _finalize(self) -> None:
        coco = self.coco()
        files: dict[str, str] = {}
        for e in self.entries.values():
            files.update(e.files)
        ann_bytes = atomic.dumps_json(coco).encode()
        (self.root / "annotations.json").write_bytes(ann_bytes)
        files["annotations.json"] = hashlib.sha256(ann_bytes).hexdigest()
        _condition_rows(coco).to_parquet(self.root / "conditions.parquet", index=False)
        files["conditions.parquet"] = sha256_file(self.root / "conditions.parquet")
        label_types = ["bbox", "segmentation"]
        if any("amodal_segmentation" in a for a in coco["annotations"]):
            label_types += ["amodal", "visibility"]
        if any("pose" in a for a in coco["annotations"]):
            label_types.append("pose")
        if any("keypoints" in a for a in coco["annotations"]):
            label_types.append("keypoints")
        if any("depth_file" in i for i in coco["images"]):
            label_types += ["depth", "semantic"]
        manifest = {
            "format": FORMAT,
            **atomic.jsonable(self.info),
            "counts": {"images": len(coco["images"]), "annotations": len(coco["annotations"])},
            "label_types": label_types,
            "files": dict(sorted(files.items())),
        }
        (self.root / "manifest.json").write_text(atomic.dumps_json(manifest))

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            try:
                self._finalize()
            except BaseException as exc:
                self._ctx.__exit__(type(exc), exc, exc.__traceback__)
                raise
        self._ctx.__exit__(et, ev, tb)


class Shard:
    """Read access to a finished shard directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not self.path.is_dir():
            raise ShardError(f"shard: directory {str(self.path)!r} does not exist; check the path")
        if not mpath.is_file():
            raise ShardError(
                f"shard: {str(self.path)!r} has no manifest.json, so it is not a finished shard; "
                "render or import it again"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(mpath.read_bytes())
        except json.JSONDecodeError as exc:
            raise ShardError(f"shard: {mpath} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        except (OSError, ValueError) as exc:  # unreadable, or not UTF-8 text
            raise ShardError(f"shard: cannot read {mpath} ({type(exc).__name__}); render or import the shard "
                             "again") from exc
        self._coco: dict[str, Any] | None = None

    def verified_bytes(self, rel: str) -> bytes:
        """The bytes of the shard file ``rel``, checked against its sha256 in manifest.json."""
        path = self.path / rel
        fix = f"re-render or re-import the shard (`synthloop validate {self.path}` lists what changed)"
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise ShardError(f"shard {str(self.path)!r}: file {rel!r} must lie inside the shard (symlinks "
                             f"followed), but it does not; {fix}")
        files = self.manifest.get("files") if isinstance(self.manifest, dict) else None
        expected = files.get(rel) if isinstance(files, dict) else None
        if expected is None:
            raise ShardError(f"shard {str(self.path)!r}: {rel} must be listed with its sha256 in manifest.json, "
                             f"but it is not; {fix}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ShardError(f"shard {str(self.path)!r}: cannot read {rel} ({exc.strerror}); {fix}") from exc
        if hashlib.sha256(data).hexdigest() != expected:
            raise ShardError(f"shard {str(self.path)!r}: {rel} does not match its sha256 in manifest.json "
                             f"(edited or corrupt); {fix}")
        return data

    def verify(self) -> None:
        """Check every file listed in manifest.json against its sha256 (a missing, edited or
        corrupt file is a one-line :class:`ShardError`)."""
        files = self.manifest.get("files") if isinstance(self.manifest, dict) else None
        if not isinstance(files, dict) or "annotations.json" not in files:
            raise ShardError(f"shard {str(self.path)!r}: manifest.json must list its files with their sha256, "
                             "but it does not; re-render or re-import the shard")
        for rel in sorted(files):
            self.verified_bytes(rel)

    @property
    def coco(self) -> dict[str, Any]:
        if self._coco is None:
            data = self.verified_bytes("annotations.json")
            try:
                self._coco = json.loads(data)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise ShardError(f"shard: cannot read {self.path / 'annotations.json'}: {exc}") from exc
        return self._coco

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def annotations_by_image(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {i["id"]: [] for i in self.coco["images"]}
        for a in self.coco["annotations"]:
            out.setdefault(a["image_id"], []).append(a)
        return out

    def _decode(self, rel: str) -> Image.Image:
        data = self.verified_bytes(rel)
        try:
            im = Image.open(io.BytesIO(data))
            im.load()
        except Exception as exc:  # PIL raises many types for a damaged file
            raise ShardError(f"shard {str(self.path)!r}: {rel} cannot be decoded ({type(exc).__name__}); "
                             "re-render or re-import the shard") from exc
        return im

    def load_image(self, image: dict[str, Any]) -> np.ndarray:
        with self._decode(image["file_name"]) as im:
            return np.asarray(im.convert("RGB"))

    def load_depth(self, image: dict[str, Any]) -> np.ndarray | None:
        """Depth in metres (0 = no surface), or None when the shard has no depth."""
        if "depth_file" not in image:
            return None
        with self._decode(image["depth_file"]) as im:
            return np.asarray(im).astype(np.float32) / 1000.0

    def conditions(self) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.verified_bytes("conditions.parquet")))
