"""What ``synthloop run`` is about to do and about how long it should take (printed first).

:func:`plan_run` turns a loop's settings into work (iterations still to do, images to render,
training steps, real-val images to evaluate, whether the real set must be built) and a time
estimate from per-unit rates measured on this project's 2-CPU-core machine
(:data:`MEASURED`). ``synthloop run`` prints :meth:`RunPlan.lines` to stderr before anything
starts, so ``make demo`` says, e.g.::

    plan: 3 iterations × 400 images (2 shards), 300 training steps × 32 images each, evaluated
          on 598 real-val images; builds the real set first
    plan: about 10–12 min on 2 CPU cores (render ≈ 30 img/s, train ≈ 65 img/s, evaluate ≈ 50
          img/s, measured on a quiet 2-core machine; the upper end allows for other jobs sharing
          the cores)

(one line each; wrapped here), plus, when the machine's load average says other jobs share the
cores, ``plan: the machine is busy now (load average 6.8 on 2 CPU cores): at that load about 18 min``.

No Prefect or MLflow here (cheap to import and to test).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from flows.loop.state import LoopConfig, LoopHistory
from generator.real.splits import has_real_set

__all__ = ["MEASURED", "Rates", "RunPlan", "completed_iterations", "plan_run"]


@dataclass(frozen=True)
class Rates:
    """Per-unit throughput and fixed costs on ``cores`` CPU cores."""

    render_img_s: float  # images/s of ONE render process at 128x128 (digits, Mesa llvmpipe)
    train_img_s: float  # training images/s (default centernet, input 128, batch 32)
    evaluate_img_s: float  # real-val images/s for the whole evaluation (predict + metrics + bootstrap)
    real_set_s: float  # building the built-in real set (three splits)
    startup_s: float  # Prefect's temporary server, MLflow parent run, imports
    iteration_s: float  # per iteration: params, policy, MLflow tracking, Prefect artifacts
    cores: int
    calibrate_img_s: float = 35.0  # calibration and re-fit trial renders (one process, measured, no files)


# Rates on this project's machine (2 CPU cores, AMD EPYC, Mesa llvmpipe, torch CPU,
# OMP_WAIT_POLICY=PASSIVE), digits at 128x128, default centernet, batch 32. The estimate uses the
# QUIET rates; its upper end adds 25 % for a machine shared with other jobs.
#   quiet (2026-11-26, benchmarks/RESULTS.md, `make demo` settings with render_shards=1, 597.5 s in
#     all): train 441 s for 3 x 300 x 32 images = 65 img/s; render 71 s for 1,200 images in one
#     process = 17 img/s; Prefect start-up 23 s, MLflow tracking ~11 s for 3 iterations.
#   loaded (2026-12-03, load 2-3 from other jobs; measured for this module): `synthloop train
#     --steps 30` 54.6 img/s; two `synthloop render -n 120` at once 7.7 + 8.0 img/s (16 together);
#     `synthloop evaluate` on real-val (598 images, 200 resamples) 15 s with start-up; `synthloop
#     data real` 12.8 s.
#   -> per render process 15 img/s (two on two cores: 30), train 65 img/s, evaluate 50 img/s.
#   check (2026-12-03, load 7-9): `synthloop run --iterations 1` on the demo settings took 412 s
#     (estimate: 219 s quiet; see RunPlan.busy for the load correction).
#   calibration (2026-12-04, quiet): 48 trials x 32 images in 41.1 s (37 img/s), 16 x 32 in 18.7 s.
MEASURED = Rates(render_img_s=15.0, train_img_s=65.0, evaluate_img_s=50.0, real_set_s=13.0,
                 startup_s=25.0, iteration_s=8.0, cores=2, calibrate_img_s=35.0)
IMAGES_PER_DIGIT = 598 / 1500  # real-val: 1,500 digits make 598 composite images


def completed_iterations(cfg: LoopConfig) -> int:
    """Iterations already in ``WORK/history.json`` (0 when there is none or it cannot be read:
    the run itself reports a bad history with a proper error)."""
    try:
        return len((LoopHistory.peek(cfg.work) or {}).get("iterations") or [])
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def pre_step_pending(cfg: LoopConfig) -> bool:
    """A warm start whose pre-step (flows/loop/warm_start.py: evaluate the init model) has not run yet."""
    if cfg.init_model is None:
        return False
    try:
        return (LoopHistory.peek(cfg.work) or {}).get("init") is None
    except (OSError, ValueError, AttributeError, TypeError):
        return True


def _real_val_images(cfg: LoopConfig) -> int:
    try:
        manifest = json.loads((cfg.real_root / "real-val" / "manifest.json").read_text(encoding="utf-8"))
        return int(manifest["counts"]["images"])
    except (OSError, ValueError, KeyError, TypeError):
        from generator.real.mnist import DEFAULT_DIGITS

        digits = (cfg.real_sizes or DEFAULT_DIGITS).get("real-val", DEFAULT_DIGITS["real-val"])
        return max(1, round(digits * IMAGES_PER_DIGIT))


@dataclass(frozen=True)
class RunPlan:
    iterations: int  # the loop's target
    done: int  # already complete (a resume)
    images: int  # per iteration
    shards: int  # per iteration
    steps: int  # training steps per iteration
    batch_size: int
    eval_images: int  # real-val images evaluated per iteration
    build_real: bool  # the real set is built first
    seconds: float  # the estimate
    cores: int
    cuda: bool  # training may run on CUDA: the CPU estimate then overstates it
    render_img_s: float  # the iteration's render rate (parallel shards and workers, image size)
    load: float = 0.0  # the machine's 1-minute load average before the run (other jobs)
    rates: Rates = MEASURED
    warm: bool = False  # a warm start's pre-step comes first: the init model evaluated on real-val
    first: tuple[str, ...] = ()  # what the loop makes for itself first (flows/loop/inputs.py), in words

    @property
    def todo(self) -> int:
        return max(0, self.iterations - self.done)

    def range_text(self) -> str:
        """``about 10–12 min``: the estimate (quiet machine) to +25 % (other jobs share the cores)."""
        low, high = self.seconds, 1.25 * self.seconds
        if high < 90:
            return f"about {max(1, round(low))}–{max(2, round(high))} s"
        lo_m, hi_m = max(1, round(low / 60)), max(1, round(high / 60))
        return f"about {lo_m} min" if lo_m == hi_m else f"about {lo_m}–{hi_m} min"

    def lines(self) -> list[str]:
        if self.todo == 0:
            return [f"plan: all {_n(self.iterations, 'iteration')} complete already: nothing to render or "
                    "train (the run re-checks tracking only; raise --iterations to continue)"]
        resume = f" (resuming: {self.done} of {self.iterations} done)" if self.done else ""
        what = (f"plan: {_n(self.todo, 'iteration')}{resume} × {self.images} images ({_n(self.shards, 'shard')}), "
                f"{self.steps} training steps × {self.batch_size} images each, evaluated on {self.eval_images} "
                f"real-val images" + ("; builds the real set first" if self.build_real else "")
                + ("; evaluates the init model on real-val first (warm start)" if self.warm else "")
                + "".join(f"; {w}" for w in self.first))
        r, where = self.rates, _n(self.cores, "CPU core")
        scale = self.cores / r.cores
        basis = f"measured on a quiet {r.cores}-core machine" + ("" if scale == 1 else f", scaled to {where}")
        how = (f"plan: {self.range_text()} on {where} (render ≈ {self.render_img_s:.0f} "
               f"img/s, train ≈ {r.train_img_s * scale:.0f} img/s, evaluate ≈ {r.evaluate_img_s * scale:.0f} img/s, "
               f"{basis}; the upper end allows for other jobs sharing the cores)")
        if self.cuda:
            how += "; training may run on CUDA here, faster than this CPU estimate"
        lines = [what, how]
        if self.busy > 1.25:
            lines.append(f"plan: the machine is busy now (load average {self.load:.1f} on {where}): at that load "
                         f"{_duration(self.seconds * self.busy)}")
        return lines

    @property
    def busy(self) -> float:
        """How much slower other jobs make it, from the load average: ``1 + 0.25 * load / cores``.
        Rough, fitted on one run (2026-12-03, 2 cores, load average 6.8 at the start and 7-9 during:
        one demo-size iteration took 412 s against 219 s estimated quiet, 1.9x: render 4x slower,
        training 1.4x, evaluation 2.8x). A fair share (``1 + load / cores``) predicted 4.4x: the
        load average overstates what niced and waiting jobs take from the loop."""
        return 1.0 + 0.25 * max(0.0, self.load) / self.cores


def _duration(seconds: float) -> str:
    return f"about {round(seconds)} s" if seconds < 90 else f"about {round(seconds / 60)} min"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def plan_run(cfg: LoopConfig, *, iterations: int | None = None, cores: int | None = None, cuda: bool = False,
             load: float | None = None, rates: Rates = MEASURED) -> RunPlan:
    """The work ``cfg`` still has to do and its estimated duration on ``cores`` CPU cores
    (default: this machine's); ``iterations`` overrides the target (a run that adds iterations);
    ``load``: other jobs' load average (default: this machine's now; 0 where unknown)."""
    cores = max(1, cores or os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            load = 0.0
    target = cfg.iterations if iterations is None else iterations
    done = min(completed_iterations(cfg), target)
    todo = target - done
    shards = max(1, min(cfg.render_shards, cfg.images_per_iteration))
    build_real = not has_real_set(cfg.real_root)
    eval_images = _real_val_images(cfg)
    scale = cores / rates.cores  # more cores: proportionally faster (an approximation)
    pixels = (cfg.width or 128) * (cfg.height or 128) / (128 * 128)
    render_rate = rates.render_img_s * min(shards * cfg.render_workers, cores) / max(0.25, 0.5 + 0.5 * pixels)
    per_iteration = (cfg.images_per_iteration / render_rate
                     + cfg.steps_per_iteration * cfg.batch_size / (rates.train_img_s * scale)
                     + eval_images / (rates.evaluate_img_s * scale)
                     + rates.iteration_s)
    warm = pre_step_pending(cfg)
    if cfg.policy == "refit":  # a re-fit after every real-val evaluation (flows/loop/refit.py)
        per_iteration += cfg.refit_trials * cfg.refit_images / rates.calibrate_img_s
    first, first_s = _first(cfg, render_rate, rates)
    seconds = (rates.startup_s + (rates.real_set_s / scale if build_real else 0.0) + todo * per_iteration
               + (eval_images / (rates.evaluate_img_s * scale) if warm else 0.0) + first_s)
    return RunPlan(iterations=target, done=done, images=cfg.images_per_iteration, shards=shards,
                   steps=cfg.steps_per_iteration, batch_size=cfg.batch_size, eval_images=eval_images,
                   build_real=build_real, seconds=seconds if todo else rates.startup_s, cores=cores,
                   cuda=cuda, render_img_s=render_rate, load=load, rates=rates, warm=warm, first=first)


def _first(cfg: LoopConfig, render_rate: float, rates: Rates) -> tuple[tuple[str, ...], float]:
    """What the loop makes for itself before its first decision and has not made yet (the
    keywords of flows/loop/inputs.py), in words, and its estimated seconds."""
    from flows.loop import inputs

    words, seconds = [], 0.0
    if cfg.policy_base == inputs.CALIBRATE and not (cfg.work / inputs.CALIBRATION_DIR / inputs.PARAMS_FILE).is_file():
        words.append(f"fits the base to real-val first ({cfg.calibration_trials} trials × "
                     f"{cfg.calibration_images} images)")
        seconds += cfg.calibration_trials * cfg.calibration_images / rates.calibrate_img_s
    if inputs.INIT in (cfg.replay or ()) and not (cfg.work / inputs.REPLAY_INIT_DIR / "manifest.json").is_file():
        from flows.loop.base_model import BaseRecipe, read_recipe

        n = BaseRecipe(**read_recipe(str(cfg.init_model))["recipe"]).images
        words.append(f"renders the init model's {n} training images for replay")
        seconds += n / render_rate
    return tuple(words), seconds
