"""Warm start: a loop that improves an existing model (``LoopConfig.init_model``).

Without ``init_model`` iteration 0 renders uniform params and trains a new model. With it, a
pre-step runs first (once per loop; "iteration −1")::

    init model ──► evaluate_init ──► WORK/init/report/        the init model on real-val
                   decide_init   ──► WORK/init/decision.json  the policy's first decision
                   history.json  "init" block                  the pre-step's resume marker

and iteration 0 renders that decision's params (``params_0`` is steered, not uniform) and
trains from the init model (``init = init_model``), so iteration 0's ``model.json`` names the
init model as its parent. The init model is checked up front (:func:`check_init_model`: it
loads, and its scenario and class list are the loop's) before anything is written; its weights'
sha256 is recorded, and a resume refuses a model whose weights changed
(:func:`check_resumed_init`); ``init_model`` itself is part of the loop's identity (not in
``RESUMABLE``), so a resume with another init model is refused too.

The policy reads the init report with synthetic conditions, which tell it which parameter
moves which condition: those of the shards the init model was trained on (from its
``model.json``, when they are still on disk with the same fingerprint), else those of a probe
shard rendered for that purpose (``WORK/init/probe``: ``images_per_iteration`` images of the
starting params, render seed :func:`init_seeds` ``["render"]``; never trained on). A shipped
base model's training shard is usually not on disk, hence the probe.

Killed anywhere in the pre-step, a resume redoes it: the evaluation is deterministic (its seed
is :func:`init_seed`) and the Optuna policy replays the proposal it already made for the same
report, so the history and fingerprints equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flows.loop.checks import check_init_model
from generator.errors import ConfigError, DataError, ShardError

if TYPE_CHECKING:
    import pandas as pd

    from flows.loop.state import LoopConfig, LoopHistory
    from flows.loop.steps import EvalStep, PolicyStep
    from generator.params import GenerationParams

INIT_DIR = "init"
PROBE = "probe"  # WORK/init/probe: the conditions shard when the init model's own are gone
# the pre-step's seeds: child INIT_KEY of SeedSequence(seed) (iterations use children 0, 1, 2, ...)
INIT_KEY = 2**31 - 1


def init_seeds(seed: int) -> dict[str, int]:
    """The pre-step's seeds: evaluation (bootstrap resamples of the init report) and the probe's render."""
    evaluate, render = (int(x) for x in np.random.SeedSequence(seed, spawn_key=(INIT_KEY,)).generate_state(2))
    return {"evaluate": evaluate, "render": render}


def init_seed(seed: int) -> int:
    """The evaluation seed of the pre-step."""
    return init_seeds(seed)["evaluate"]


def init_dir(cfg: LoopConfig) -> Path:
    return cfg.work / INIT_DIR


def init_path(cfg: LoopConfig) -> Path | None:
    """The init model's directory (absolute), or None for a cold start."""
    return None if cfg.init_model is None else Path(cfg.init_model).resolve()


def condition_shards(cfg: LoopConfig) -> list[Path]:
    """The synthetic shards the init model trained on that are still on disk with their
    recorded fingerprint (absolute paths; [] when none is left)."""
    from generator.shard import Shard

    path = init_path(cfg)
    assert path is not None
    if cfg.external:  # an external model's training data is not known: the probe gives the conditions
        return []
    meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    used = []
    for d in meta.get("data") or []:
        if d.get("kind") != "synthetic" or not d.get("path"):
            continue
        p = Path(str(d["path"]))
        try:
            if Shard(p).fingerprint == d.get("fingerprint"):
                used.append(p.resolve())
        except (OSError, ValueError, DataError, ShardError):
            continue
    return used


def probe_job(cfg: LoopConfig) -> Any:
    """The probe shard's RenderJob: ``images_per_iteration`` images of the starting params."""
    from flows.loop.steps import _scenario, starting_params
    from generator.pipeline import RenderJob

    sc = _scenario(cfg)
    return RenderJob(sc, starting_params(cfg), n=cfg.images_per_iteration, seed=init_seeds(cfg.seed)["render"],
                     width=cfg.width or sc.spec.image.width, height=cfg.height or sc.spec.image.height,
                     backend=cfg.backend)


def probe_step(cfg: LoopConfig) -> Path:
    """Render (or reuse, same fingerprint) ``WORK/init/probe``; its path."""
    from generator.pipeline import render_shard

    return Path(render_shard(probe_job(cfg), init_dir(cfg) / PROBE, workers=cfg.render_workers, reuse=True).path)


def shards_conditions(shards: list[Path]) -> pd.DataFrame | None:
    import pandas as pd

    from generator.shard import Shard

    return pd.concat([Shard(s).conditions() for s in shards], ignore_index=True) if shards else None


def evaluate_init(cfg: LoopConfig, executor: Any = None, chunk_images: int = 500) -> EvalStep:
    """Evaluate the init model on real-val into ``WORK/init/report`` (the first policy input);
    ``executor``/``chunk_images`` as :func:`flows.loop.steps.evaluate_step`."""
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model, headline
    from flows.loop.steps import EvalStep

    model = init_path(cfg)
    if model is None:
        raise ConfigError("evaluate_init: the loop has no init_model; nothing to evaluate")
    opts = EvalOptions(resamples=cfg.eval_resamples, seed=init_seed(cfg.seed), score_threshold=cfg.score_threshold)
    t0 = time.perf_counter()
    if cfg.external:  # your detector's predict command, then the same evaluator (flows/loop/external.py)
        from flows.loop.external import DIR
        from flows.loop.steps import external_evaluation

        path, ev = external_evaluation(cfg, model, "real-val", init_dir(cfg) / "report", init_dir(cfg) / DIR,
                                       opts.seed)
    else:
        path, ev = evaluate_model(model, cfg.real_root / "real-val", init_dir(cfg) / "report", opts,
                                  scenario=cfg.scenario, overwrite=True, progress=cfg.progress, executor=executor,
                                  chunk_images=chunk_images)
    h = headline(ev.report)
    return EvalStep(path, "real-val", h["map50"], h["recall"], h["weakest"], round(time.perf_counter() - t0, 3),
                    ev.report)


def decide_init(cfg: LoopConfig, val_report: dict[str, Any], shards: list[Path]) -> PolicyStep:
    """The policy's first decision, from the init report and the conditions of ``shards``
    (:func:`condition_shards`, else the probe): ``WORK/init/decision.json`` (its params are
    iteration 0's)."""
    from flows.loop.steps import _refuse_held_out, _scenario, decide, starting_params
    from policy.base import PolicyInputs

    _refuse_held_out([val_report])
    sc = _scenario(cfg)
    t0 = time.perf_counter()
    inputs = PolicyInputs(sc, [val_report], starting_params(cfg), shards_conditions(shards))
    return decide(cfg, init_dir(cfg), inputs, t0)


def init_record(cfg: LoopConfig, e: EvalStep, p: PolicyStep, shards: list[Path]) -> dict[str, Any]:
    """history.json's ``init`` block (paths relative to the work directory, the model's absolute)."""
    from flows.loop.steps import _rel

    if cfg.external:  # your detector's directory, recorded by content hash (flows.loop.external.dir_sha256)
        from flows.loop.external import dir_sha256

        assert cfg.init_model is not None
        ident = {"path": str(Path(cfg.init_model).resolve()), "weights_sha256": dir_sha256(cfg.init_model),
                 "fingerprint": None, "external": True}
    else:
        ident = check_init_model(cfg.init_model, cfg.scenario)
    d = p.decision
    return {
        "model": ident["path"], "weights_sha256": ident["weights_sha256"], "fingerprint": ident["fingerprint"],
        **({"external": True} if ident.get("external") else {}),
        "seeds": init_seeds(cfg.seed), "conditions_from": [_rel(cfg, Path(u)) for u in shards],
        "evaluate": {"path": _rel(cfg, e.path), "split": e.split, "map50": e.map50, "recall": e.recall,
                     "weakest": e.weakest, "seconds": e.seconds},
        "decision": {"path": _rel(cfg, p.path), "policy": d.get("policy"), "trial": d.get("trial"),
                     "trial_source": d.get("trial_source"), "replayed": d.get("replayed", False),
                     "slices": [{"condition": s["condition"], "range": s["range"], "side": s.get("side")}
                                for s in d.get("slices") or []],
                     "changed": [c.get("parameter") for c in d.get("changes") or []], "seconds": p.seconds},
    }


def init_params(cfg: LoopConfig) -> GenerationParams:
    """Iteration 0's params of a warm-started loop: the init decision's."""
    from flows.loop.steps import _scenario
    from generator.params import GenerationParams, validate_params

    path = init_dir(cfg) / "decision.json"
    try:
        params = GenerationParams.model_validate(json.loads(path.read_text(encoding="utf-8"))["params"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"loop.workdir: {str(path)!r} must hold the init model's decision with `params` "
                          f"({exc}); remove history.json to restart the loop or choose another workdir") from exc
    return validate_params(params, _scenario(cfg))


def ensure_init(cfg: LoopConfig, history: LoopHistory) -> dict[str, Any] | None:
    """Run the pre-step when the loop has an init model and no ``init`` block yet (library
    driver; the Prefect flow calls the steps as tasks). Returns the block (None: cold start)."""
    if cfg.init_model is None:
        return None
    if history.init is None:
        e = evaluate_init(cfg)
        shards = condition_shards(cfg) or [probe_step(cfg)]
        history.set_init(init_record(cfg, e, decide_init(cfg, e.report, shards), shards))
    return history.init
