"""The loop's driver: what each iteration renders, one iteration, and the resumable loop.

The steps themselves are :mod:`flows.loop.steps`; this module adds the warm start
(:mod:`flows.loop.warm_start`) and the work-directory lock around them.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.loop import inputs, steps
from flows.loop.lock import hold
from flows.loop.state import IterationRecord, LoopConfig, LoopHistory, iteration_seeds
from flows.loop.steps import EvalStep, PolicyStep, RenderStep, TrainStep, _rel, load_decision_params, starting_params
from flows.loop.warm_start import ensure_init, init_params
from generator.params import GenerationParams


def iteration_params(cfg: LoopConfig, k: int) -> GenerationParams:
    """What iteration ``k`` renders: iteration ``k - 1``'s decision; for iteration 0 the init
    model's decision (warm start, flows/loop/warm_start.py), else the starting params."""
    if k == 0 and cfg.init_model is not None:
        return init_params(cfg)
    return starting_params(cfg) if k == 0 else load_decision_params(cfg, k - 1)


def previous_model(cfg: LoopConfig, history: LoopHistory) -> Path | None:
    """The model the next iteration continues from: the last completed iteration's, else the
    init model (warm start), else None (a new model)."""
    if history.entries:
        return history.resolve(history.entries[-1].train["path"])
    return None if cfg.init_model is None else Path(cfg.init_model).resolve()


def loop_shards(history: LoopHistory) -> list[Path]:
    """Every synthetic shard of the completed iterations, in order."""
    return [history.resolve(s["path"]) for e in history.entries for s in e.render["shards"]]


def combined_fingerprint(renders: list[RenderStep]) -> str:
    """One fingerprint for an iteration's shards (order matters)."""
    return hashlib.sha256("\n".join(r.fingerprint for r in renders).encode()).hexdigest()[:32]


def iteration_record(cfg: LoopConfig, k: int, history: LoopHistory, renders: list[RenderStep], t: TrainStep,
                     e: EvalStep, p: PolicyStep, seconds: float,
                     production: dict[str, Any] | None = None) -> IterationRecord:
    """The history entry of iteration ``k`` from its steps' results (``production``: the
    :func:`production_record` of the window it merged, if any)."""
    d, init = p.decision, t.init
    images = sum(r.images for r in renders)
    return IterationRecord(
        iteration=k, seeds=iteration_seeds(cfg.seed, k), params=_rel(cfg, cfg.iter_dir(k) / "params.yaml"),
        images_rendered=history.images_rendered + images,
        render={"fingerprint": combined_fingerprint(renders), "images": images,
                "annotations": sum(r.annotations for r in renders),
                "seconds": round(sum(r.seconds for r in renders), 3),
                "reused": all(r.reused for r in renders),
                "shards": [{"path": _rel(cfg, r.path), "fingerprint": r.fingerprint, "images": r.images,
                            "annotations": r.annotations, "seconds": r.seconds, "reused": r.reused,
                            **({"repaired": r.repaired} if r.repaired else {})} for r in renders]},
        train={"path": _rel(cfg, t.path), "steps": t.steps,
               "final_loss": t.final_loss if math.isfinite(t.final_loss) else None,  # None: an external model
               "seconds": t.seconds,
               "images_per_s": round(t.images_per_s, 2), "init": None if init is None else _rel(cfg, init),
               "reused": t.reused, "data": [f"{_rel(cfg, p)}:{w}" for p, w in t.data],
               **({"external": True, "sha256": t.sha256} if t.sha256 is not None else {})},
        evaluate={"path": _rel(cfg, e.path), "split": e.split, "map50": e.map50, "recall": e.recall,
                  "weakest": e.weakest, "seconds": e.seconds},
        decision={"path": _rel(cfg, p.path), "policy": d.get("policy"), "trial": d.get("trial"),
                  "trial_source": d.get("trial_source"), "replayed": d.get("replayed", False),
                  "slices": [{"condition": s["condition"], "range": s["range"], "side": s.get("side")}
                             for s in d.get("slices") or []],
                  "changed": [c.get("parameter") for c in d.get("changes") or []], "seconds": p.seconds},
        seconds=round(seconds, 3), production=production,
    )


def run_iteration(cfg: LoopConfig, k: int, history: LoopHistory) -> IterationRecord:
    """Render, train, evaluate (real-val) and ask the policy for iteration ``k``."""
    t0 = time.perf_counter()
    params = iteration_params(cfg, k)
    steps.write_params(cfg, k, params)
    renders = steps.render_parts(cfg, k, params)
    new = [r.path for r in renders]
    t = steps.train_step(cfg, k, loop_shards(history) + new, previous_model(cfg, history))
    e = steps.evaluate_step(cfg, k, t.path, "real-val")
    merged = steps.production_step(cfg, k, e.report, [path for path, _ in t.data])
    p = steps.policy_step(cfg, k, [merged or e.report], params, new)
    return iteration_record(cfg, k, history, renders, t, e, p, time.perf_counter() - t0,
                            steps.production_record(cfg, k))


def run_loop(cfg: LoopConfig, on_iteration: Callable[[IterationRecord], None] | None = None) -> LoopHistory:
    """Run (or resume) the loop in ``cfg.workdir`` until ``cfg.iterations`` are complete.

    ``on_iteration(record)`` is called after each iteration's history entry is written (an
    exception there stops the loop; the iteration stays complete). The work directory's lock
    is held throughout (:mod:`flows.loop.lock`).
    """
    cfg = cfg.validate()
    with hold(cfg.work):  # one run per work directory (BusyError for a second one)
        history = LoopHistory.open(cfg)
        steps.prepare_real(cfg)
        inputs.prepare(cfg)  # policy_base: calibrate, replay: [init] (flows/loop/inputs.py)
        ensure_init(cfg, history)  # warm start: evaluate the init model and decide params_0 first
        steps.repair_shards(cfg, history)  # later iterations train on every earlier shard: each must be intact
        while len(history.entries) < cfg.iterations:
            record = run_iteration(cfg, len(history.entries), history)
            history.append(record)
            if on_iteration is not None:
                on_iteration(record)
    return history
