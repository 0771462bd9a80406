"""Build the built-in real set ("real digits on real photos"): three disjoint shards.

``build_real_set(out, seed)`` writes, atomically as one directory::

    out/
      real-train/       shard, kind "real": digits from the train pool on real-train photos
      real-val/         shard: val pool on real-val photos
      real-test/        shard: test pool on real-test photos (final reporting only)
      allocation.json   which MNIST indices and photos each split (and the production pool) owns

Splits are disjoint by source digit (:func:`generator.real.mnist.allocate_digits`) and by
source photo (:data:`generator.photos.ALLOCATION`). Every digit of a split is used exactly once.
Randomness: one ``SeedSequence(seed)`` spawns the allocation stream and one stream per split;
each image gets its own spawned child, so the same seed gives byte-identical annotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator import GENERATOR_VERSION, atomic
from generator.errors import field_error, is_int
from generator.fingerprint import fingerprint
from generator.photos import ALLOCATION, photo_sha256, photos_for
from generator.real.composite import CompositeConfig, compose_image, group_digits
from generator.real.mnist import (
    DATASET_NAME,
    DEFAULT_DIGITS,
    PRODUCTION_POOL,
    MnistDigits,
    allocate_digits,
    load_mnist,
)
from generator.real.splits import REAL_SPLITS
from generator.shard import ShardWriter

BUILDER_VERSION = "real-digits/1"
NAME = "real-digits"
CLASSES = [str(d) for d in range(10)]  # same as the `digits` scenario; category id = digit + 1
ALLOCATION_FILE = "allocation.json"


@dataclass(frozen=True)
class SplitSummary:
    split: str
    path: Path
    images: int
    digits: int
    annotations: int
    photos: tuple[str, ...]
    fingerprint: str


def check_seed(seed: object) -> int:
    if not is_int(seed) or int(seed) < 0:
        raise field_error("--seed", "must be an integer >= 0", seed)
    return int(seed)


def split_fingerprint(split: str, seed: int, cfg: CompositeConfig, sizes: Mapping[str, int], mnist: MnistDigits) -> str:
    """Hash of everything that determines a split's content (inputs, not outputs)."""
    photos = {name: photo_sha256(name) for name in photos_for(split)}
    return fingerprint(
        builder=BUILDER_VERSION,
        generator_version=GENERATOR_VERSION,
        split=split,
        seed=seed,
        composite=cfg.to_dict(),
        sizes=dict(sorted(sizes.items())),
        mnist_sha256=mnist.sha256,
        photos=photos,
    )


def _split_info(
    split: str, seed: int, cfg: CompositeConfig, sizes: Mapping[str, int], digits: np.ndarray, mnist: MnistDigits
) -> dict[str, Any]:
    return {
        "name": NAME,
        "kind": "real",
        "split": split,
        "classes": CLASSES,
        "seed": seed,
        "fingerprint": split_fingerprint(split, seed, cfg, sizes, mnist),
        "builder_version": BUILDER_VERSION,
        "generator_version": GENERATOR_VERSION,
        "image_size": [cfg.image_size, cfg.image_size],
        "composite": cfg.to_dict(),
        "digit_sizes": dict(sorted(sizes.items())),
        "sources": {
            "photos": list(photos_for(split)),
            "mnist": {
                "dataset": DATASET_NAME,
                "sha256": mnist.sha256,
                "n_digits": int(digits.size),
                "indices": [int(i) for i in digits],
            },
        },
    }


def build_split(
    out: Path,
    split: str,
    digits: np.ndarray,
    ss: np.random.SeedSequence,
    seed: int,
    cfg: CompositeConfig,
    sizes: Mapping[str, int],
    mnist: MnistDigits,
    progress: bool = False,
) -> SplitSummary:
    """Composite and write one split's shard at ``out`` (atomic via ShardWriter)."""
    from generator.progress import bar as progress_bar  # a bar on a terminal only

    group_ss, image_ss = ss.spawn(2)
    group_rng = np.random.default_rng(group_ss)
    groups = group_digits(digits, cfg, group_rng)
    photos = photos_for(split)
    photo_of = group_rng.permutation(np.arange(len(groups)) % len(photos))
    info = _split_info(split, seed, cfg, sizes, digits, mnist)
    with ShardWriter(out, info) as writer:
        bar = progress_bar(len(groups), split, "img", show=progress, leave=False)
        for i, (group, child) in enumerate(zip(groups, image_ss.spawn(len(groups)), strict=True)):
            rng = np.random.default_rng(child)
            writer.add_record(compose_image(i, photos[int(photo_of[i])], group, mnist, cfg, rng))
            bar.update(1)
        bar.close()
        n_ann = sum(len(e.annotations) for e in writer.entries.values())
    return SplitSummary(
        split=split,
        path=out,
        images=len(groups),
        digits=int(digits.size),
        annotations=n_ann,
        photos=photos,
        fingerprint=info["fingerprint"],
    )


def build_real_set(
    out: str | Path,
    seed: int = 0,
    cfg: CompositeConfig | None = None,
    sizes: Mapping[str, int] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[SplitSummary]:
    """Build ``out/real-train``, ``out/real-val``, ``out/real-test`` (+ ``allocation.json``)
    as one atomic directory; nothing is published unless all three splits succeed."""
    seed = check_seed(seed)
    cfg = cfg or CompositeConfig()
    cfg.validate()
    sizes = dict(DEFAULT_DIGITS if sizes is None else sizes)
    mnist = load_mnist()
    alloc_ss, *split_ss = np.random.SeedSequence(seed).spawn(1 + len(REAL_SPLITS))
    pools = allocate_digits(mnist.labels, sizes, np.random.default_rng(alloc_ss))
    summaries: list[SplitSummary] = []
    with atomic.atomic_dir(out, overwrite) as tmp:
        for split, ss in zip(REAL_SPLITS, split_ss, strict=True):
            summaries.append(build_split(tmp / split, split, pools[split], ss, seed, cfg, sizes, mnist, progress))
        atomic.write_json(
            tmp / ALLOCATION_FILE,
            {
                "builder_version": BUILDER_VERSION,
                "seed": seed,
                "digit_sizes": sizes,
                "mnist_sha256": mnist.sha256,
                "photos": {s: list(ALLOCATION[s]) for s in (*REAL_SPLITS, PRODUCTION_POOL)},
                "mnist_indices": {s: [int(i) for i in p] for s, p in pools.items()},
            },
        )
    final = Path(out)
    return [
        SplitSummary(s.split, final / s.split, s.images, s.digits, s.annotations, s.photos, s.fingerprint)
        for s in summaries
    ]
