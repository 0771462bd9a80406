"""Import an Ultralytics-style YOLO detection dataset as a shard (kind ``imported``).

Layout read (what :mod:`generator.export_yolo` writes, and what Ultralytics, Roboflow & co. use)::

    data.yaml              path (dataset root), train / val / test (image folders), names
    images/train/a.png     any image PIL decodes; EXIF orientation is applied (as YOLO tools do)
    labels/train/a.txt     one line per object: ``class cx cy w h``, normalised to [0, 1]

An image's label file is its path with the last ``images`` folder replaced by ``labels`` and
the suffix by ``.txt``; an image without a label file has no objects (the YOLO convention).
``names`` is a list or an ``{id: name}`` dict; names map to the scenario's classes by exact
name, or through ``--classes MAP.yaml`` (``{dataset name: scenario class}``, ``null`` = drop).

The machinery is :mod:`generator.real.coco_import`'s: every image and label line is checked, bad
ones are listed in ``rejected.json`` with file, line, reason and detail, and the valid subset
is written atomically through :class:`generator.shard.ShardWriter` (boxes filled as masks,
edges within :data:`SNAP_PX` of a pixel boundary snapped onto it, so an exported shard comes
back with the same boxes).

Rejection reasons
-----------------
images: ``outside_dataset_root`` (a symlink or path leading out of ``path``),
``unreadable_image_file``, ``unreadable_label_file`` (not UTF-8 text, or leading out of the
root), ``incomplete_labels`` (one of its lines is broken: keeping the image would leave a real
object unlabelled, so the whole image goes).

label lines: ``wrong_field_count`` (not 5 fields: segment polygons are not imported),
``bad_number`` (not a number, or NaN/inf), ``class_out_of_range`` (class id not in ``names``),
``coordinate_out_of_range`` (a value outside [0, 1]), ``degenerate_box`` (w or h = 0),
``box_outside_image`` (more than 1 px past the edge), ``box_too_small`` (fewer than 4 pixels),
``class_dropped`` (mapped to null by ``--classes``: filtered, the image stays),
``duplicate_line`` (an exact repeat: dropped, the image stays), ``image_rejected``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator import GENERATOR_VERSION
from generator.errors import DataError, is_int
from generator.real.coco_import import (
    BOX_TOLERANCE,
    ImportReport,
    box_mask,
    decode_image_file,
    finish_import,
    import_info,
    inside_root,
    nothing_valid,
)
from generator.shard import MIN_VISIBLE_PIXELS, ImageRecord, ObjectRecord, ShardWriter
from generator.validation import load_yaml_or_json

IMPORTER_VERSION = "yolo-import/1"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"}
SNAP_PX = 0.01  # a box edge this close to a pixel boundary is on it (6-decimal normalisation)
# a line rejected for one of these leaves a real object unlabelled: its image goes too
BROKEN_LINE_REASONS = {
    "wrong_field_count", "bad_number", "class_out_of_range", "coordinate_out_of_range",
    "degenerate_box", "box_outside_image", "box_too_small",
}  # fmt: skip


@dataclass(frozen=True)
class YoloDataset:
    yaml_path: Path
    root: Path  # the ``path`` field, resolved
    split: str
    split_dirs: tuple[Path, ...]
    names: dict[int, str]  # class id -> dataset class name


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in its label file
    cls: int
    box: tuple[float, float, float, float]  # cx, cy, w, h normalised


def _fail(field: str, rule: str, value: object, fix: str) -> DataError:
    return DataError(f"{field}: {rule}, but got {value!r}; {fix}")


def _yaml_file(data: str | Path) -> Path:
    p = Path(data)
    if p.is_dir():
        p = p / "data.yaml"
        if not p.is_file():
            raise _fail("--data", "a directory must hold data.yaml", str(data), "pass the data.yaml file itself")
    elif not p.is_file():
        raise _fail("--data", "must be a data.yaml file or the directory holding it", str(data), "check the path")
    return p


def _names(raw: Any, where: str) -> dict[int, str]:
    fix = "write names as a list ['a', 'b'] or a dict {0: a, 1: b}"
    if isinstance(raw, list) and raw:
        names = dict(enumerate(raw))
    elif isinstance(raw, dict) and raw:
        names = {}
        for k, v in raw.items():
            key = int(k) if isinstance(k, str) and k.strip().isdigit() else k
            if not is_int(key) or key < 0:
                raise _fail(f"{where} names", "ids must be integers >= 0", k, fix)
            names[key] = v
    else:
        raise _fail(f"{where} names", "must be a non-empty list or {id: name} dict", raw, fix)
    out = {k: str(v).strip() for k, v in names.items()}
    if any(not v for v in out.values()) or len(set(out.values())) != len(out):
        raise _fail(f"{where} names", "must be non-empty and unique", raw, fix)
    return out


def _split_dirs(doc: dict[str, Any], root: Path, split: str, where: str) -> tuple[Path, ...]:
    raw = doc.get(split)
    if raw is None:
        have = [s for s in SPLITS if doc.get(s)]
        raise _fail(f"{where} {split}", f"must name the {split} image folder", None,
                    f"pick --split from {have} or add '{split}: images/{split}' to data.yaml")
    entries = raw if isinstance(raw, list) else [raw]
    dirs: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise _fail(f"{where} {split}", "must be a folder path (or a list of them)", raw, "fix data.yaml")
        rel = entry
        if not (root / rel).exists() and rel.startswith("../"):  # Roboflow's "../train/images"
            rel = rel[3:]
        d = inside_root(root, rel)
        if d is None:
            raise _fail(f"{where} {split}", f"must be a folder inside the dataset root {str(root)!r}", entry,
                        "move the images under 'path' or point 'path' at a folder that holds them")
        if not d.is_dir():
            raise _fail(f"{where} {split}", "must be an existing image folder (list files are not read)", entry,
                        "point it at the folder of images")
        dirs.append(root / rel)
    return tuple(dirs)


def load_dataset(data: str | Path, split: str = "train") -> YoloDataset:
    """Read and check ``data.yaml``; DataError (one line: field, rule, value, fix) when it is not
    a usable YOLO dataset description."""
    if split not in SPLITS:
        raise _fail("--split", f"must be one of {', '.join(SPLITS)}", split, "pick one of them")
    path = _yaml_file(data)
    where = str(path)
    doc = load_yaml_or_json(path, "--data", DataError)
    if not isinstance(doc, dict):
        raise _fail("--data", "data.yaml must be a mapping with path, train/val/test and names",
                    type(doc).__name__, "pass a YOLO data.yaml")
    raw_root = doc.get("path")
    if raw_root is not None and not isinstance(raw_root, str):
        raise _fail(f"{where} path", "must be a folder path", raw_root, "fix data.yaml")
    root = (path.parent / raw_root) if raw_root else path.parent  # absolute raw_root wins in the join
    if not root.is_dir():
        raise _fail(f"{where} path", "must be the dataset's root folder", raw_root,
                    "set it to the folder holding images/ and labels/ (a path relative to data.yaml works)")
    root = root.resolve()
    names = _names(doc.get("names"), where)
    nc = doc.get("nc")
    if nc is not None and nc != len(names):
        raise _fail(f"{where} nc", f"must equal the number of names ({len(names)})", nc, "fix nc or names")
    return YoloDataset(path, root, split, _split_dirs(doc, root, split, where), names)


def load_class_map(
    path: str | Path | None, names: dict[int, str], classes: list[str], scenario: str
) -> dict[str, str | None]:
    """Dataset class name -> scenario class (None = dropped). Without a map, names map to
    themselves; DataError when a name is no scenario class after mapping, or the map names a
    class the dataset does not have."""
    mapping: dict[str, str | None] = {n: n for n in names.values()}
    if path is not None:
        raw = load_yaml_or_json(path, "--classes", DataError)
        if not isinstance(raw, dict):
            raise _fail("--classes", "must be a YAML mapping {dataset name: scenario class}", raw,
                        'e.g. {"seven": "7"}; map a class to null to drop it')
        for k, v in raw.items():
            if str(k) not in mapping:
                raise _fail(f"--classes {k}", f"must be a dataset class name ({', '.join(names.values())})", k,
                            "fix the key (names are in data.yaml)")
            if (v is not None and not isinstance(v, str | int)) or isinstance(v, bool):
                raise _fail(f"--classes {k}", "must map to a scenario class name or null", v, "fix the value")
            mapping[str(k)] = None if v is None else str(v)
    unknown = sorted({str(v) for v in mapping.values() if v is not None and v not in classes})
    if unknown:
        raise DataError(
            f"--classes: dataset class names must map to classes of scenario {scenario!r} "
            f"({', '.join(classes)}), but {unknown} do not; pass --classes MAP.yaml mapping each "
            "dataset name to a scenario class (or to null to drop it), or pick the matching --scenario"
        )
    if all(v is None for v in mapping.values()):
        raise _fail("--classes", "must keep at least one class", path, "map a class to a scenario class")
    return mapping


def _walk_images(ds: YoloDataset, report: ImportReport) -> Iterator[str]:
    """Image paths relative to the root, sorted, symlinks followed inside the root only (a link
    leading out is rejected as ``outside_dataset_root``; loops are visited once)."""
    seen: set[Path] = set()
    found: list[str] = []
    for top in ds.split_dirs:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            here = Path(dirpath)
            real = here.resolve()
            if real in seen or not real.is_relative_to(ds.root):
                if not real.is_relative_to(ds.root):
                    rel = os.path.relpath(here, ds.root)
                    report.reject("images", {"file_name": rel}, "outside_dataset_root",
                                  f"folder {rel!r} leads to {str(real)!r}, outside {str(ds.root)!r}")
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames.sort()
            for f in filenames:
                if Path(f).suffix.lower() in IMAGE_SUFFIXES:
                    found.append(os.path.relpath(here / f, ds.root))
    yield from sorted(dict.fromkeys(found))


def label_path(rel_image: str) -> str:
    """The label file of an image (Ultralytics' rule): last ``images`` folder -> ``labels``,
    suffix -> ``.txt``."""
    parts = list(Path(rel_image).parts)
    idx = max((i for i, p in enumerate(parts[:-1]) if p == "images"), default=None)
    if idx is not None:
        parts[idx] = "labels"
    return str(Path(*parts).with_suffix(".txt"))


def _parse_line(text: str, number: int, names: dict[int, str]) -> tuple[Line | None, tuple[str, str] | None]:
    fields = text.split()
    if len(fields) != 5:
        extra = "; segment polygons are not imported, export boxes (task detect)" if len(fields) > 5 else ""
        return None, ("wrong_field_count", f"{len(fields)} fields, need 5: class cx cy w h{extra}")
    try:
        cls_f = float(fields[0])
        vals = [float(v) for v in fields[1:]]
    except ValueError:
        return None, ("bad_number", f"{text!r} is not 5 numbers")
    if not math.isfinite(cls_f) or not all(math.isfinite(v) for v in vals):
        return None, ("bad_number", f"{text!r} has a non-finite value")
    if cls_f != int(cls_f) or int(cls_f) not in names:
        return None, ("class_out_of_range", f"class {fields[0]} is not in names (ids {min(names)}..{max(names)})")
    if any(v < 0.0 or v > 1.0 for v in vals):
        return None, ("coordinate_out_of_range", f"cx cy w h {fields[1:]} must lie in [0, 1]")
    if vals[2] <= 0.0 or vals[3] <= 0.0:
        return None, ("degenerate_box", f"w {fields[3]} h {fields[4]}: the box has no area")
    cx, cy, bw, bh = vals
    return Line(number, int(cls_f), (cx, cy, bw, bh)), None


def _read_labels(ds: YoloDataset, rel_label: str) -> tuple[list[tuple[int, str]] | None, str, tuple[str, str] | None]:
    """(numbered non-blank lines, sha256, None); ([], "", None) when there is no label file;
    (None, "", (reason, detail)) when it cannot be read."""
    path = ds.root / rel_label
    if not path.exists() and not path.is_symlink():
        return [], "", None
    real = inside_root(ds.root, rel_label)
    if real is None or not real.is_file():
        return None, "", ("unreadable_label_file", f"{rel_label!r} is not a file under {str(ds.root)!r}")
    try:
        data = real.read_bytes()
        text = data.decode("utf-8-sig")  # a BOM from a Windows editor is not part of line 1
    except (OSError, UnicodeDecodeError) as exc:
        return None, "", ("unreadable_label_file", f"{rel_label!r}: {exc}")
    lines = [(n, t.strip()) for n, t in enumerate(text.splitlines(), start=1) if t.strip()]
    return lines, hashlib.sha256(data).hexdigest(), None


def _object(line: Line, h: int, w: int, names: dict[int, str], mapping: dict[str, str | None],
            classes: list[str]) -> tuple[ObjectRecord | None, tuple[str, str] | None]:
    cx, cy, bw, bh = line.box
    x, y, pw, ph = (cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + pw > w + t or y + ph > h + t:
        return None, ("box_outside_image", f"box [{x:.2f}, {y:.2f}, {pw:.2f}, {ph:.2f}] px exceeds the {w}x{h} image")
    mask = box_mask([x, y, pw, ph], h, w, snap=SNAP_PX)
    if int(mask.sum()) < MIN_VISIBLE_PIXELS:
        return None, ("box_too_small", f"box covers {int(mask.sum())} pixels (< {MIN_VISIBLE_PIXELS})")
    name = names[line.cls]
    target = mapping[name]
    if target is None:
        return None, ("class_dropped", f"class {name!r} is mapped to null by --classes")
    attrs = {"source_line": line.number, "source_category": name, "mask_source": "box",
             "source_bbox": [round(v, 4) for v in (x, y, pw, ph)]}
    return ObjectRecord(category_id=classes.index(target) + 1, mask=mask, attributes=attrs), None


def _import_image(index: int, ds: YoloDataset, rel: str, mapping: dict[str, str | None], classes: list[str],
                  report: ImportReport) -> tuple[ImageRecord | None, str, str]:
    """(record, image sha256, label sha256) or (None, "", "") with everything rejected."""
    rel_label = label_path(rel)
    where = {"file_name": rel}
    path = inside_root(ds.root, rel)
    if path is None:
        report.reject("images", where, "outside_dataset_root", f"{rel!r} leads out of {str(ds.root)!r}")
        return None, "", ""
    lines, label_sha, bad = _read_labels(ds, rel_label)
    if lines is None:
        report.reject("images", where, *(bad or ("unreadable_label_file", rel_label)))
        return None, "", ""
    arr, sha, bad = decode_image_file(path, rel, exif_transpose=True)
    if arr is None:
        report.reject("images", where, *(bad or ("unreadable_image_file", rel)))
        for n, _ in lines:
            report.reject("annotations", {"file": rel_label, "line": n}, "image_rejected",
                          f"image {rel!r} was rejected")
        return None, "", ""
    h, w = arr.shape[:2]
    good: list[tuple[int, ObjectRecord]] = []
    dropped: list[tuple[int, tuple[str, str]]] = []
    broken: list[tuple[int, tuple[str, str]]] = []
    seen: set[str] = set()
    for n, text in lines:
        line, verdict = _parse_line(text, n, ds.names)
        obj = None
        if line is not None:
            if text in seen:
                verdict = ("duplicate_line", "an exact repeat of an earlier line")
            else:
                obj, verdict = _object(line, h, w, ds.names, mapping, classes)
        seen.add(text)
        if obj is not None:
            good.append((n, obj))
        elif verdict is not None and verdict[0] in BROKEN_LINE_REASONS:
            broken.append((n, verdict))
        else:
            dropped.append((n, verdict or ("bad_number", text)))
    for n, verdict in dropped:
        report.reject("annotations", {"file": rel_label, "line": n}, *verdict)
    if broken:
        detail = f"lines {[n for n, _ in broken]} of {rel_label!r} are rejected"
        report.reject("images", where, "incomplete_labels", detail)
        for n, verdict in broken:
            report.reject("annotations", {"file": rel_label, "line": n}, *verdict)
        for n, _ in good:
            report.reject("annotations", {"file": rel_label, "line": n}, "image_rejected",
                          f"image {rel!r} has rejected lines")
        return None, "", ""
    report.images["valid"] += 1
    report.annotations["valid"] += len(good)
    report.mask_sources["box"] += len(good)
    for _, o in good:
        o.attributes["source_label_file"] = rel_label
    conditions = {"source_file_name": rel, "source_label_file": rel_label if label_sha else None}
    return ImageRecord(index=index, image=arr, objects=[o for _, o in good], conditions=conditions), sha, label_sha


def import_yolo(
    data: str | Path,
    out: str | Path,
    split: str = "train",
    classes_map: str | Path | None = None,
    scenario: str = "digits",
    overwrite: bool = False,
    progress: bool = False,
) -> ImportReport:
    """Validate split ``split`` of the YOLO dataset ``data`` (data.yaml or its folder) and write
    its valid subset as an ``imported`` shard at ``out``; nothing is written when nothing is valid."""
    from generator.progress import bar as progress_bar  # a bar on a terminal only
    from generator.scenario import load_scenario

    ds = load_dataset(data, split)
    scen = load_scenario(scenario)
    mapping = load_class_map(classes_map, ds.names, scen.classes, scen.name)
    report = ImportReport(out=Path(out), name=f"{ds.root.name}-{split}")
    info = import_info(report.name, scen, IMPORTER_VERSION)
    shas: dict[str, str] = {}
    label_shas: dict[str, str] = {}
    with ShardWriter(out, info, overwrite) as writer:
        images = list(_walk_images(ds, report))
        for rel in progress_bar(None, "import", "img", show=progress, leave=False, iterable=images):
            record, sha, label_sha = _import_image(len(shas), ds, rel, mapping, scen.classes, report)
            if record is not None:
                writer.add_record(record)
                shas[rel] = sha
                if label_sha:
                    label_shas[label_path(rel)] = label_sha
        _check_something_valid(ds, report)
        yaml_sha = hashlib.sha256(ds.yaml_path.read_bytes()).hexdigest()
        inputs = {
            "importer": IMPORTER_VERSION, "generator_version": GENERATOR_VERSION, "data_yaml_sha256": yaml_sha,
            "split": split, "class_map": mapping, "scenario_spec_sha256": scen.spec_hash(),
            "image_sha256": dict(sorted(shas.items())), "label_sha256": dict(sorted(label_shas.items())),
        }  # fmt: skip
        source = {
            "format": "yolo", "data_yaml": str(ds.yaml_path.resolve()), "data_yaml_sha256": yaml_sha,
            "root": str(ds.root), "split": split, "names": {str(k): v for k, v in sorted(ds.names.items())},
            "class_map": mapping, "snap_px": SNAP_PX,
        }  # fmt: skip
        finish_import(writer, info, inputs, source, report)
    report.fingerprint = info["fingerprint"]
    return report


def _check_something_valid(ds: YoloDataset, report: ImportReport) -> None:
    where = f"--data {ds.split}"
    if report.images["valid"] == 0:
        examples = [f"{r.get('file_name')}: {r['reason']}" for r in report.rejected_images[:3]]
        if not examples:
            exts = ", ".join(sorted(IMAGE_SUFFIXES))
            raise _fail(where, f"must hold image files ({exts})", [str(d) for d in ds.split_dirs],
                        f"point '{ds.split}' in data.yaml at the image folder; nothing was written")
        raise nothing_valid(where, "image", ds.yaml_path, report, examples,
                            "fix those files or pick another --split")
    if report.annotations["valid"] == 0:
        examples = [f"{r.get('file')}:{r.get('line')}: {r['reason']}" for r in report.rejected_annotations[:3]]
        raise nothing_valid(where, "labelled object", ds.yaml_path, report, examples,
                            "add label files (labels/ beside images/, lines 'class cx cy w h') or fix them")
