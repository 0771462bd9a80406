"""The ``refit`` loop's tilt target: its base re-fitted to real-val, weighted toward the misses.

After a model is evaluated on real-val (``STEP/report/`` with ``objects.parquet``, where STEP is
``WORK/init`` for a warm start's init model or ``WORK/iter_k``), a ``refit`` loop re-fits its base
(``cfg.policy_base`` — re-fitted to a drifted production window first, :mod:`flows.loop.drift` —
else uniform) with :func:`policy.calibrate.calibrate` to real-val with every missed object, and
every image holding one, counted ``cfg.failure_weight`` times (:mod:`policy.failure_set`):
``cfg.refit_trials`` Optuna trials of ``cfg.refit_images`` rendered images. The policy
(:mod:`policy.refit`) then moves its tilt one capped step toward it.

Written atomically to ``STEP/refit/`` (``params.yaml``, ``report.json``); a resumed loop reads it
back, so the same report gives the same target. Only real-val is read, never real-test.
Library code: no Prefect, no MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator import atomic

if TYPE_CHECKING:
    from flows.loop.state import LoopConfig
    from generator.params import GenerationParams
    from generator.scenario import Scenario

REFIT_DIR, PARAMS_FILE, REPORT_FILE = "refit", "params.yaml", "report.json"
POLICY = "refit"


def refit_target(cfg: LoopConfig, step_dir: Path, scenario: Scenario,
                 base: GenerationParams | None) -> GenerationParams | None:
    """The re-fit of ``base`` to the failure-weighted real-val of ``step_dir/report`` (None unless
    ``cfg.policy`` is ``refit``); computed once, then read back."""
    from policy.mixture import load_base

    if cfg.policy != POLICY:
        return None
    out = Path(step_dir) / REFIT_DIR
    if not (out / PARAMS_FILE).is_file():
        _fit(cfg, scenario, base, Path(step_dir) / "report", out)
    return load_base(out / PARAMS_FILE, scenario)


def record(step_dir: Path) -> dict[str, Any] | None:
    """What the re-fit in ``step_dir`` weighted and how close it came (None when there is none)."""
    path = Path(step_dir) / REFIT_DIR / REPORT_FILE
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    real = report.get("real") or {}
    return {"distance": {k: report["distance"][k] for k in ("before", "after")},
            **{k: real.get(k) for k in ("failure_weight", "objects", "missed_objects", "images_with_misses")}}


def with_record(decision: dict[str, Any], step_dir: Path) -> dict[str, Any]:
    """The decision record with a ``refit`` block (:func:`record`) when ``step_dir`` holds a re-fit."""
    r = record(step_dir)
    return decision if r is None else {**decision, "refit": {"path": REFIT_DIR, **r}}


def _fit(cfg: LoopConfig, scenario: Scenario, base: GenerationParams | None, report_dir: Path, out: Path) -> None:
    from policy.calibrate import CalibrationOptions, calibrate
    from policy.failure_set import load_failure_weighted

    options = CalibrationOptions(trials=cfg.refit_trials, images_per_trial=cfg.refit_images, seed=cfg.seed,
                                 width=cfg.width, height=cfg.height, backend=cfg.backend)
    real = load_failure_weighted(cfg.real_root / "real-val", report_dir, cfg.failure_weight,
                                 options.max_real_images, options.seed, "loop refit")
    result = calibrate(scenario, real, start=base, options=options)
    with atomic.atomic_dir(out, overwrite=True) as tmp:
        result.params.save(tmp / PARAMS_FILE)
        atomic.write_json(tmp / REPORT_FILE, result.report)
