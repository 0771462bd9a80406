"""A production window's drift as a calibration target: the mixture's base moves to production.

A frozen production window (``cfg.production``, written by the monitor) carries its frames —
unlabeled real data from where the model is deployed. When its signals found drifted conditions,
a ``mixture``/``calibrated`` loop does not only tilt toward the drifted slices: it first re-fits
the base it mixes to those frames with :func:`policy.calibrate.calibrate` (the image conditions
that can be measured without labels: brightness, contrast, sharpness, noise, clutter), starting
from the loop's own base (``cfg.policy_base``, else uniform). Object conditions, which need
labels, keep the start's distributions. This is Meta-Sim's "match the target data first, then
the task loss", with production as the target.

Computed once per window (and per loop: the start base and the loop's seed are fixed for it),
into ``WORK/calibration/production-<window id>/`` (``params.yaml``, ``report.json``, written
atomically); a resume or a rerun reads it back, so the same window gives the same base.
``cfg.drift_calibration_trials = 0`` turns it off. Library code: no Prefect, no MLflow.
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

PARAMS_FILE, REPORT_FILE = "params.yaml", "report.json"


def drifted(window: str | Path) -> list[str]:
    """The conditions the window's signals found drifted ([] when none, or no signals)."""
    try:
        signals = json.loads((Path(window) / "signals.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(c) for c in signals.get("drifted") or []] if isinstance(signals, dict) else []


def calibration_dir(cfg: LoopConfig) -> Path | None:
    """Where the base fitted to ``cfg.production`` lives (None: no drift calibration applies)."""
    from evaluator.production.frozen import read_info
    from policy.registry import WITH_BASE

    if cfg.production is None or cfg.policy not in WITH_BASE or cfg.drift_calibration_trials == 0:
        return None
    if not drifted(cfg.production):
        return None
    return cfg.work / "calibration" / f"production-{read_info(cfg.production)['id']}"


def drift_base(cfg: LoopConfig, scenario: Scenario, base: GenerationParams | None) -> GenerationParams | None:
    """``base`` re-fitted to the production window's frames when the window drifted, else ``base``."""
    from policy.mixture import load_base

    out = calibration_dir(cfg)
    if out is None:
        return base
    if not (out / PARAMS_FILE).is_file():
        _fit(cfg, scenario, base, out)
    return load_base(out / PARAMS_FILE, scenario)


def record(cfg: LoopConfig) -> dict[str, Any] | None:
    """The history's account of the drift calibration in use (None when none applies)."""
    out = calibration_dir(cfg)
    if out is None or not (out / REPORT_FILE).is_file():
        return None
    report = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    return {"path": str(out.relative_to(cfg.work)), "drifted": drifted(str(cfg.production)),
            "distance": {k: report["distance"][k] for k in ("before", "after")},
            "conditions": sorted(report["conditions"])}


def _fit(cfg: LoopConfig, scenario: Scenario, base: GenerationParams | None, out: Path) -> None:
    from policy.calibrate import CalibrationOptions, calibrate

    options = CalibrationOptions(trials=cfg.drift_calibration_trials, images_per_trial=cfg.drift_calibration_images,
                                 seed=cfg.seed, width=cfg.width, height=cfg.height, backend=cfg.backend)
    result = calibrate(scenario, Path(str(cfg.production)) / "frames", start=base, options=options)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_dir(out) as tmp:
        result.params.save(tmp / PARAMS_FILE)
        atomic.write_json(tmp / REPORT_FILE, result.report)
