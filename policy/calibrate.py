"""Calibration: fit the generation distributions so rendered images *measure* like a real set.

Meta-Sim's lesson (DESIGN §5): match the real distribution first, then the task. No model
and no labels are needed: the distance compares the conditions the evaluator slices on
(:mod:`policy.calibration_distance`), measured identically on both sides.

    from policy.calibrate import CalibrationOptions, calibrate
    result = calibrate(scenario, "data/real/real-val", start=None, options=CalibrationOptions(seed=0))
    result.params.save("params.yaml")           # a plain, validated GenerationParams
    result.report["conditions"]["brightness"]    # real vs before vs after

Steps: load and measure the real set (:mod:`policy.calibration_data`); render and measure the
start on the fixed trial images (trial 0, :mod:`policy.calibration_render`); choose the
blocks and the data-driven start (:mod:`policy.calibration_search`, trial 1); then rounds of
small Optuna studies, one per block (worst condition first), each seeded with the incumbent
and searching around it, accepting a trial only when it lowers the total distance. Finally
both the start and the result are rendered as normal shards with the same seed (so the
report's before/after come from the generator itself, not from the trial sampler).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from generator.errors import ConfigError, field_error, is_int
from generator.params import Distribution, GenerationParams, validate_params
from generator.pipeline import RenderJob, check_job
from generator.scenario import Scenario
from policy.calibration_data import RealSet, load_real
from policy.calibration_distance import Distance, Measured, Objective, condition_refs, summary, usable_refs
from policy.calibration_render import TrialRenderer, render_measured
from policy.calibration_search import (
    Block,
    blend,
    block_space,
    decode,
    make_blocks,
    reweighted_proposal,
    with_distributions,
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CalibrationOptions:
    """Knobs of :func:`calibrate` (defaults: ~1 min at 128² on 2 quiet CPU cores, ~3 min on busy ones)."""

    trials: int = 30  # renders of the trial images, the start (trial 0) and the data-driven start included
    images_per_trial: int = 48
    seed: int = 0  # trial images, Optuna samplers, the real subsample and the before/after renders
    uniform_share: float = 0.1  # kept in the result: the model still sees the whole space
    trials_per_block: int = 2  # Optuna trials per block and round
    blocks_per_round: int = 2  # Optuna searches the worst this many blocks per round
    min_effect: float = 0.15  # |ρ| / η a parameter needs in the start render to be fitted
    max_per_condition: int = 6
    stop_distance: float = 0.05  # a condition this close is not searched again
    conditions: tuple[str, ...] | None = None  # default: every measurable mapped condition
    parameters: tuple[str, ...] | None = None  # default: chosen by effect (see calibration_search)
    max_real_images: int = 2000
    verify_images: int | None = None  # before/after shard renders; default images_per_trial
    width: int | None = None  # default: the scenario's image size
    height: int | None = None
    backend: str = "pyrender"

    def check(self, scenario: Scenario) -> CalibrationOptions:
        for name, lo in (("trials", 2), ("images_per_trial", 4), ("trials_per_block", 1), ("blocks_per_round", 1),
                         ("max_per_condition", 1)):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= lo):
                raise field_error(f"--{name.replace('_', '-')}", f"must be an integer >= {lo}", getattr(self, name))
        if not 0.0 <= self.uniform_share < 1.0:
            raise field_error("--uniform-share", "must lie in [0, 1)", self.uniform_share, "use e.g. 0.1")
        if self.seed < 0:
            raise field_error("--seed", "must be an integer >= 0", self.seed)
        unknown = [p for p in self.parameters or () if p not in scenario.parameters]
        if unknown:
            raise ConfigError(f"--parameters: {unknown[0]!r} is not a parameter of scenario {scenario.name!r}; "
                              f"known: {', '.join(scenario.parameters)}")
        return self


@dataclass
class TrialRecord:
    number: int
    block: str  # "start", "reweighted" or the condition searched
    distance: float
    per_condition: dict[str, float]
    accepted: bool
    seconds: float


@dataclass
class CalibrationResult:
    params: GenerationParams  # plain, validated for the scenario
    report: dict[str, Any]  # calibration.json's content (policy.calibration_report writes it)
    trials: list[TrialRecord] = field(default_factory=list)
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # condition -> real/before/after values


class _Search:
    """The incumbent, the trial log and the budget of one calibration."""

    def __init__(self, renderer: TrialRenderer, objective: Objective, budget: int, progress: Progress | None) -> None:
        self.renderer, self.objective, self.budget, self.progress = renderer, objective, budget, progress
        self.trials: list[TrialRecord] = []
        self.best: GenerationParams | None = None
        self.best_distance = Distance(float("inf"), {})
        self.best_measured: Measured | None = None

    @property
    def left(self) -> int:
        return self.budget - len(self.trials)

    def run(self, params: GenerationParams, block: str, measured: Measured | None = None) -> float:
        t0 = time.perf_counter()
        measured = self.renderer.measure(params) if measured is None else measured
        d = self.objective(measured)
        accepted = d.total < self.best_distance.total
        if accepted:
            self.best, self.best_distance, self.best_measured = params, d, measured
        self.trials.append(TrialRecord(len(self.trials), block, d.total, d.per_condition, accepted,
                                       time.perf_counter() - t0))
        if self.progress is not None:
            self.progress(f"trial {len(self.trials)}/{self.budget} [{block}] distance {d.total:.3f} "
                          f"(best {self.best_distance.total:.3f})")
        return d.total


def _search_block(search: _Search, scenario: Scenario, block: Block, k: int, rnd: int, seed: int) -> None:
    assert search.best is not None  # the start ran first
    radius, ratio = 0.15 / rnd, 1.0 + 0.8 / rnd
    space, point = block_space(scenario, block, search.best, radius, ratio)
    sampler_seed = int(np.random.SeedSequence([seed, 4, rnd, len(search.trials)]).generate_state(1)[0])
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not one "study created" line per block
    try:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=2))
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trial(optuna.trial.create_trial(params=point, distributions=space, value=search.best_distance.total))
    for _ in range(k):
        trial = study.ask(space)
        params = with_distributions(search.best, decode(scenario, block, trial.params))
        study.tell(trial, search.run(params, block.condition.name))


def _reweight(search: _Search, scenario: Scenario, blocks: list[Block], alpha: float) -> bool:
    """One trial: every block's data-driven proposal from the incumbent's own render, taken
    ``alpha`` of the way; True when it became the incumbent."""
    assert search.best is not None and search.best_measured is not None
    proposal: dict[str, Distribution] = {}
    for b in blocks:
        real = search.objective.real[b.condition.name]
        proposal.update(reweighted_proposal(scenario, b, real, search.best_measured, search.best))
    if not proposal or search.left <= 0:
        return False
    n = len(search.trials)
    search.run(with_distributions(search.best, blend(scenario, search.best, proposal, alpha)), "reweighted")
    return search.trials[n].accepted


def _rounds(search: _Search, scenario: Scenario, blocks: list[Block], opts: CalibrationOptions) -> None:
    """Rounds of: a reweighting step (halved after a rejection, skipped below a quarter step
    until an Optuna trial moves the incumbent), then Optuna trials on the worst blocks."""
    rnd, alpha = 0, 1.0
    while search.left > 0:
        rnd += 1
        if alpha >= 0.25:
            alpha = 1.0 if _reweight(search, scenario, blocks, alpha) else alpha / 2
        n = len(search.trials)
        _blocks_round(search, scenario, blocks, opts, rnd)
        if any(t.accepted for t in search.trials[n:]):
            alpha = max(alpha, 0.5)
        if len(search.trials) == n and alpha < 0.25:
            return


def _blocks_round(search: _Search, scenario: Scenario, blocks: list[Block], opts: CalibrationOptions,
                  rnd: int) -> None:
    """Optuna trials on the worst ``blocks_per_round`` blocks not yet within ``stop_distance``."""
    dist = search.best_distance.per_condition
    todo = sorted((b for b in blocks if dist[b.condition.name] > opts.stop_distance),
                  key=lambda b: -dist[b.condition.name])
    for block in todo[: opts.blocks_per_round]:
        k = min(opts.trials_per_block, search.left)
        if k <= 0:
            return
        _search_block(search, scenario, block, k, rnd, opts.seed)


def _start_params(scenario: Scenario, start: GenerationParams | None, share: float) -> GenerationParams:
    if start is not None and start.is_mixture:
        raise ConfigError("--params: calibration starts from a plain params file (distributions), but got one with "
                          "`components`; pass its base component's distributions as a plain file, or omit --params")
    base = start.distributions if start is not None else {}
    return validate_params(GenerationParams(scenario=scenario.name, uniform_share=share, distributions=base), scenario)


def calibrate(scenario: Scenario, real: str | Path | RealSet, start: GenerationParams | None = None,
              options: CalibrationOptions | None = None, progress: Progress | None = None,
              executor: Any = None, chunks: int = 2) -> CalibrationResult:
    """Fit plain GenerationParams to the real set (see the module docstring).

    ``executor`` (anything with ``submit``: a ``ProcessPoolExecutor``, a Dask client's
    ``get_executor()``): each trial's images are rendered there in ``chunks`` contiguous ranges
    (each chunk makes and deletes one GL context in its worker process; every image keeps its
    seeds) and the two verification renders run there side by side; the result is the one
    without it."""
    opts = (options or CalibrationOptions()).check(scenario)
    if not is_int(chunks) or chunks < 1:
        raise field_error("chunks", "must be an integer >= 1", chunks, "use the number of workers")
    t0 = time.perf_counter()
    width, height = opts.width or scenario.spec.image.width, opts.height or scenario.spec.image.height
    check_job(RenderJob(scenario, GenerationParams(scenario=scenario.name), opts.images_per_trial, opts.seed, width,
                        height, opts.backend))
    first = _start_params(scenario, start, opts.uniform_share)
    refs = condition_refs(scenario, list(opts.conditions) if opts.conditions else None)
    real_set = real if isinstance(real, RealSet) else load_real(real, opts.max_real_images, opts.seed)
    refs = usable_refs(refs, real_set.measured)
    with TrialRenderer(scenario, opts.images_per_trial, opts.seed, width, height, opts.backend, executor,
                       chunks) as renderer:
        pilot = renderer.measure(first)
        objective = Objective(refs, real_set.measured, pilot)
        search = _Search(renderer, objective, opts.trials, progress)
        search.run(first, "start", pilot)
        explicit = list(opts.parameters) if opts.parameters else None
        blocks = make_blocks(scenario, objective.refs, pilot, explicit, opts.min_effect, opts.max_per_condition)
        _rounds(search, scenario, blocks, opts)
    assert search.best is not None
    fitted = validate_params(search.best, scenario)
    n_verify = opts.verify_images or opts.images_per_trial
    jobs = [RenderJob(scenario, p, n_verify, opts.seed, width, height, opts.backend) for p in (first, fitted)]
    if executor is None:
        before, after = (render_measured(job) for job in jobs)
    else:
        before, after = (f.result() for f in [executor.submit(render_measured, job) for job in jobs])
    report = _report(scenario, real_set, objective, blocks, search, first, fitted, before, after, opts)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    samples = {r.name: {"real": objective.real[r.name], "before": before.values(r), "after": after.values(r)}
               for r in objective.refs}
    return CalibrationResult(params=fitted, report=report, trials=search.trials, samples=samples)


def _report(scenario: Scenario, real_set: RealSet, objective: Objective, blocks: list[Block], search: _Search,
            first: GenerationParams, fitted: GenerationParams, before: Measured, after: Measured,
            opts: CalibrationOptions) -> dict[str, Any]:
    d_before, d_after = objective(before), objective(after)
    conditions = {}
    for ref in objective.refs:
        conditions[ref.name] = {
            "column": ref.column, "level": ref.level, "transform": "log1p" if ref.log else "none",
            "scale": objective.scales[ref.name],
            "real": summary(objective.real[ref.name]), "before": summary(before.values(ref)),
            "after": summary(after.values(ref)),
            "distance": {"before": d_before.per_condition[ref.name], "after": d_after.per_condition[ref.name],
                         "search_start": search.trials[0].per_condition[ref.name],
                         "search_best": search.best_distance.per_condition[ref.name]},
            "parameters": next((b.parameters for b in blocks if b.condition.name == ref.name), []),
        }
    best = min(search.trials, key=lambda t: t.distance)
    return {
        "kind": "synthloop-calibration", "version": 1, "scenario": scenario.name, "real": real_set.source,
        "seed": opts.seed, "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "image_size": [opts.width or scenario.spec.image.width, opts.height or scenario.spec.image.height],
        "distance": {"before": d_before.total, "after": d_after.total, "search_start": search.trials[0].distance,
                     "search_best": best.distance, "improved": d_after.total < d_before.total},
        "conditions": conditions,
        "blocks": [{"condition": b.condition.name, "parameters": b.parameters, "effects": b.effects} for b in blocks],
        "trials_run": len(search.trials), "best_trial": best.number,
        "trials": [asdict(t) for t in search.trials],
        "params": {"before": first.to_dict(), "after": fitted.to_dict()},
        "not_measured": sorted(set(scenario.spec.conditions) - {r.name for r in objective.refs}),
        "notes": _notes(real_set, [opts.width or scenario.spec.image.width, opts.height or scenario.spec.image.height]),
    }


def _notes(real_set: RealSet, size: list[int]) -> list[str]:
    sizes = real_set.source.get("sizes") or []
    if sizes and sizes != [size]:
        return [f"real images are {sizes} (width, height), renders {size}: sharpness, noise, texture and object "
                "size depend on resolution; pass --size to render at the real size"]
    return []
