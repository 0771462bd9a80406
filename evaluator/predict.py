"""Run a detector over a shard: the only evaluator module that touches a real model.

The detector contract (implemented by :mod:`trainer.api`)::

    det = trainer.api.load_detector(path)
    det.classes   # list[str], in category-id order (id = index + 1)
    det.scenario  # str
    det.predict(images: list[np.ndarray], score_threshold=0.05)
        -> list[list[{"bbox": [x, y, w, h], "category_id": int, "score": float}]]

:func:`load_detector` is the seam tests patch (``monkeypatch.setattr(evaluator.predict,
"load_detector", fake)``) so the CLI runs without training a model; trainer is imported only
when it is called.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from generator.errors import ConfigError, DataError
from generator.shard import Shard

PREDICT_THRESHOLD = 0.05  # low, so AP sees the whole precision/recall curve


class Detector(Protocol):
    classes: list[str]
    scenario: str

    def predict(self, images: list[np.ndarray],
                score_threshold: float = ...) -> list[list[dict[str, Any]]]: ...


def load_detector(path: str) -> Detector:
    """Load a checkpoint with ``trainer.api.load_detector`` (the seam tests replace)."""
    try:
        from trainer.api import load_detector as trainer_load
    except ImportError as exc:
        raise ConfigError(f"--model: cannot load {path!r}: trainer.api is not importable ({exc}); "
                          "install synthloop with its trainer") from exc
    detector: Detector = trainer_load(path)
    return detector


def open_detector(path: str | Path) -> Detector:
    """Check that ``path`` exists, load it through :func:`load_detector`, check its contract."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--model: {str(p)!r} does not exist; pass a checkpoint written by "
                          "`synthloop train`")
    det = load_detector(str(p))
    missing = [a for a in ("classes", "scenario", "predict") if not hasattr(det, a)]
    if missing:
        raise ConfigError(f"--model: {str(p)!r} loaded an object without {missing}; it is not a "
                          "synthloop detector checkpoint")
    return det


def _sha256_path(p: Path) -> str | None:
    """sha256 of a file, or of (relative path, file hash) pairs for a directory."""
    h = hashlib.sha256()
    if p.is_file():
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{_sha256_path(f)}\n".encode())
        return h.hexdigest()
    return None


def model_identity(path: str | Path, detector: Detector) -> dict[str, Any]:
    """The report's ``model`` block: path, content hash, classes, scenario (+ ``name`` /
    ``fingerprint`` / ``config`` when the detector exposes them)."""
    out: dict[str, Any] = {"path": str(path), "sha256": _sha256_path(Path(path)),
                           "classes": list(detector.classes), "scenario": detector.scenario}
    for attr in ("name", "fingerprint", "config"):
        value = getattr(detector, attr, None)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, str | int | float | dict | list):
            out[attr] = value
    return out


def _as_results(image_id: int, dets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in dets:
        try:
            r = {"image_id": image_id, "category_id": int(d["category_id"]),
                 "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"--model: predict() returned a malformed detection {d!r} ({exc!r}); "
                            "each needs bbox [x, y, w, h], category_id and score") from exc
        if "segmentation" in d:
            r["segmentation"] = d["segmentation"]
        out.append(r)
    return out


def predict_shard(detector: Detector, shard: Shard, batch_size: int = 16,
                  score_threshold: float = PREDICT_THRESHOLD,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Predictions for every image of ``shard`` as a COCO results list (a tqdm bar on stderr
    when ``progress`` and stderr is a terminal: :mod:`generator.progress`)."""
    from generator.progress import bar as progress_bar

    images = shard.coco["images"]
    results: list[dict[str, Any]] = []
    with progress_bar(len(images), "predict", "img", show=progress) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            out = detector.predict([shard.load_image(img) for img in batch],
                                   score_threshold=score_threshold)
            if len(out) != len(batch):
                raise DataError(f"--model: predict() returned {len(out)} result lists for "
                                f"{len(batch)} images; it must return one list per image")
            for img, dets in zip(batch, out, strict=True):
                results.extend(_as_results(int(img["id"]), dets))
            bar.update(len(batch))
    return results
