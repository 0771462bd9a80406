"""Quality control of a shard: is every label consistent with its mask, image and manifest?

:func:`validate_shard` checks a finished shard directory (see docs/shard-format.md) and returns
a :class:`QCReport`: one :class:`Issue` per problem, each naming its record
(``"image 12"``, ``"annotation 40"``, ``"file images/000003.png"``, ``"category 3"``,
``"manifest"``), the check that failed and a one-line message. Checks:

- COCO schema (required keys and types), unique ids, references to existing images/categories;
- per annotation: the RLE is well formed and sized like its image, non-empty; ``area`` equals
  its pixel count; ``bbox`` lies inside the image and equals the mask's tight extent (within
  ``box_tolerance`` pixels; the writer computes boxes exactly, so 0 for our shards);
- every manifest ``label_type`` on every record: ``amodal`` (amodal mask ⊇ visible mask, box
  exact), ``visibility`` (in [0, 1] and = area ÷ amodal area), ``pose`` (4×4 rigid transform),
  ``depth`` (uint16 PNG of image size), ``semantic`` (uint8 PNG of image size);
- files: each one listed in the manifest exists and matches its sha256, nothing unlisted lies
  in the shard, images decode with the declared size; manifest counts match;
- manifest: format, identity keys, ``scenario.spec_sha256`` = sha256 of ``scenario.spec``,
  ``image_size`` = every image's size, categories = ``classes`` (id = class index + 1).

RLE work stays in pycocotools' compressed form (area, box, intersection) — masks are never
expanded to pixels; each file is read once (hash + decode). A 1000-image shard checks in about
2 s. Counts strings are parsed in Python first: pycocotools reads past a malformed string's end.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from generator.errors import ConfigError, ShardError
from generator.fingerprint import json_sha256
from generator.progress import bar as progress_bar  # a bar on a terminal only
from generator.shard import FORMAT, Shard

NUMBER = (int, float)
_ANN = ("id", "image_id", "category_id", "bbox", "area", "segmentation", "iscrowd")
_ANN_TYPES = ((int,), (int,), (int,), (list,), NUMBER, (dict,), (int,))
REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "image": {"id": (int,), "file_name": (str,), "width": (int,), "height": (int,)},
    "annotation": dict(zip(_ANN, _ANN_TYPES, strict=True)),
    "category": {"id": (int,), "name": (str,)},
}
MANIFEST_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,), "name": (str,), "kind": (str,), "classes": (list,), "fingerprint": (str,),
    "counts": (dict,), "label_types": (list,), "files": (dict,),
}
TOP_LEVEL: dict[str, tuple[type, ...]] = {k: (list,) for k in ("images", "annotations", "categories")}
SKIP_FILES = {"manifest.json"}
FILE_KEYS = (("file_name", "image"), ("depth_file", "depth"), ("semantic_file", "semantic"))


@dataclass(frozen=True)
class Issue:
    record: str  # "image 12", "annotation 40", "file images/000003.png", "category 3", "manifest"
    check: str  # short id of the failed check, e.g. "bbox_extent", "sha256", "missing_file"
    message: str


@dataclass
class QCReport:
    shard: str
    n_images: int = 0
    n_annotations: int = 0
    n_files: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def records(self) -> set[str]:
        return {i.record for i in self.issues}

    def summary(self) -> str:
        head = (f"validate {self.shard}: {self.n_images} images, "
                f"{self.n_annotations} annotations, {self.n_files} files")
        if self.ok:
            return f"{head}: OK"
        checks = Counter(i.check for i in self.issues)
        listed = ", ".join(f"{c}×{n}" for c, n in sorted(checks.items()))
        return f"{head}: {len(self.issues)} errors in {len(self.records())} records ({listed})"

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "ok": self.ok, "n_images": self.n_images,
                "n_annotations": self.n_annotations, "n_files": self.n_files,
                "n_errors": len(self.issues), "issues": [asdict(i) for i in self.issues]}


def rle_counts(counts: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString`` in Python).

    Raises ``ValueError`` on a character outside the alphabet or a string cut mid-number.
    """
    cnts: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("string ends in the middle of a run length")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} is not in the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return cnts


class _Checker:
    """Holds the shard and collects issues; one method per group of checks."""

    def __init__(self, shard: Shard, box_tolerance: float) -> None:
        self.shard = shard
        self.root = shard.path
        self.tol = float(box_tolerance)
        self.report = QCReport(shard=str(shard.path))
        self.label_types = set(shard.manifest.get("label_types") or [])
        self.seen_ids: dict[str, set[int]] = {}  # ids present, well-formed or not, per kind

    def add(self, record: str, check: str, message: str) -> None:
        self.report.issues.append(Issue(record, check, message))

    def typed(self, record: str, obj: Any, spec: dict[str, tuple[type, ...]]) -> bool:
        """Check required keys and their JSON types; False when anything is wrong."""
        if not isinstance(obj, dict):
            self.add(record, "schema", f"must be a JSON object, but got {type(obj).__name__}")
            return False
        good = True
        for key, types in spec.items():
            v = obj.get(key)
            if key not in obj:
                self.add(record, "schema", f"required key {key!r} is missing")
            elif isinstance(v, bool) or not isinstance(v, types):
                want = "/".join(t.__name__ for t in types)
                self.add(record, "schema", f"{key!r} must be {want}, but got {v!r}")
            else:
                continue
            good = False
        return good

    # ------------------------------------------------------------ manifest + COCO structure
    def manifest(self) -> None:
        m = self.shard.manifest
        if not self.typed("manifest", m, MANIFEST_KEYS):
            return
        if m["format"] != FORMAT:
            self.add("manifest", "format", f"format must be {FORMAT!r}, but got {m['format']!r}")
        scen = m.get("scenario")
        if isinstance(scen, dict) and isinstance(scen.get("spec"), dict) and "spec_sha256" in scen:
            digest = json_sha256(scen["spec"])
            if digest != scen["spec_sha256"]:
                self.add("manifest", "spec_sha256", f"scenario.spec_sha256 "
                         f"{scen['spec_sha256']!r} != sha256 of scenario.spec {digest!r}")

    def coco(self) -> dict[str, Any] | None:
        path = self.root / "annotations.json"
        try:
            coco = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.add("file annotations.json", "coco_json", f"cannot be read as JSON: {exc}")
            return None
        return coco if self.typed("file annotations.json", coco, TOP_LEVEL) else None

    def table(self, kind: str, rows: list[Any]) -> dict[int, dict[str, Any]]:
        """Schema-check one COCO list; return the well-formed rows by id (first of duplicates)."""
        out: dict[int, dict[str, Any]] = {}
        seen = self.seen_ids.setdefault(kind, set())
        for pos, row in enumerate(rows):
            rid = row.get("id") if isinstance(row, dict) else None
            if isinstance(rid, int):
                seen.add(rid)
            record = f"{kind} {rid}" if isinstance(rid, int) else f"{kind} #{pos} (no id)"
            if not self.typed(record, row, REQUIRED[kind]):
                continue
            if row["id"] in out:
                self.add(record, "duplicate_id", f"id {row['id']} is used by more than one {kind}")
                continue
            out[row["id"]] = row
        return out

    def categories(self, cats: dict[int, dict[str, Any]]) -> None:
        classes = self.shard.manifest.get("classes")
        if not isinstance(classes, list):
            return
        want = {i + 1: str(c) for i, c in enumerate(classes)}
        for cid, cat in cats.items():
            if want.get(cid) != cat["name"]:
                self.add(f"category {cid}", "category_class", f"name {cat['name']!r} != manifest "
                         f"class {want.get(cid)!r} (category id = class index + 1)")
        for cid in sorted(set(want) - set(cats)):
            self.add("manifest", "category_class", f"class {want[cid]!r} has no category {cid}")

    def image(self, img: dict[str, Any]) -> None:
        record = f"image {img['id']}"
        if img["width"] <= 0 or img["height"] <= 0:
            self.add(record, "image_size", f"width/height must be > 0, but got "
                     f"{img['width']}x{img['height']}")
        size = self.shard.manifest.get("image_size")
        if isinstance(size, list) and size != [img["width"], img["height"]]:
            self.add(record, "image_size", f"{img['width']}x{img['height']} != manifest "
                     f"image_size {size}")
        for label, key in (("depth", "depth_file"), ("semantic", "semantic_file")):
            if label in self.label_types and not isinstance(img.get(key), str):
                self.add(record, f"label_{label}", f"label type {label!r} needs {key!r}")

    # ------------------------------------------------------------ annotations
    def rle(self, record: str, key: str, rle: Any, img: dict[str, Any]) -> dict[str, Any] | None:
        """Validate one RLE; return it when pycocotools can safely use it."""
        if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str)
                and isinstance(rle.get("size"), list) and len(rle["size"]) == 2):
            self.add(record, "rle", f"{key} must be a compressed RLE {{size: [h, w], counts: str}}")
            return None
        h, w = img["height"], img["width"]
        if rle["size"] != [h, w]:
            self.add(record, "rle_size", f"{key}.size {rle['size']} != image [h, w] [{h}, {w}]")
            return None
        try:
            cnts = rle_counts(rle["counts"])
        except ValueError as exc:
            self.add(record, "rle", f"{key}.counts is malformed: {exc}")
            return None
        if min(cnts, default=0) < 0 or sum(cnts) != h * w:
            self.add(record, "rle", f"{key} runs must be >= 0 and sum to h*w = {h * w}, "
                     f"but sum to {sum(cnts)}")
            return None
        return rle

    def box(self, record: str, key: str, box: Any, rle: dict[str, Any],
            img: dict[str, Any]) -> None:
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in box)):
            self.add(record, "schema", f"{key} must be [x, y, w, h] numbers, but got {box!r}")
            return
        x, y, w, h = box
        W, H = img["width"], img["height"]
        if w <= 0 or h <= 0:
            self.add(record, "degenerate_box", f"{key} {box} has zero width or height")
        if x < 0 or y < 0 or x + w > W + 1e-6 or y + h > H + 1e-6:
            self.add(record, f"{key}_inside", f"{key} {box} leaves the {W}x{H} image")
        tight = [float(v) for v in mask_utils.toBbox(rle)]
        if max(abs(a - b) for a, b in zip(box, tight, strict=True)) > self.tol + 1e-6:
            self.add(record, f"{key}_extent", f"{key} {box} != tight extent of its mask {tight} "
                     f"(tolerance {self.tol:g} px)")

    def annotation(self, a: dict[str, Any], images: dict[int, dict[str, Any]],
                   cats: dict[int, dict[str, Any]]) -> None:
        record = f"annotation {a['id']}"
        img = images.get(a["image_id"])
        if a["category_id"] not in cats:
            self.add(record, "category_ref", f"category_id {a['category_id']} is not a category "
                     f"(known: {sorted(cats)})")
        if img is None:
            if a["image_id"] not in self.seen_ids.get("image", set()):  # else: image reported
                self.add(record, "image_ref", f"image_id {a['image_id']} is not an image")
            return
        vis = self.rle(record, "segmentation", a["segmentation"], img)
        if vis is None:
            return
        pixels = int(mask_utils.area(vis))
        if pixels == 0:
            self.add(record, "empty_mask", "segmentation has no pixels")
        if abs(float(a["area"]) - pixels) > 1e-6:
            self.add(record, "area", f"area {a['area']} != mask pixel count {pixels}")
        self.box(record, "bbox", a["bbox"], vis, img)
        if "amodal" in self.label_types:
            self.amodal(record, a, vis, pixels, img)
        if "visibility" in self.label_types or "visibility" in a:
            v = a.get("visibility")
            if not isinstance(v, NUMBER) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                self.add(record, "visibility", f"visibility must be in [0, 1], but got {v!r}")
        if "pose" in self.label_types or "pose" in a:
            self.pose(record, a.get("pose"))
        if "keypoints" in a:  # only annotations whose asset declares keypoints carry them
            self.keypoints(record, a, img)

    def keypoints(self, record: str, a: dict[str, Any], img: dict[str, Any]) -> None:
        kp = a["keypoints"]
        ok = isinstance(kp, list) and len(kp) % 3 == 0 and all(
            isinstance(v, NUMBER) and not isinstance(v, bool) for v in kp)
        if not ok:
            self.add(record, "keypoints", f"keypoints must be a flat list of (x, y, v) numbers, but got "
                     f"{json.dumps(kp)[:80]}")
            return
        pts = np.asarray(kp, dtype=float).reshape(-1, 3)
        if not np.isin(pts[:, 2], (0, 1, 2)).all():
            self.add(record, "keypoints", f"keypoint visibility must be 0, 1 or 2, but got {pts[:, 2].tolist()}")
        on = pts[:, 2] > 0
        W, H = img["width"], img["height"]
        if on.any() and not ((pts[on, 0] >= 0) & (pts[on, 0] <= W) & (pts[on, 1] >= 0) & (pts[on, 1] <= H)).all():
            self.add(record, "keypoints_inside", f"a labelled keypoint leaves the {W}x{H} image")
        if a.get("num_keypoints") != int(on.sum()):
            self.add(record, "keypoints", f"num_keypoints {a.get('num_keypoints')!r} != labelled keypoints "
                     f"{int(on.sum())}")

    def amodal(self, record: str, a: dict[str, Any], vis: dict[str, Any], pixels: int,
               img: dict[str, Any]) -> None:
        if "amodal_segmentation" not in a or "amodal_bbox" not in a:
            self.add(record, "label_amodal",
                     "label type 'amodal' needs amodal_segmentation and amodal_bbox")
            return
        amo = self.rle(record, "amodal_segmentation", a["amodal_segmentation"], img)
        if amo is None:
            return
        self.box(record, "amodal_bbox", a["amodal_bbox"], amo, img)
        inside = int(mask_utils.area(mask_utils.merge([vis, amo], intersect=True)))
        if inside != pixels:
            self.add(record, "amodal_contains",
                     f"{pixels - inside} visible pixels lie outside the amodal mask")
        full = int(mask_utils.area(amo))
        v = a.get("visibility")
        if isinstance(v, NUMBER) and full > 0 and abs(v - inside / full) > 1e-5:
            self.add(record, "visibility", f"visibility {v} != visible/amodal {inside}/{full}")

    def pose(self, record: str, pose: Any) -> None:
        try:
            m = np.asarray(pose, dtype=float)
        except (TypeError, ValueError):
            m = np.zeros(0)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            self.add(record, "pose", f"pose must be a finite 4x4 matrix, but got "
                     f"{json.dumps(pose)[:80]}")
            return
        r = m[:3, :3]
        err, det = float(np.abs(r.T @ r - np.eye(3)).max()), float(np.linalg.det(r))
        if err > 1e-4 or det < 0:
            self.add(record, "pose", f"pose rotation must be orthonormal with det +1, but "
                     f"|RᵀR − I| = {err:.2g}, det = {det:.3g}")
        if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
            self.add(record, "pose", f"pose last row must be [0, 0, 0, 1], but got {m[3].tolist()}")

    # ------------------------------------------------------------ files
    def files(self, images: dict[int, dict[str, Any]], cat_ids: set[int], progress: bool) -> None:
        """sha256 of every listed file; missing/extra files; decode images, depth, semantic."""
        listed = self.shard.manifest.get("files")
        listed = listed if isinstance(listed, dict) else {}
        on_disk = {p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                   if p.is_file()} - SKIP_FILES
        needs: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        for img in images.values():
            for key, kind in FILE_KEYS:
                if isinstance(img.get(key), str):
                    needs.setdefault(img[key], []).append((f"image {img['id']}", kind, img))
        for rel in sorted(set(listed) - on_disk):
            self.add(f"file {rel}", "missing_file", "listed in the manifest, absent from the shard")
        for rel in sorted(on_disk - set(listed)):
            self.add(f"file {rel}", "extra_file", "in the shard, not listed in the manifest")
        todo = sorted(set(listed) | set(needs))
        for rel in progress_bar(None, "files", "file", show=progress, iterable=todo):
            data = self._read(rel, rel in on_disk)
            digest = hashlib.sha256(data).hexdigest() if data is not None else None
            if digest is not None and rel in listed and digest != listed[rel]:
                self.add(f"file {rel}", "sha256",
                         f"sha256 {digest[:16]}… != manifest {str(listed[rel])[:16]}…")
            for record, kind, img in needs.get(rel, []):
                if data is None:
                    self.add(record, f"{kind}_file", f"{kind} file {rel!r} is not in the shard")
                else:
                    self.decode(record, kind, rel, data, img, cat_ids)
        self.report.n_files = len(todo)

    def _read(self, rel: str, exists: bool) -> bytes | None:
        if not exists or Path(rel).is_absolute() or ".." in Path(rel).parts:
            return None
        try:
            return (self.root / rel).read_bytes()
        except OSError:
            return None

    def decode(self, record: str, kind: str, rel: str, data: bytes, img: dict[str, Any],
               cat_ids: set[int]) -> None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                mode, size = im.mode, im.size
                arr = np.asarray(im) if kind == "semantic" else None
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, …
            self.add(record, f"{kind}_decode", f"{rel} does not decode: {exc}")
            return
        if size != (img["width"], img["height"]):
            self.add(record, f"{kind}_size", f"{rel} is {size[0]}x{size[1]}, but the image "
                     f"declares {img['width']}x{img['height']}")
        if kind == "depth" and not mode.startswith("I;16"):
            self.add(record, "depth_dtype", f"{rel} must be a uint16 PNG, but has mode {mode!r}")
        if kind == "semantic" and arr is not None:
            bad = sorted(set(np.unique(arr).tolist()) - cat_ids - {0})
            if mode != "L" or bad:
                self.add(record, "semantic", f"{rel} must hold uint8 category ids, but has "
                         f"mode {mode!r} and unknown ids {bad[:5]}")

    def counts(self, coco: dict[str, Any]) -> None:
        counts = self.shard.manifest.get("counts")
        for key in ("images", "annotations"):
            if isinstance(counts, dict) and counts.get(key) != len(coco[key]):
                self.add("manifest", "counts", f"counts.{key} = {counts.get(key)!r}, but "
                         f"annotations.json has {len(coco[key])}")


def validate_shard(path: str | Path, box_tolerance: float = 0.0,
                   progress: bool = False) -> QCReport:
    """Check every record of the shard at ``path``; see the module docstring for the checks.

    Raises :class:`~generator.errors.ShardError` only when ``path`` is not a shard at all (no
    directory, no readable manifest); every other problem becomes an :class:`Issue`.
    """
    if not box_tolerance >= 0:
        raise ConfigError(f"--box-tolerance: must be >= 0 pixels, but got {box_tolerance!r}")
    shard = Shard(path)
    if not isinstance(shard.manifest, dict):
        raise ShardError(f"shard: {shard.path / 'manifest.json'} must hold a JSON object, but "
                         f"holds {type(shard.manifest).__name__}; render or import the shard again")
    c = _Checker(shard, box_tolerance)
    c.manifest()
    coco = c.coco()
    images: dict[int, dict[str, Any]] = {}
    cats: dict[int, dict[str, Any]] = {}
    if coco is not None:
        images = c.table("image", coco["images"])
        cats = c.table("category", coco["categories"])
        anns = c.table("annotation", coco["annotations"])
        c.categories(cats)
        for img in images.values():
            c.image(img)
        for a in progress_bar(None, "annotations", "ann", show=progress, iterable=anns.values()):
            c.annotation(a, images, cats)
        c.counts(coco)
        c.report.n_images, c.report.n_annotations = len(coco["images"]), len(coco["annotations"])
    c.files(images, set(cats), progress)
    return c.report


def require_coco(shard: Shard) -> dict[str, Any]:
    """The shard's COCO dict, or a one-line ShardError when its top level is malformed.

    For tools that read shards (coverage, preview, export) and trust the rest: deeper
    problems are what ``synthloop validate`` reports.
    """
    coco = shard.coco
    bad = [k for k in TOP_LEVEL if not isinstance(coco, dict) or not isinstance(coco.get(k), list)]
    if bad:
        raise ShardError(f"shard: {shard.path / 'annotations.json'} needs lists {bad}, but they "
                         f"are missing or not lists; run `synthloop validate {shard.path}`")
    return coco
