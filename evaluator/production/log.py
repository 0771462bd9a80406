"""The production log format: one JSON object per line (JSONL), one line per camera frame.

A deployed model appends records to ``*.jsonl`` files under a log directory (any layout; files
are read in sorted path order). One record (docs/production.md has every rule)::

    {"id": "cam0-000123", "timestamp": "2024-01-01T03:00:00+00:00",
     "image": "../frames/batch-0003/000012.png", "model_version": "3f9c1e0d2a4b",
     "predictions": [{"bbox": [12.0, 30.5, 18.0, 25.0], "class": "7", "score": 0.91}],
     "labels": [{"bbox": [11.0, 30.0, 19.0, 26.0], "class": "7"}],
     "meta": {"camera": "sim"}}

- ``id`` (optional, non-empty string): the record's identity; without it the identity is
  ``timestamp|image|model_version``. A record whose identity was already ingested is a
  *duplicate* and is counted once.
- ``timestamp``: ISO 8601 **with** a UTC offset (``Z`` or ``+HH:MM``).
- ``image``: a path relative to the JSONL file's directory, an absolute path, or a ``file://``
  URI. It must resolve (symlinks followed) inside the *frames root* — by default the log
  directory's parent, where ``simulate-production`` keeps ``frames/`` beside ``log/`` — and be
  a decodable image of at most :data:`MAX_FRAME_BYTES` bytes and :data:`MAX_FRAME_PIXELS`
  pixels when the line is ingested. A log record never makes the reader open another file.
- ``model_version``: non-empty string naming the model that made ``predictions``.
- ``predictions``: the model's detections, ``bbox`` ``[x, y, w, h]`` in image pixels (finite,
  ``|v| <= MAX_COORD``, ``w, h > 0``, and inside ``[-W, 2W] × [-H, 2H]`` for a ``W × H``
  frame), ``class`` (a class name), ``score`` in ``[0, 1]``. Log everything down to a
  low score (0.05) so the confidence signals see the uncertain detections.
- ``labels`` (optional): reviewed true objects, ``bbox`` + ``class``. Absent or ``null`` = not
  reviewed; ``[]`` = reviewed, nothing there.
- ``meta`` (optional object): free-form; any other key makes the line malformed (a typo such
  as ``"lables"`` must not silently drop reviewed labels).

:func:`parse_line` turns one line into a :class:`ProductionRecord` or a :class:`Malformed`
(line number, field, rule, value) — never an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from generator.validation import first_error

FORMAT = "synthloop-production-log/1"
LOG_SUFFIX = ".jsonl"
MAX_VALUE_CHARS = 80  # how much of an offending value a Malformed entry keeps
MAX_FRAME_BYTES = 32 * 1024 * 1024  # a frame file larger than this is refused (32 MiB)
MAX_FRAME_PIXELS = 4096 * 4096  # a frame with more pixels than this is refused (16.8 MP)
MAX_COORD = 1e6  # no box coordinate may exceed this magnitude (pixels), whatever the frame

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True, frozen=True)


class Label(BaseModel):
    """A reviewed true object: box ``[x, y, w, h]`` in pixels and its class name."""

    model_config = _STRICT
    bbox: tuple[float, float, float, float]
    cls: str = Field(alias="class", min_length=1)

    @field_validator("bbox")
    @classmethod
    def _positive_size(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        if any(abs(c) > MAX_COORD for c in v):
            raise ValueError(f"coordinates must be within ±{MAX_COORD:g} pixels")
        if v[2] <= 0 or v[3] <= 0:
            raise ValueError("width and height must be > 0")
        return v


class Detection(Label):
    """A model detection: a :class:`Label` plus its ``score`` in [0, 1]."""

    score: float = Field(ge=0.0, le=1.0)


class ProductionRecord(BaseModel):
    """One frame seen by the deployed model (see the module docstring for every field)."""

    model_config = _STRICT
    id: str | None = Field(default=None, min_length=1)
    timestamp: AwareDatetime
    image: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    predictions: list[Detection]
    labels: list[Label] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity used to count a record once: ``id``, else ``timestamp|image|model_version``."""
        if self.id is not None:
            return f"id:{self.id}"
        return f"tim:{self.timestamp.isoformat()}|{self.image}|{self.model_version}"

    @property
    def reviewed(self) -> bool:
        return self.labels is not None


@dataclass(frozen=True)
class Malformed:
    """A line that was skipped: where (file relative to the log, 1-based line), which field,
    which rule it broke, and (a prefix of) the offending value."""

    file: str
    line: int
    field: str
    rule: str
    value: str

    def describe(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.rule} (got {self.value})"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "rule": self.rule,
                "value": self.value}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def resolve_image(image: str, base_dir: Path) -> Path | str:
    """The local path an ``image`` field names, or a one-line reason it names none."""
    if "://" in image:
        parsed = urlparse(image)
        if parsed.scheme != "file":
            return f"must be a local path or a file:// URI, but the scheme is {parsed.scheme!r}"
        return Path(unquote(parsed.path))
    path = Path(image)
    return path if path.is_absolute() else base_dir / path


def _first_error(exc: ValidationError) -> tuple[str, str, str]:
    e = first_error(exc)
    if e.kind == "json_invalid":
        return "record", "must be one JSON object per line", _short(e.value)
    return e.loc or "record", e.rule, _short(e.value)


def check_frame(path: Path, root: Path) -> tuple[Path, tuple[int, int]] | str:
    """``(resolved path, (width, height))`` of a frame that may be read, or a one-line reason it
    may not: it must resolve (symlinks followed) inside ``root``, be a regular file of at most
    :data:`MAX_FRAME_BYTES`, and decode as an image of at most :data:`MAX_FRAME_PIXELS`."""
    import warnings

    from PIL import Image

    real, top = path.resolve(), root.resolve()
    if not real.is_relative_to(top):
        return f"must resolve inside the frames root {str(top)!r} (symlinks followed); set frames_root"
    if not real.is_file():
        return "file must exist (paths are relative to the JSONL file)"
    size = real.stat().st_size
    if size > MAX_FRAME_BYTES:
        return f"frame file must be at most {MAX_FRAME_BYTES} bytes, but has {size}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(real) as im:
                width, height = im.size
                if width * height > MAX_FRAME_PIXELS:
                    return f"frame must have at most {MAX_FRAME_PIXELS} pixels, but is {width}x{height}"
                im.verify()
    except Exception as exc:  # PIL raises many types for a bad file: any of them means "not an image"
        return f"must be a decodable image ({type(exc).__name__})"
    return real, (width, height)


def _box_outside(bbox: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
    x, y, w, h = bbox
    width, height = size
    return x < -width or y < -height or x + w > 2 * width or y + h > 2 * height


def parse_line(text: str, file: str, line: int, base_dir: Path,
               classes: list[str] | None = None, root: Path | None = None) -> ProductionRecord | Malformed:
    """Validate one log line. ``classes`` (the model's class names), when given, restricts the
    ``class`` of predictions and labels; the image must pass :func:`check_frame` under ``root``
    (default ``base_dir``, the JSONL file's directory) and every box lie within
    ``[-W, 2W] × [-H, 2H]`` of the ``W × H`` frame."""
    try:
        record = ProductionRecord.model_validate_json(text)
    except ValidationError as exc:
        return Malformed(file, line, *_first_error(exc))
    where = resolve_image(record.image, base_dir)
    if isinstance(where, str):
        return Malformed(file, line, "image", where, _short(record.image))
    frame = check_frame(where, base_dir if root is None else root)
    if isinstance(frame, str):
        return Malformed(file, line, "image", frame, _short(record.image))
    for group in ("predictions", "labels"):
        for i, obj in enumerate(getattr(record, group) or []):
            if classes is not None and obj.cls not in classes:
                return Malformed(file, line, f"{group}.{i}.class",
                                 f"must be one of the model's classes {classes}", _short(obj.cls))
            if _box_outside(obj.bbox, frame[1]):
                w, h = frame[1]
                return Malformed(file, line, f"{group}.{i}.bbox", f"must lie within [-{w}, {2 * w}] x "
                                 f"[-{h}, {2 * h}] of the {w}x{h} frame", _short(list(obj.bbox)))
    return record


def record_line(record: dict[str, Any]) -> str:
    """One canonical log line (sorted keys, compact, newline-terminated) for a record dict;
    the dict is validated first, so a writer can never emit a line the reader rejects."""
    ProductionRecord.model_validate_json(json.dumps(record, allow_nan=False))
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
