"""What a loop makes for itself before its first decision, asked for by a keyword in its config.

- ``policy_base: calibrate`` — the calibrated base, fitted by the loop instead of a separate
  ``synthloop calibrate``: real-val's measured conditions matched by ``calibration_trials``
  Optuna trials of ``calibration_images`` rendered images (seed ``cfg.seed``; no training),
  written once to ``WORK/calibration/`` (``params.yaml``, ``report.json``). Match the real data
  first, then target failures (benchmarks/RESULTS.md: the calibrated arms lead uniform DR).
- ``replay: [init, ...]`` — ``init`` is the data the init model was trained on: the recipe of a
  base model (``recipe.json``, :mod:`flows.loop.base_model`) re-rendered into
  ``WORK/replay-init``, with the fingerprint of the data the model saw, so a warm-started model
  does not forget what it learnt while it adapts to a few hundred new images.

Both are made by :func:`prepare` (atomically; a resumed loop reuses them) right after the real
set, before the warm start's first decision; :func:`base_path` and :func:`replay_paths` resolve
the keywords wherever the loop reads the fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from generator import atomic
from generator.progress import Stage, report

if TYPE_CHECKING:
    from flows.loop.state import LoopConfig

CALIBRATE = "calibrate"  # policy_base keyword
INIT = "init"  # replay keyword
CALIBRATION_DIR, PARAMS_FILE, REPORT_FILE = "calibration", "params.yaml", "report.json"
REPLAY_INIT_DIR = "replay-init"


def base_path(cfg: LoopConfig) -> Path | None:
    """The calibrated base params file the loop reads (None: no base, i.e. uniform)."""
    if cfg.policy_base is None:
        return None
    return cfg.work / CALIBRATION_DIR / PARAMS_FILE if cfg.policy_base == CALIBRATE else Path(cfg.policy_base)


def replay_paths(cfg: LoopConfig) -> list[Path]:
    """The replay shards, ``init`` resolved to ``WORK/replay-init``."""
    return [cfg.work / REPLAY_INIT_DIR if p == INIT else Path(p) for p in cfg.replay or ()]


def prepare(cfg: LoopConfig) -> None:
    """Make what the keywords ask for, unless already made (called once per run, after the real set)."""
    if cfg.policy_base == CALIBRATE:
        _calibrate(cfg)
    if INIT in (cfg.replay or ()):
        _render_init_data(cfg)


def _calibrate(cfg: LoopConfig) -> None:
    from generator.scenario import load_scenario
    from policy.calibrate import CalibrationOptions, calibrate

    out = cfg.work / CALIBRATION_DIR
    if (out / PARAMS_FILE).is_file():
        report(f"calibration: {out / PARAMS_FILE} … reused", show=cfg.progress, always=True)
        return
    options = CalibrationOptions(trials=cfg.calibration_trials, images_per_trial=cfg.calibration_images,
                                 seed=cfg.seed, width=cfg.width, height=cfg.height, backend=cfg.backend)
    with Stage("calibration", None, show=cfg.progress) as stage:
        result = calibrate(load_scenario(cfg.scenario), cfg.real_root / "real-val", options=options)
        with atomic.atomic_dir(out, overwrite=True) as tmp:
            result.params.save(tmp / PARAMS_FILE)
            atomic.write_json(tmp / REPORT_FILE, result.report)
        d = result.report["distance"]
        stage.done(f"{options.trials} trials × {options.images_per_trial} images fitted to real-val, "
                   f"distance {d['before']:.3f} → {d['after']:.3f}", count=options.trials, unit="trials")


def _render_init_data(cfg: LoopConfig) -> None:
    from flows.loop.base_model import BaseRecipe, read_recipe
    from generator.pipeline import render_shard

    job = BaseRecipe(**read_recipe(str(cfg.init_model))["recipe"]).render_job()
    out = cfg.work / REPLAY_INIT_DIR
    with Stage("replay: the init model's data", job.n, show=cfg.progress) as stage:
        r = render_shard(job, out, workers=cfg.render_shards * cfg.render_workers, reuse=True,
                         progress=lambda _entry: stage.update(1))
        if r.reused:
            stage.close()
            report(f"replay: the init model's data at {out} … reused", show=cfg.progress, always=True)
