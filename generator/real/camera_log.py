"""Write the simulated camera's output: frames, a production log, and held-out truth.

``simulate_production(out, detector, model_version, cfg)`` writes, atomically as one directory::

    out/
      log/<batch start, UTC>-batch-0000.jsonl   one production-log record per frame
                                                (format: evaluator.production.log, docs/production.md)
      frames/batch-0000/00000.png               the frames the records point at
      holdout/                                  shard (kind "production", split "production-holdout"):
                                                every frame WITHOUT reviewed labels, with full truth —
                                                the lead's measurement set, never shown to the loop
      manifest.json                             settings, drift schedule, sources, counts, fingerprint

Predictions come from ``detector`` (the evaluator's detector contract: ``classes`` and
``predict(images, score_threshold)``), logged down to score 0.05. A share ``label_share`` of
frames carry ``labels`` (reviewed truth) in the log. Same seed, model and options ⇒ the same
bytes in every file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from generator import GENERATOR_VERSION, atomic
from generator.annotations import mask_bbox
from generator.errors import DataError
from generator.fingerprint import fingerprint
from generator.photos import photo_sha256
from generator.real.build import CLASSES
from generator.real.camera_stream import (
    HELD_OUT,
    BatchDrift,
    Frame,
    StreamConfig,
    check_disjoint,
    derive_pools,
    drift_schedule,
    photo_busyness,
    production_photos,
    read_allocation,
    stream_frames,
)
from generator.real.mnist import PRODUCTION_POOL, load_mnist
from generator.shard import MIN_VISIBLE_PIXELS, ImageRecord, ShardWriter

SIM_KIND = "synthloop-production-sim"
SIM_VERSION = "production-sim/1"
PREDICT_FLOOR = 0.05  # predictions are logged down to this score


class Detector(Protocol):
    classes: list[str]

    def predict(self, images: list[np.ndarray], score_threshold: float = ...) -> list[list[dict[str, Any]]]: ...


@dataclass(frozen=True)
class SimSummary:
    out: Path
    batches: int
    frames: int
    reviewed: int
    holdout: int
    log_files: list[str]
    fingerprint: str
    model_version: str


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _labels(record: ImageRecord) -> list[dict[str, Any]]:
    return [{"bbox": mask_bbox(o.mask), "class": CLASSES[o.category_id - 1]}
            for o in record.objects if int(o.mask.sum()) >= MIN_VISIBLE_PIXELS]


def _predictions(dets: list[dict[str, Any]], classes: list[str]) -> list[dict[str, Any]]:
    out = []
    for d in dets:
        cid = int(d["category_id"])
        if not 1 <= cid <= len(classes):
            raise DataError(f"--model: predict() returned category_id {cid}; it must be in 1..{len(classes)}")
        x, y, w, h = (float(v) for v in d["bbox"])
        if w > 0 and h > 0:
            score = min(max(float(d["score"]), 0.0), 1.0)
            out.append({"bbox": [x, y, w, h], "class": classes[cid - 1], "score": score})
    return out


def _record(frame: Frame, dets: list[dict[str, Any]], classes: list[str], model_version: str,
            seed: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": f"sim{seed}-b{frame.batch:04d}-f{frame.index:05d}", "timestamp": frame.timestamp.isoformat(),
        "image": f"../frames/batch-{frame.batch:04d}/{frame.index:05d}.png", "model_version": model_version,
        "predictions": _predictions(dets, classes), "meta": {"camera": "simulated", "batch": frame.batch}}
    if frame.reviewed:
        rec["labels"] = _labels(frame.record)
    return atomic.jsonable(rec)


def _log_name(frame: Frame) -> str:
    from datetime import UTC

    return f"{frame.timestamp.astimezone(UTC):%Y%m%dT%H%M%SZ}-batch-{frame.batch:04d}.jsonl"


def _pools(real_set: str | Path | None, real_seed: int) -> tuple[dict[str, np.ndarray], str]:
    if real_set is not None:
        return read_allocation(real_set), f"allocation.json of {real_set}"
    return derive_pools(load_mnist().labels, real_seed), f"derived: synthloop data real --seed {real_seed}"


def _identity(cfg: StreamConfig, model_version: str, pool: np.ndarray, schedule: list[BatchDrift],
              photos: tuple[str, ...]) -> str:
    return fingerprint(builder=SIM_VERSION, generator_version=GENERATOR_VERSION, config=cfg.to_dict(),
                       model_version=model_version, mnist_sha256=load_mnist().sha256,
                       pool_sha256=hashlib.sha256(pool.astype(np.int64).tobytes()).hexdigest(),
                       photos={p: photo_sha256(p) for p in photos},
                       schedule=[atomic.jsonable(d.to_dict()) for d in schedule])


def _holdout_info(fp: str, cfg: StreamConfig, model_version: str) -> dict[str, Any]:
    return {"name": "production-holdout", "kind": "production", "split": "production-holdout",
            "classes": CLASSES, "fingerprint": fp, "builder_version": SIM_VERSION, "seed": cfg.seed,
            "model_version": model_version, "sources": {"photos": list(production_photos()), "mnist": PRODUCTION_POOL}}


def simulate_production(out: str | Path, detector: Detector, model_version: str, cfg: StreamConfig | None = None,
                        *, real_set: str | Path | None = None, real_seed: int = 0, overwrite: bool = False,
                        progress: bool = False) -> SimSummary:
    """Write the simulated stream to ``out`` (see the module docstring) and summarise it."""
    cfg = (cfg or StreamConfig()).validate()
    if list(detector.classes) != CLASSES:
        raise DataError(f"--model: classes must be the digits {CLASSES}, but the model has {list(detector.classes)}; "
                        "pass a model of the digits scenario")
    pools, pool_source = _pools(real_set, real_seed)
    photos = production_photos()
    check_disjoint(pools[PRODUCTION_POOL], pools[HELD_OUT], photos)
    schedule = drift_schedule(cfg, photo_busyness(photos, cfg.composite.image_size))
    fp = _identity(cfg, model_version, pools[PRODUCTION_POOL], schedule, photos)
    with atomic.atomic_dir(out, overwrite) as tmp, contextlib.ExitStack() as stack:
        counts, digits = _write_stream(tmp, stack, detector, model_version, cfg, pools[PRODUCTION_POOL], schedule,
                                       fp, progress)
        used = np.asarray(sorted(digits), dtype=np.int64)
        check_disjoint(used, pools[HELD_OUT], photos)
        stack.close()  # finish the holdout shard before the directory is published
        atomic.write_json(tmp / "manifest.json", atomic.jsonable({
            "kind": SIM_KIND, "builder_version": SIM_VERSION, "generator_version": GENERATOR_VERSION,
            "fingerprint": fp, "config": cfg.to_dict(), "model_version": model_version,
            "schedule": [d.to_dict() for d in schedule], "counts": counts,
            "sources": {"photos": list(photos), "mnist_pool": pool_source,
                        "mnist_pool_size": int(pools[PRODUCTION_POOL].size), "mnist_indices_used": used.tolist(),
                        "disjoint_from": HELD_OUT}}))
    return SimSummary(Path(out), cfg.batches, counts["frames"], counts["reviewed"], counts["holdout"],
                      counts["log_files"], fp, model_version)


def _log_line(record: dict[str, Any]) -> str:
    """One canonical JSONL line (sorted keys, compact), as evaluator.production.log.record_line."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


class _Writer:
    """Writes one batch at a time: frame PNGs, the batch's log file, holdout shard entries."""

    def __init__(self, tmp: Path, stack: contextlib.ExitStack, detector: Detector, model_version: str,
                 cfg: StreamConfig, fp: str) -> None:
        self.tmp, self.stack, self.detector, self.cfg = tmp, stack, detector, cfg
        self.model_version, self.fp = model_version, fp
        self.holdout: ShardWriter | None = None
        self.counts: dict[str, Any] = {"frames": 0, "reviewed": 0, "holdout": 0, "log_files": []}
        self.digits: set[int] = set()

    def batch(self, frames: list[Frame]) -> None:
        dets = self.detector.predict([f.record.image for f in frames], score_threshold=PREDICT_FLOOR)
        if len(dets) != len(frames):
            raise DataError(f"--model: predict() returned {len(dets)} result lists for {len(frames)} frames")
        lines = [self.frame(f, d) for f, d in zip(frames, dets, strict=True)]
        name = _log_name(frames[0])
        (self.tmp / "log").mkdir(exist_ok=True)
        atomic.write_text(self.tmp / "log" / name, "".join(lines))
        self.counts["log_files"].append(name)

    def frame(self, frame: Frame, dets: list[dict[str, Any]]) -> str:
        path = self.tmp / "frames" / f"batch-{frame.batch:04d}" / f"{frame.index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(frame.record.image))
        rec = _record(frame, dets, list(self.detector.classes), self.model_version, self.cfg.seed)
        self.digits.update(int(o.attributes["mnist_index"]) for o in frame.record.objects)
        self.counts["frames"] += 1
        self.counts["reviewed"] += int(frame.reviewed)
        if not frame.reviewed:
            if self.holdout is None:
                info = _holdout_info(self.fp, self.cfg, self.model_version)
                self.holdout = self.stack.enter_context(ShardWriter(self.tmp / "holdout", info))
            frame.record.index = self.counts["holdout"]
            frame.record.conditions.update(record_id=rec["id"], timestamp=rec["timestamp"])
            self.holdout.add_record(frame.record)
            self.counts["holdout"] += 1
        return _log_line(rec)


def _write_stream(tmp: Path, stack: contextlib.ExitStack, detector: Detector, model_version: str,
                  cfg: StreamConfig, pool: np.ndarray, schedule: list[BatchDrift], fp: str,
                  progress: bool) -> tuple[dict[str, Any], set[int]]:
    """Every batch through a :class:`_Writer`; returns the counts and the MNIST indices used."""
    from generator.progress import bar as progress_bar  # a bar on a terminal only

    writer = _Writer(tmp, stack, detector, model_version, cfg, fp)
    with progress_bar(cfg.batches * cfg.frames_per_batch, "simulate", "frame", show=progress) as bar:
        for _, group in itertools.groupby(stream_frames(cfg, pool, load_mnist(), schedule), key=lambda f: f.batch):
            frames = list(group)
            writer.batch(frames)
            bar.update(len(frames))
    return writer.counts, writer.digits
