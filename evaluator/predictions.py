"""Read any detector's COCO results file as the evaluator's predictions (``evaluate --predictions``).

A COCO *results* file is a JSON list of detections::

    [{"image_id": 3, "category_id": 1, "bbox": [x, y, w, h], "score": 0.87}, ...]

``image_id`` and ``category_id`` are the shard's own ids (``annotations.json``); instead of
``image_id`` a detection may name its image by ``file_name`` (the shard's ``file_name``, or its
base name when that is unique). Other keys (``id``, ``area``, ``iscrowd``, ``segmentation``)
are ignored: the report is box-only. Duplicates are kept, as a detector may emit them.

:func:`load_predictions` checks every detection and converts the list to exactly the
representation :func:`evaluator.predict.predict_shard` returns for a model (through the same
``_as_results``), so the report is computed by the same code from the same input.
Every refusal is one line naming the field, the rule, the value and the fix
(:class:`generator.errors.DataError`, exit 2), raised before anything is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from evaluator.predict import _as_results, _sha256_path
from generator.errors import ConfigError, DataError, is_number
from generator.shard import Shard

FLAG = "--predictions"
_DETECTION = '{"image_id", "category_id", "bbox": [x, y, w, h], "score"}'
_FORMAT = f"a JSON list of {_DETECTION}"


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _bad(where: str, rule: str, value: Any, fix: str) -> DataError:
    return DataError(f"{FLAG}: {where}: {rule}, but got {_short(value)}; {fix}")


def _number(v: Any) -> bool:
    return is_number(v)


def _int_id(v: Any) -> int | None:
    """An integer id, also written as an integral float (3.0, as pandas writes); else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{FLAG}: {str(path)!r} does not exist or is not a file; pass a COCO "
                          "results JSON file written by your detector")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError as exc:
        raise DataError(f"{FLAG}: {str(path)!r} is not UTF-8 JSON text ({exc.reason} at byte "
                        f"{exc.start}); pass {_FORMAT}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{FLAG}: {str(path)!r} is not JSON ({exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}); pass {_FORMAT}") from exc


def _file_names(shard: Shard) -> dict[str, int]:
    """file_name (and unique base names) → image id."""
    names: dict[str, int] = {}
    bases: dict[str, list[int]] = {}
    for img in shard.coco["images"]:
        fn = str(img.get("file_name", ""))
        if fn:
            names[fn] = int(img["id"])
            bases.setdefault(Path(fn).name, []).append(int(img["id"]))
    for base, ids in bases.items():
        if len(ids) == 1:
            names.setdefault(base, ids[0])
    return names


def _image_id(i: int, d: dict[str, Any], names: dict[str, int]) -> tuple[int | None, Any]:
    """(image id or None when the image is not in the shard, the value given); raises for a
    detection that names no image or names it with the wrong type."""
    where = f"detections[{i}]"
    if "image_id" in d:
        iid = _int_id(d["image_id"])
        if iid is None:
            raise _bad(f"{where}.image_id", "must be an integer image id of the shard",
                       d["image_id"], "use the ids of the shard's annotations.json, or give "
                                      "file_name instead of image_id")
        if "file_name" in d and names.get(str(d["file_name"]), iid) != iid:
            raise _bad(f"{where}.file_name", f"must name the same image as image_id {iid}",
                       d["file_name"], "drop file_name or make the two agree")
        return iid, d["image_id"]
    if "file_name" in d:
        fn = d["file_name"]
        if not isinstance(fn, str):
            raise _bad(f"{where}.file_name", "must be a string (an image's file_name in the "
                       "shard)", fn, "or give the integer image_id")
        return names.get(fn), fn
    raise _bad(f"{where}.image_id", "is required (or file_name)", d,
               f"each detection is {_DETECTION}")


def _check(i: int, d: Any, category_ids: list[int]) -> None:
    where = f"detections[{i}]"
    if not isinstance(d, dict):
        raise _bad(where, "must be an object", d, f"each detection is {_DETECTION}")
    cid = _int_id(d.get("category_id"))
    if cid not in category_ids:
        fix = f"use the shard's category ids {category_ids} (annotations.json categories)"
        if cid == 0:
            fix += "; the ids are 1-based: add 1 to 0-based class indices"
        raise _bad(f"{where}.category_id", f"must be one of {category_ids}",
                   d.get("category_id"), fix)
    bbox = d.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise _bad(f"{where}.bbox", "must be 4 finite numbers [x, y, w, h]", bbox,
                   "write boxes as COCO [x, y, width, height] in pixels")
    if bbox[2] < 0 or bbox[3] < 0:
        raise _bad(f"{where}.bbox", "must have width and height >= 0", bbox,
                   "COCO boxes are [x, y, width, height], not [x1, y1, x2, y2]")
    if "score" not in d:
        raise _bad(f"{where}.score", "is required (a confidence in [0, 1])", d,
                   "add each detection's score")
    score = d["score"]
    if not (_number(score) and 0.0 <= score <= 1.0):
        raise _bad(f"{where}.score", "must be a finite number in [0, 1]", score,
                   "write the detector's confidence (apply a sigmoid/softmax to logits)")


def load_predictions(path: str | Path, shard: Shard) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read and check a COCO results file against ``shard``.

    Returns the predictions as the evaluator's COCO results list (the form
    :func:`evaluator.predict.predict_shard` returns) and the report's source block
    ``{"predictions": path, "sha256": file hash, "detections": N}``.
    Raises :class:`DataError` (or :class:`ConfigError` for a missing file), one line each.
    """
    p = Path(path)
    data = _read(p)
    if not isinstance(data, list):
        hint = (" (a COCO dataset file? pass its detections as a list)"
                if isinstance(data, dict) and "annotations" in data else "")
        raise DataError(f"{FLAG}: {str(p)!r} must hold a JSON list of detections, but holds a "
                        f"{type(data).__name__}{hint}; pass {_FORMAT}")
    category_ids = sorted(int(c["id"]) for c in shard.coco["categories"])
    image_ids = {int(img["id"]) for img in shard.coco["images"]}
    names = _file_names(shard)
    ids: list[int] = []
    outside: list[tuple[int, str, Any]] = []
    for i, d in enumerate(data):
        _check(i, d, category_ids)
        iid, given = _image_id(i, d, names)
        if iid is None or iid not in image_ids:
            key = "image_id" if "image_id" in d else "file_name"
            outside.append((i, key, given))
            continue
        ids.append(iid)
    if outside:
        i, key, given = outside[0]
        raise DataError(
            f"{FLAG}: {len(outside)} of {len(data)} detections are for images not in shard "
            f"{str(shard.path)!r} (e.g. detections[{i}].{key} = {_short(given)}); the file "
            f"was likely made on another shard: pass the --data it was predicted on, or use "
            f"the image ids of {str(shard.path / 'annotations.json')!r}")
    predictions: list[dict[str, Any]] = []
    for iid, d in zip(ids, data, strict=True):
        predictions.extend(_as_results(iid, [{k: d[k] for k in ("bbox", "category_id", "score")}]))
    source = {"predictions": str(path), "sha256": _sha256_path(p), "detections": len(data)}
    return predictions, source
