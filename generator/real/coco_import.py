"""Import a user's COCO dataset as a shard (kind ``imported``), keeping only valid records.

Every image and annotation is checked; a bad one is rejected with a reason and its id, and the
valid subset is written through :class:`generator.shard.ShardWriter` (images re-encoded as PNG,
category ids renumbered to the scenario's classes, boxes recomputed from masks). Counts per
reason go to the manifest (``import.counts``); the full list goes to ``rejected.json`` in the
shard. Nothing is written when the file is not COCO or nothing valid remains.

Rejection reasons
-----------------
images: ``bad_image_record`` (no int id / file name, bad width or height),
``duplicate_image_id`` (every copy), ``missing_image_file`` (absent, or outside ``--images``),
``unreadable_image_file``, ``image_size_mismatch`` (file size ≠ width/height in the record),
``incomplete_labels`` (one of its annotations is broken: keeping the image would leave a real
object unlabelled, so the whole image goes).

annotations: ``bad_annotation_record`` (no int id / image_id / category_id, bbox not 4
numbers), ``duplicate_annotation_id`` (every copy), ``image_not_found``, ``unknown_category``
(id not in ``categories``, or defined twice), ``category_not_in_scenario`` (its category name
is no scenario class: filtered, the image stays), ``degenerate_box`` (w or h ≤ 0, or area 0),
``box_outside_image`` (more than :data:`BOX_TOLERANCE` px outside), ``crowd`` (iscrowd=1),
``bad_segmentation`` (undecodable or wrong size), ``empty_mask`` (fewer than 4 pixels),
``image_rejected`` (valid itself, but its image was rejected).

Masks come from ``segmentation`` (polygons or RLE, via pycocotools) when present, else the box
is filled; ``mask_source`` in the manifest says which (``segmentation`` / ``box`` / ``mixed``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from generator import GENERATOR_VERSION, atomic
from generator.errors import DataError, is_int, is_number
from generator.fingerprint import fingerprint
from generator.shard import MIN_VISIBLE_PIXELS, ImageRecord, ObjectRecord, ShardWriter

IMPORTER_VERSION = "coco-import/1"
BOX_TOLERANCE = 1.0  # pixels a box may extend past the image edge (rounding in exporters)
REJECTED_FILE = "rejected.json"
Groups = dict[int, list[tuple[dict[str, Any], tuple[str, str] | None]]]
# an annotation rejected for one of these leaves a real object unlabelled: its image goes too
BROKEN_LABEL_REASONS = {
    "bad_annotation_record", "duplicate_annotation_id", "unknown_category", "degenerate_box",
    "box_outside_image", "crowd", "bad_segmentation", "empty_mask",
}  # fmt: skip


@dataclass
class ImportReport:
    out: Path
    name: str
    fingerprint: str = ""
    images: Counter[str] = field(default_factory=Counter)  # "valid" + rejection reasons
    annotations: Counter[str] = field(default_factory=Counter)
    rejected_images: list[dict[str, Any]] = field(default_factory=list)
    rejected_annotations: list[dict[str, Any]] = field(default_factory=list)
    mask_sources: Counter[str] = field(default_factory=Counter)

    def reject(self, kind: str, where: dict[str, Any], reason: str, detail: str) -> None:
        """Count one rejected record of ``kind`` (``images`` / ``annotations``) and list it with
        ``where`` (the fields that locate it: ids, or file and line) plus reason and detail."""
        counter, listed = (
            (self.images, self.rejected_images) if kind == "images" else (self.annotations, self.rejected_annotations)
        )
        counter[reason] += 1
        listed.append({**where, "reason": reason, "detail": detail})

    def reject_image(self, img: Any, reason: str, detail: str) -> None:
        d = img if isinstance(img, dict) else {}
        self.reject("images", {"id": d.get("id"), "file_name": d.get("file_name")}, reason, detail)

    def reject_annotation(self, a: Any, reason: str, detail: str) -> None:
        d = a if isinstance(a, dict) else {}
        self.reject("annotations", {"id": d.get("id"), "image_id": d.get("image_id")}, reason, detail)

    @staticmethod
    def _summary(c: Counter[str]) -> dict[str, Any]:
        reasons = {k: v for k, v in sorted(c.items()) if k != "valid"}
        return {"total": sum(c.values()), "valid": c["valid"], "rejected": sum(reasons.values()), "by_reason": reasons}

    def counts(self) -> dict[str, Any]:
        return {"images": self._summary(self.images), "annotations": self._summary(self.annotations)}

    @property
    def mask_source(self) -> str:
        kinds = sorted(k for k, v in self.mask_sources.items() if v)
        return kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "none")


def _is_int(v: Any) -> bool:
    return is_int(v)


def _id_order(record: dict[str, Any]) -> tuple[bool, int]:
    """Rejected records sorted by id; records without an int id last, in file order."""
    rid = record.get("id")
    return (False, rid) if is_int(rid) else (True, 0)


def load_coco(path: str | Path) -> dict[str, Any]:
    """Read a COCO JSON file; DataError unless it holds lists ``images``, ``annotations`` and
    ``categories``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--annotations: file {str(p)!r} does not exist; pass the COCO JSON file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--annotations: {str(p)!r} is not valid JSON ({exc}); pass a COCO JSON file") from exc
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in keys):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"--annotations: a COCO file needs lists 'images', 'annotations' and 'categories', "
            f"but {str(p)!r} has {found}; export it in COCO format"
        )
    return data


def map_categories(categories: list[Any], classes: list[str], scenario: str) -> tuple[dict[int, str], dict[int, str]]:
    """(COCO category id → name for well-formed, unique ids; id → scenario class by exact name).

    Raises DataError when no category name is a scenario class.
    """
    ids = _int_ids(categories)
    names: dict[int, str] = {}
    for c in categories:
        if isinstance(c, dict) and _is_int(c.get("id")) and ids[c["id"]] == 1 and "name" in c:
            names[c["id"]] = str(c["name"]).strip()
    mapped = {cid: n for cid, n in names.items() if n in classes}
    if not mapped:
        raise DataError(
            f"--scenario: no COCO category name matches a class of scenario {scenario!r} "
            f"({', '.join(classes)}); the file has {sorted(set(names.values()))}; rename the "
            "categories or pick the scenario whose classes they are"
        )
    return names, mapped


def _image_record_ok(img: Any) -> bool:
    if not isinstance(img, dict) or not _is_int(img.get("id")):
        return False
    sizes_ok = all(_is_int(img.get(k, 1)) and img.get(k, 1) > 0 for k in ("width", "height"))
    return isinstance(img.get("file_name"), str) and bool(img["file_name"]) and sizes_ok


def _bbox_ok(bbox: Any) -> bool:
    def num(v: Any) -> bool:
        return is_number(v)

    return isinstance(bbox, list) and len(bbox) == 4 and all(num(v) for v in bbox)


def _int_ids(records: list[Any], key: str = "id") -> Counter[int]:
    return Counter(r[key] for r in records if isinstance(r, dict) and _is_int(r.get(key)))


def _check_images(images: list[Any], report: ImportReport) -> dict[int, dict[str, Any]]:
    """Well-formed images with unique ids, by id (file checks happen when decoding)."""
    ids = _int_ids(images)
    good: dict[int, dict[str, Any]] = {}
    for img in images:
        if not _image_record_ok(img):
            detail = "needs int id, file_name and positive int width/height"
            report.reject_image(img, "bad_image_record", detail)
        elif ids[img["id"]] > 1:
            detail = f"image id {img['id']} occurs {ids[img['id']]} times"
            report.reject_image(img, "duplicate_image_id", detail)
        else:
            good[img["id"]] = img
    return good


def _early_reason(
    a: Any,
    ids: Counter[Any],
    images: dict[int, Any],
    all_image_ids: set[Any],
    names: dict[int, str],
    mapped: dict[int, str],
) -> tuple[str, str] | None:
    """Checks that need no pixels: record shape, ids, image reference, category, box shape."""
    if not isinstance(a, dict) or not all(_is_int(a.get(k)) for k in ("id", "image_id", "category_id")):
        return "bad_annotation_record", "needs int id, image_id and category_id"
    bbox = a.get("bbox")
    if not _bbox_ok(bbox):
        return "bad_annotation_record", f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}"
    if ids[a["id"]] > 1:
        return "duplicate_annotation_id", f"annotation id {a['id']} occurs {ids[a['id']]} times"
    if a["image_id"] not in all_image_ids:
        return "image_not_found", f"no image has id {a['image_id']}"
    if a["image_id"] not in images:
        return "image_rejected", f"image {a['image_id']} was rejected"
    if a["category_id"] not in names:
        return "unknown_category", f"category id {a['category_id']} is not (uniquely) defined"
    if a["category_id"] not in mapped:
        return "category_not_in_scenario", f"category {names[a['category_id']]!r} is no scenario class"
    if a["bbox"][2] <= 0 or a["bbox"][3] <= 0 or ("area" in a and a["area"] == 0):
        return "degenerate_box", f"box {a['bbox']} has no area"
    if a.get("iscrowd", 0):
        return "crowd", "iscrowd=1 regions cannot be represented; export without crowd regions"
    return None


def _segmentation_mask(seg: Any, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polys = [[float(v) for v in p] for p in seg]
        if not polys or any(len(p) < 6 or len(p) % 2 for p in polys):
            raise ValueError("polygons need an even number (>= 6) of coordinates")
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list | str):
        if list(seg.get("size", [])) != [h, w]:
            raise ValueError(f"RLE size {seg.get('size')} is not the image size [{h}, {w}]")
        counts = seg["counts"]
        rle = (
            mask_utils.frPyObjects(seg, h, w)
            if isinstance(counts, list)
            else {"size": [h, w], "counts": counts.encode("ascii")}
        )
    else:
        raise ValueError("segmentation must be a list of polygons or an RLE dict")
    return mask_utils.decode(rle).astype(bool)


def box_mask(bbox: list[float], h: int, w: int, snap: float = 0.0) -> np.ndarray:
    """Every pixel the box ``[x, y, w, h]`` touches; an edge within ``snap`` px of a pixel
    boundary is moved onto it first (so rounding in a normalised format adds no pixel row)."""
    x, y, bw, bh = bbox

    def edge(v: float) -> float:
        return float(round(v)) if abs(v - round(v)) <= snap else v

    x0, y0, x1, y1 = edge(x), edge(y), edge(x + bw), edge(y + bh)
    mask = np.zeros((h, w), dtype=bool)
    mask[max(0, math.floor(y0)) : min(h, math.ceil(y1)), max(0, math.floor(x0)) : min(w, math.ceil(x1))] = True
    return mask


def _object(
    a: dict[str, Any], h: int, w: int, names: dict[int, str], classes: list[str]
) -> tuple[ObjectRecord | None, tuple[str, str] | None]:
    """Pixel-level checks and the mask; returns (object, None) or (None, (reason, detail))."""
    x, y, bw, bh = a["bbox"]
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + bw > w + t or y + bh > h + t:
        return None, ("box_outside_image", f"box {a['bbox']} exceeds the {w}x{h} image")
    seg = a.get("segmentation")
    source = "segmentation" if seg else "box"
    try:
        mask = _segmentation_mask(seg, h, w) if seg else box_mask(a["bbox"], h, w)
    except (ValueError, TypeError, KeyError, UnicodeEncodeError) as exc:
        return None, ("bad_segmentation", str(exc))
    if int(mask.sum()) < MIN_VISIBLE_PIXELS:
        return None, ("empty_mask", f"mask has {int(mask.sum())} pixels (< {MIN_VISIBLE_PIXELS})")
    name = names[a["category_id"]]
    attrs = {"source_annotation_id": a["id"], "source_category": name, "mask_source": source}
    return ObjectRecord(category_id=classes.index(name) + 1, mask=mask, attributes=attrs), None


def inside_root(root: Path, rel: str | Path) -> Path | None:
    """``root/rel`` resolved (symlinks followed) when it lies under ``root``, else None (also
    for ``..`` escapes, absolute paths elsewhere and unusable names such as a NUL byte)."""
    try:
        path = (root / rel).resolve()
        return path if path.is_relative_to(root.resolve()) else None
    except (OSError, ValueError):
        return None


def decode_image_file(
    path: Path, shown: str, exif_transpose: bool = False
) -> tuple[np.ndarray | None, str, tuple[str, str] | None]:
    """(RGB array, sha256 of the file, None) or (None, "", ("unreadable_image_file", detail)).
    ``exif_transpose`` applies the EXIF orientation (as YOLO tools do before labelling)."""
    from PIL import Image, ImageOps

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            oriented = ImageOps.exif_transpose(im) if exif_transpose else im
            arr = np.asarray(oriented.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return None, "", ("unreadable_image_file", f"{shown!r}: {exc}")
    return arr, hashlib.sha256(data).hexdigest(), None


def _read_image(root: Path, img: dict[str, Any]) -> tuple[np.ndarray | None, str, tuple[str, str] | None]:
    """(RGB array, sha256 of the file, None) or (None, "", (reason, detail))."""
    path = inside_root(root, img["file_name"])
    if path is None or not path.is_file():
        return None, "", ("missing_image_file", f"{img['file_name']!r} is not a file under {str(root)!r}")
    arr, sha, bad = decode_image_file(path, img["file_name"])
    if arr is None:
        return None, "", bad
    h, w = arr.shape[:2]
    if img.get("width", w) != w or img.get("height", h) != h:
        detail = f"file is {w}x{h}, record says {img.get('width')}x{img.get('height')}"
        return None, "", ("image_size_mismatch", detail)
    return arr, sha, None


def _group_annotations(
    coco: dict[str, Any],
    images: dict[int, dict[str, Any]],
    names: dict[int, str],
    mapped: dict[int, str],
    report: ImportReport,
) -> Groups:
    """Annotations per valid image with their early verdict; others are rejected right away."""
    anns = coco["annotations"]
    ids = _int_ids(anns)
    all_image_ids = set(_int_ids(coco["images"]))
    groups: Groups = {i: [] for i in images}
    for a in anns:
        verdict = _early_reason(a, ids, images, all_image_ids, names, mapped)
        image_id = a.get("image_id") if isinstance(a, dict) else None
        attachable = verdict is None or verdict[0] in BROKEN_LABEL_REASONS
        if is_int(image_id) and image_id in groups and attachable:
            groups[image_id].append((a, verdict))
        else:
            report.reject_annotation(a, *(verdict or ("image_not_found", f"no image has id {image_id}")))
    return groups


def _import_image(
    index: int,
    root: Path,
    img: dict[str, Any],
    entries: list[tuple[dict[str, Any], tuple[str, str] | None]],
    names: dict[int, str],
    classes: list[str],
    report: ImportReport,
) -> tuple[ImageRecord | None, str]:
    """Decode one image and build its objects; reject it whole if any annotation is broken."""
    arr, sha, bad = _read_image(root, img)
    if arr is None or bad is not None:
        report.reject_image(img, *(bad or ("unreadable_image_file", "")))
        for a, _ in entries:
            report.reject_annotation(a, "image_rejected", f"image {img['id']} was rejected")
        return None, ""
    h, w = arr.shape[:2]
    good: list[tuple[dict[str, Any], ObjectRecord]] = []
    broken: list[tuple[dict[str, Any], tuple[str, str]]] = []
    for a, verdict in entries:
        obj = None
        if verdict is None:
            obj, verdict = _object(a, h, w, names, classes)
        if obj is not None:
            good.append((a, obj))
        else:
            broken.append((a, verdict or ("bad_annotation_record", "")))
    if broken:
        report.reject_image(img, "incomplete_labels", f"annotations {[a.get('id') for a, _ in broken]} are rejected")
        for a, verdict in broken:
            report.reject_annotation(a, *verdict)
        for a, _ in good:
            report.reject_annotation(a, "image_rejected", f"image {img['id']} has rejected annotations")
        return None, ""
    report.images["valid"] += 1
    report.annotations["valid"] += len(good)
    report.mask_sources.update(o.attributes["mask_source"] for _, o in good)
    conditions = {"source_image_id": img["id"], "source_file_name": img["file_name"]}
    return ImageRecord(index=index, image=arr, objects=[o for _, o in good], conditions=conditions), sha


def nothing_valid(option: str, what: str, path: Path, report: ImportReport, examples: list[str], fix: str) -> DataError:
    """The one-line error of an import that kept nothing: ``option``, the rule (``what`` must
    remain), the rejection counts with up to 3 ``examples``, and the fix."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted((report.annotations + report.images).items()))
    example = f"; e.g. {'; '.join(examples[:3])}" if examples else ""
    return DataError(
        f"{option}: no valid {what} remains in {str(path)!r} (rejected: {reasons or 'none'}{example}); {fix}; "
        "nothing was written"
    )


def _nothing_valid(path: Path, report: ImportReport) -> DataError:
    examples = [f"annotation {r['id']}: {r['reason']}" for r in report.rejected_annotations[:3]]
    return nothing_valid("--annotations", "annotation", path, report, examples, "fix those records or check --images")


def import_info(name: str, scen: Any, importer_version: str) -> dict[str, Any]:
    """The manifest identity block of an ``imported`` shard for scenario ``scen``."""
    return {
        "name": name, "kind": "imported", "classes": list(scen.classes), "fingerprint": "",
        "scenario": {"name": scen.name, "version": scen.spec.version, "spec_sha256": scen.spec_hash()},
        "importer_version": importer_version, "generator_version": GENERATOR_VERSION,
    }  # fmt: skip


def finish_import(
    writer: ShardWriter,
    info: dict[str, Any],
    fingerprint_inputs: dict[str, Any],
    source: dict[str, Any],
    report: ImportReport,
) -> None:
    """Fingerprint (of ``fingerprint_inputs``) and the ``import`` record (``source`` fields +
    counts, mask source, rejected file) into the manifest info; ``rejected.json`` into the shard."""
    info["fingerprint"] = fingerprint(**fingerprint_inputs)
    rejected = {
        "counts": report.counts(),
        "images": sorted(report.rejected_images, key=_id_order),
        "annotations": sorted(report.rejected_annotations, key=_id_order),
    }
    atomic.write_json(writer.root / REJECTED_FILE, rejected)
    info["import"] = {
        **source,
        "mask_source": report.mask_source, "mask_source_counts": dict(sorted(report.mask_sources.items())),
        "counts": report.counts(), "box_tolerance_px": BOX_TOLERANCE,
        "rejected_file": REJECTED_FILE,
        "rejected_sha256": hashlib.sha256(atomic.dumps_json(rejected).encode()).hexdigest(),
    }  # fmt: skip


def import_coco(
    images_dir: str | Path,
    annotations: str | Path,
    out: str | Path,
    scenario: str = "digits",
    overwrite: bool = False,
    progress: bool = False,
) -> ImportReport:
    """Validate a COCO dataset and write its valid subset as an ``imported`` shard at ``out``."""
    from generator.scenario import load_scenario

    root, ann_path = Path(images_dir), Path(annotations)
    if not root.is_dir():
        raise DataError(f"--images: {str(root)!r} is not a directory; pass the folder holding the images")
    scen = load_scenario(scenario)
    coco = load_coco(ann_path)
    names, mapped = map_categories(coco["categories"], scen.classes, scen.name)
    report = ImportReport(out=Path(out), name=ann_path.stem)
    images = _check_images(coco["images"], report)
    groups = _group_annotations(coco, images, names, mapped, report)
    info = import_info(report.name, scen, IMPORTER_VERSION)
    with ShardWriter(out, info, overwrite) as writer:
        shas = _write_images(writer, root, images, groups, names, scen.classes, report, progress)
        if report.annotations["valid"] == 0:
            raise _nothing_valid(ann_path, report)
        _finish(writer, info, ann_path, shas, scen.spec_hash(), mapped, report)
    report.fingerprint = info["fingerprint"]
    return report


def _write_images(
    writer: ShardWriter,
    root: Path,
    images: dict[int, dict[str, Any]],
    groups: Groups,
    names: dict[int, str],
    classes: list[str],
    report: ImportReport,
    progress: bool,
) -> dict[str, str]:
    """Add every valid image to the shard; returns file name → sha256 of the source file."""
    from generator.progress import bar as progress_bar  # a bar on a terminal only

    shas: dict[str, str] = {}
    for img in progress_bar(None, "import", "img", show=progress, leave=False, iterable=list(images.values())):
        record, sha = _import_image(len(shas), root, img, groups[img["id"]], names, classes, report)
        if record is not None:
            writer.add_record(record)
            shas[img["file_name"]] = sha
    return shas


def _finish(
    writer: ShardWriter,
    info: dict[str, Any],
    ann_path: Path,
    shas: dict[str, str],
    spec_sha: str,
    mapped: dict[int, str],
    report: ImportReport,
) -> None:
    """Fingerprint and import record into the manifest info; rejected.json into the shard."""
    ann_sha = hashlib.sha256(ann_path.read_bytes()).hexdigest()
    inputs = {
        "importer": IMPORTER_VERSION, "generator_version": GENERATOR_VERSION, "annotations_sha256": ann_sha,
        "scenario_spec_sha256": spec_sha, "image_sha256": dict(sorted(shas.items())),
    }  # fmt: skip
    source = {
        "annotations_file": str(ann_path.resolve()), "annotations_sha256": ann_sha,
        "category_map": {str(k): v for k, v in sorted(mapped.items())},
    }
    finish_import(writer, info, inputs, source, report)
