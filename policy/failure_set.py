"""The real set a closed loop re-fits to: real-val, weighted toward what the model misses.

Calibration (:mod:`policy.calibrate`) matches the conditions of a real set. A closed loop wants
more than the real distribution: more of the real conditions its model fails on, without leaving
what real data looks like. :func:`failure_weighted` gives each real object that the model missed
(``objects.parquet`` of the evaluator's report: ``detected`` False) ``weight`` times the weight of
a found one, and each image with at least one miss ``weight`` times the weight of an image
without: an empirical distribution ``∝ p_real(x) · (1 + (weight − 1) · miss(x))``, so no real
object counts more than ``weight`` × (the per-round cap: ×2 by default) and nothing outside the
real set's support is ever asked for. Weights are whole numbers (rows repeated) because the
calibration distance works on plain samples.

Library code: no Prefect, no MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from generator.errors import DataError, field_error, is_int
from policy.calibration_data import RealSet
from policy.calibration_distance import Measured

MAX_WEIGHT = 10  # a failure weighted beyond this is no longer "the real distribution, tilted"


def check_weight(weight: object, name: str = "failure_weight") -> int:
    if not is_int(weight) or not 1 <= weight <= MAX_WEIGHT:
        raise field_error(name, f"must be an integer in [1, {MAX_WEIGHT}]", weight,
                          "use 2: a missed object counts twice as much as a found one")
    return int(weight)


def read_outcomes(report_dir: str | Path, where: str = "--failures") -> pd.DataFrame:
    """The per-object outcomes (``objects.parquet``) of a report directory; one-line errors."""
    from evaluator.report import OBJECTS_FILE

    path = Path(report_dir) / OBJECTS_FILE
    if not path.is_file():
        raise DataError(f"{where}: {str(path)!r} is missing; pass a report directory written by `synthloop "
                        "evaluate` (reports from before objects.parquet existed: evaluate again)")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: {str(path)!r} is not a readable parquet file ({exc.__class__.__name__}); "
                        "evaluate again") from None


def _repeat(frame: pd.DataFrame, missed: np.ndarray, weight: int) -> pd.DataFrame:
    reps = np.where(missed, weight, 1)
    return frame.loc[frame.index.repeat(reps)].reset_index(drop=True)


def failure_weighted(real: RealSet, outcomes: pd.DataFrame, weight: int = 2) -> RealSet:
    """``real`` (a labelled real set) with missed objects and images holding a miss repeated
    ``weight`` times; ``outcomes`` is the report's ``objects.parquet`` (``ann_id``, ``image_id``,
    ``detected``) for the same shard. Raises DataError when they do not belong together."""
    weight = check_weight(weight)
    objects = real.measured.objects
    if objects is None:
        raise DataError("failure_weighted: the real set has no labels, so no object can be a miss; "
                        "pass a labelled shard such as real-val")
    missing = [c for c in ("ann_id", "image_id", "detected") if c not in outcomes.columns]
    if missing:
        raise DataError(f"failure_weighted: objects.parquet lacks column(s) {missing}; re-run "
                        "`synthloop evaluate` to write a current report")
    found = dict(zip(outcomes["ann_id"].astype(int), outcomes["detected"].astype(bool), strict=True))
    unknown = sorted(set(objects["ann_id"].astype(int)) - set(found))
    if unknown:
        raise DataError(f"failure_weighted: {len(unknown)} object(s) of the real set (e.g. ann_id "
                        f"{unknown[0]}) are not in the report's objects.parquet; evaluate the same shard")
    obj_missed = ~objects["ann_id"].astype(int).map(found).to_numpy(dtype=bool)
    bad_images = set(objects.loc[obj_missed, "image_id"].astype(int))
    img_missed = real.measured.images["image_id"].astype(int).isin(bad_images).to_numpy()
    measured = Measured(images=_repeat(real.measured.images, img_missed, weight),
                        objects=_repeat(objects, obj_missed, weight))
    source = {**real.source, "failure_weight": weight, "objects": len(objects),
              "missed_objects": int(obj_missed.sum()), "images_with_misses": int(img_missed.sum())}
    return RealSet(measured, source)


def load_failure_weighted(real: str | Path, report_dir: str | Path, weight: int, max_images: int, seed: int,
                          where: str = "--failures") -> RealSet:
    """The real shard at ``real`` (:func:`policy.calibration_data.load_real`, at most ``max_images``
    images sampled with ``seed``) weighted toward the misses in ``report_dir``'s objects.parquet
    (``where`` names it in errors): what ``synthloop calibrate --failures`` and a ``refit`` loop fit to."""
    from policy.calibration_data import load_real

    outcomes = read_outcomes(report_dir, where)  # the cheap check first
    return failure_weighted(load_real(real, max_images, seed), outcomes, weight)
