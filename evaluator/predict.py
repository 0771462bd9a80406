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
            results.extend(_predict_batch(detector, shard, batch, score_threshold))
            bar.update(len(batch))
    return results


def _predict_batch(detector: Detector, shard: Shard, batch: list[dict[str, Any]],
                   score_threshold: float) -> list[dict[str, Any]]:
    """COCO results of one batch of the shard's image records (one list per image checked)."""
    out = detector.predict([shard.load_image(img) for img in batch], score_threshold=score_threshold)
    if len(out) != len(batch):
        raise DataError(f"--model: predict() returned {len(out)} result lists for "
                        f"{len(batch)} images; it must return one list per image")
    results: list[dict[str, Any]] = []
    for img, dets in zip(batch, out, strict=True):
        results.extend(_as_results(int(img["id"]), dets))
    return results


# -- a large split in chunks on an executor -------------------------------------------------------------
#
# Any object with ``submit(fn, *args) -> future`` (``concurrent.futures.ProcessPoolExecutor``,
# ``distributed.Client.get_executor()``): tasks take paths and image indices and return small
# records (image ids and COCO detections as plain lists and dicts), never image arrays, so they
# run wherever the model and the shard are readable at the same paths (a shared filesystem).

_LOADED: dict[str, tuple[tuple[Any, ...], Detector]] = {}  # per worker process: the last model loaded


def _model_key(p: Path) -> tuple[Any, ...]:
    """What changes when the checkpoint at ``p`` is replaced: its files' names, sizes and mtimes."""
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def _worker_detector(model: str) -> Detector:
    """The detector at ``model``, loaded once per worker process (reloaded when its files change)."""
    p = Path(model)
    key = _model_key(p)
    hit = _LOADED.get(model)
    if hit is None or hit[0] != key:
        _LOADED.clear()  # one model in memory per worker
        _LOADED[model] = (key, open_detector(p))
    return _LOADED[model][1]


def image_chunks(n: int, chunk_images: int, batch_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` image-index ranges covering ``n`` images, each a multiple of
    ``batch_size`` long (but the last), so every chunk's batches are the serial path's batches."""
    size = max(batch_size, -(-chunk_images // batch_size) * batch_size)
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def predict_chunk(model: str, data: str, start: int, stop: int, batch_size: int = 16,
                  score_threshold: float = PREDICT_THRESHOLD) -> dict[str, Any]:
    """Run in a worker: predictions for images ``start:stop`` (shard order) of the shard at
    ``data`` with the checkpoint at ``model``; ``{"start", "stop", "image_ids", "results"}``."""
    shard = Shard(data)
    images = shard.coco["images"][start:stop]
    detector = _worker_detector(model)
    results: list[dict[str, Any]] = []
    for b in range(0, len(images), batch_size):
        results.extend(_predict_batch(detector, shard, images[b:b + batch_size], score_threshold))
    return {"start": start, "stop": stop, "image_ids": [int(img["id"]) for img in images], "results": results}


def merge_chunks(chunks: list[dict[str, Any]], image_ids: list[int]) -> list[dict[str, Any]]:
    """The chunks' results concatenated in image order, after checking that together they cover
    every image of the shard exactly once, in shard order, and hold detections of their own
    images only (a dropped, repeated or reordered chunk is one DataError line)."""
    seen = [i for c in chunks for i in c["image_ids"]]
    if seen != image_ids:
        counts: dict[int, int] = {}
        for i in seen:
            counts[i] = counts.get(i, 0) + 1
        known = set(image_ids)
        missing = [i for i in image_ids if i not in counts]
        twice = sorted(i for i, c in counts.items() if c > 1)
        extra = [i for i in seen if i not in known]
        faults = ([f"{len(missing)} image(s) missing (first id {missing[0]})"] if missing else []) + \
                 ([f"{len(twice)} image(s) predicted more than once (first id {twice[0]})"] if twice else []) + \
                 ([f"ids not in the shard (first {extra[0]})"] if extra else [])
        if not faults:
            at = next(j for j, (a, b) in enumerate(zip(seen, image_ids, strict=True)) if a != b)
            faults = [f"out of order at position {at} (id {seen[at]} where the shard has {image_ids[at]})"]
        why = ", ".join(faults)
        raise DataError(f"predict: the chunks' predictions do not cover the shard's {len(image_ids)} images once "
                        f"each in order: {why}; an executor lost or reordered a chunk — run again")
    results: list[dict[str, Any]] = []
    for c in chunks:
        own = set(c["image_ids"])
        stray = next((r for r in c["results"] if r["image_id"] not in own), None)
        if stray is not None:
            raise DataError(f"predict: chunk {c['start']}:{c['stop']} returned a detection of image "
                            f"{stray['image_id']}, which it did not predict; run again")
        results.extend(c["results"])
    return results


def predict_parallel(executor: Any, model: str | Path, shard: Shard, batch_size: int = 16, chunk_images: int = 500,
                     score_threshold: float = PREDICT_THRESHOLD, progress: bool = True) -> list[dict[str, Any]]:
    """:func:`predict_shard`'s predictions, computed in chunks of about ``chunk_images`` images
    on ``executor`` (each task loads the model and the shard from their paths) and merged in
    image order: the same list the serial path returns."""
    from generator.progress import bar as progress_bar

    images = shard.coco["images"]
    ranges = image_chunks(len(images), chunk_images, batch_size)
    model_path, data = str(Path(model).absolute()), str(shard.path.absolute())
    futures = [executor.submit(predict_chunk, model_path, data, start, stop, batch_size, score_threshold)
               for start, stop in ranges]
    chunks = []
    with progress_bar(len(images), "predict", "img", show=progress) as bar:
        for f in futures:
            chunks.append(f.result())
            bar.update(len(chunks[-1]["image_ids"]))
    return merge_chunks(chunks, [int(img["id"]) for img in images])
