"""A drifting production stream: real digits on real photos, frame by frame, batch by batch.

The stand-in for a deployed camera (``synthloop data simulate-production``; the files are
written by :mod:`generator.real.camera_log`). Frames are made exactly like the real set
(:func:`generator.real.composite.compose_image`) but only from sources **disjoint from
real-test**:

- digits from the MNIST *production pool* (what ``allocate_digits`` leaves after real-train,
  real-val and real-test), taken from the real set's ``allocation.json`` when given, else
  derived the way ``synthloop data real --seed REAL_SEED`` with default sizes derives them;
- photos reserved for ``production`` in :data:`generator.photos.ALLOCATION`.

:func:`check_disjoint` enforces both (``DataError`` otherwise) before anything is drawn.

**Drift schedule.** Batch ``b`` of ``B`` has level ``s = drift · b / (B − 1)`` (0 for one
batch); ``drift`` in [0, 1] is the strength knob and ``drift = 0`` gives a stationary stream:

==============  ===========================================================  =================
what            rule at level s                                              s = 1
==============  ===========================================================  =================
exposure        frame × ``1 − 0.6·s`` (night falls: background *and* ink)    40% brightness
sensor noise    Gaussian, sigma ``4·s`` luma levels                          sigma 4
digit size      longer side range ``[lo·(1 − 0.25·s), hi·(1 − 0.5·s)]``      14–56 → 10–28 px
busy scenes     photo weight ``1 + 4·s·r`` (``r`` = texture rank, 0..1)      busiest photo 5×
==============  ===========================================================  =================

Randomness: ``SeedSequence(seed)`` spawns one child per batch and each batch one per frame,
so the same seed gives the same frames, and a batch does not depend on later batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from generator import imagestats
from generator.errors import DataError, field_error, is_int
from generator.photos import ALLOCATION, load_photo, photos_for, purpose_of
from generator.real.composite import CompositeConfig, compose_image
from generator.real.mnist import DEFAULT_DIGITS, PRODUCTION_POOL, MnistDigits, allocate_digits
from generator.real.splits import HELD_OUT_SPLIT as HELD_OUT
from generator.real.splits import REAL_SPLITS
from generator.shard import ImageRecord

DARKEN = 0.6  # exposure loss at s = 1
NOISE = 4.0  # sensor noise sigma (luma levels) at s = 1
SHRINK_LO, SHRINK_HI = 0.25, 0.5  # digit size range shrink at s = 1
BUSY = 4.0  # extra photo weight of the busiest photo at s = 1


@dataclass(frozen=True)
class StreamConfig:
    """Options of ``synthloop data simulate-production`` (CLI flag names in errors)."""

    batches: int = 6
    frames_per_batch: int = 40
    label_share: float = 0.2
    drift: float = 1.0
    seed: int = 0
    start: str = "2024-01-01T00:00:00+00:00"
    interval_minutes: float = 60.0
    composite: CompositeConfig = field(default_factory=CompositeConfig)

    def validate(self) -> StreamConfig:
        for opt, n, hi in (("--batches", self.batches, 1000), ("--frames-per-batch", self.frames_per_batch, 100000)):
            if not is_int(n) or not 1 <= n <= hi:
                raise field_error(opt, f"must be an integer in [1, {hi}]", n)
        if not is_int(self.seed) or self.seed < 0:
            raise field_error("--seed", "must be an integer >= 0", self.seed)
        if not 0.0 <= self.label_share <= 1.0:
            raise field_error("--label-share", "must be in [0, 1] (share of frames with reviewed labels)",
                              self.label_share)
        if not 0.0 <= self.drift <= 1.0:
            raise field_error("--drift", "must be in [0, 1] (0 = stationary stream)", self.drift)
        if not self.interval_minutes > 0:
            raise field_error("--interval-minutes", "must be > 0", self.interval_minutes)
        self.start_time()
        self.composite.validate()
        return self

    def start_time(self) -> datetime:
        try:
            t = datetime.fromisoformat(self.start)
        except ValueError:
            t = None
        if t is None or t.tzinfo is None:
            raise field_error("--start", "must be an ISO 8601 time with a UTC offset", self.start,
                              "e.g. 2024-01-01T00:00:00+00:00")
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "frames_per_batch": self.frames_per_batch,
                "label_share": self.label_share, "drift": self.drift, "seed": self.seed, "start": self.start,
                "interval_minutes": self.interval_minutes, "composite": self.composite.to_dict()}


@dataclass(frozen=True)
class BatchDrift:
    """The drift applied to one batch (see the module docstring)."""

    batch: int
    level: float
    gain: float
    noise: float
    digit_size: tuple[int, int]
    photo_weights: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "level": self.level, "gain": self.gain, "noise": self.noise,
                "digit_size": list(self.digit_size), "photo_weights": dict(self.photo_weights)}


def photo_busyness(photos: tuple[str, ...], size: int) -> dict[str, float]:
    """Texture rank in [0, 1] of each photo (0 = smoothest), measured on the photo resized to
    ``size``² with :func:`generator.imagestats.texture_energy`."""
    from PIL import Image

    energy = {p: imagestats.texture_energy(np.asarray(Image.fromarray(load_photo(p)).resize((size, size))))
              for p in photos}
    order = sorted(photos, key=lambda p: (energy[p], p))
    return {p: (order.index(p) / (len(order) - 1) if len(order) > 1 else 0.0) for p in photos}


def drift_schedule(cfg: StreamConfig, busyness: Mapping[str, float]) -> list[BatchDrift]:
    """One :class:`BatchDrift` per batch."""
    lo, hi = cfg.composite.digit_size
    out = []
    for b in range(cfg.batches):
        s = cfg.drift * b / (cfg.batches - 1) if cfg.batches > 1 else 0.0
        new_hi = max(8, round(hi * (1 - SHRINK_HI * s)))
        new_lo = min(new_hi, max(8, round(lo * (1 - SHRINK_LO * s))))
        weights = {p: 1.0 + BUSY * s * r for p, r in busyness.items()}
        total = sum(weights.values())
        out.append(BatchDrift(b, s, 1.0 - DARKEN * s, NOISE * s, (new_lo, new_hi),
                              {p: w / total for p, w in weights.items()}))
    return out


def derive_pools(labels: np.ndarray, real_seed: int = 0,
                 sizes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """The MNIST pools ``build_real_set(seed=real_seed, sizes=sizes)`` allocates (same
    SeedSequence derivation: its first spawned child feeds ``allocate_digits``)."""
    alloc_ss = np.random.SeedSequence(real_seed).spawn(1 + len(REAL_SPLITS))[0]
    return allocate_digits(labels, dict(DEFAULT_DIGITS if sizes is None else sizes), np.random.default_rng(alloc_ss))


def read_allocation(path: str | Path) -> dict[str, np.ndarray]:
    """The MNIST pools recorded in a real set's ``allocation.json`` (``--real-set DIR``)."""
    p = Path(path)
    p = p / "allocation.json" if p.is_dir() else p
    try:
        indices = json.loads(p.read_text())["mnist_indices"]
        return {k: np.asarray(indices[k], dtype=np.int64) for k in (HELD_OUT, PRODUCTION_POOL)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"--real-set: {str(p)!r} must be the allocation.json of `synthloop data real` with "
                        f"mnist_indices for {HELD_OUT!r} and {PRODUCTION_POOL!r} ({exc}); pass the real set's "
                        "directory") from exc


def check_disjoint(pool: np.ndarray, real_test: np.ndarray, photos: tuple[str, ...]) -> None:
    """Refuse a production source that real-test owns: any shared MNIST index or a photo not
    reserved for ``production``."""
    shared = np.intersect1d(pool, real_test)
    if shared.size:
        raise DataError(f"production pool: must share no MNIST digit with {HELD_OUT}, but {shared.size} do "
                        f"(e.g. index {int(shared[0])}); rebuild the allocation")
    for p in photos:
        if purpose_of(p) != "production" or p in ALLOCATION[HELD_OUT]:
            raise DataError(f"production photos: {p!r} is reserved for {purpose_of(p)!r}, not 'production'; "
                            "only photos_for('production') may be used")
    if not pool.size:
        raise DataError("production pool: holds no MNIST digit; build the real set with fewer split digits")


@dataclass
class Frame:
    """One camera frame with its truth and the drift it was made under."""

    batch: int
    index: int  # within the batch
    timestamp: datetime
    reviewed: bool
    record: ImageRecord
    drift: BatchDrift


def make_frame(index: int, pool: np.ndarray, mnist: MnistDigits, drift: BatchDrift, cfg: StreamConfig,
               rng: np.random.Generator) -> tuple[ImageRecord, bool]:
    """Compose one frame under ``drift``; returns it and whether it gets reviewed labels."""
    comp = replace(cfg.composite, digit_size=drift.digit_size)
    names = tuple(drift.photo_weights)
    photo = names[int(rng.choice(len(names), p=np.array([drift.photo_weights[n] for n in names])))]
    n = int(rng.integers(comp.min_digits, comp.max_digits + 1))
    digits = rng.choice(pool, size=min(n, pool.size), replace=False)
    record = compose_image(index, photo, digits, mnist, comp, rng)
    pixels = record.image.astype(np.float64) * drift.gain
    if drift.noise > 0:
        pixels += rng.normal(0.0, drift.noise, size=pixels.shape)
    record.image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    record.conditions.update(batch=drift.batch, drift_level=drift.level, gain=drift.gain, noise=drift.noise)
    return record, bool(rng.random() < cfg.label_share)


def stream_frames(cfg: StreamConfig, pool: np.ndarray, mnist: MnistDigits,
                  schedule: list[BatchDrift]) -> Iterator[Frame]:
    """Every frame of the stream, batch by batch, in time order."""
    t0, step = cfg.start_time(), timedelta(minutes=cfg.interval_minutes)
    for drift, batch_ss in zip(schedule, np.random.SeedSequence(cfg.seed).spawn(cfg.batches), strict=True):
        for i, ss in enumerate(batch_ss.spawn(cfg.frames_per_batch)):
            record, reviewed = make_frame(i, pool, mnist, drift, cfg, np.random.default_rng(ss))
            when = t0 + step * drift.batch + step * i / cfg.frames_per_batch
            yield Frame(drift.batch, i, when, reviewed, record, drift)


def production_photos() -> tuple[str, ...]:
    return photos_for("production")
