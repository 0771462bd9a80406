"""The closed loop as plain library calls: one function per step, one driver.

Iteration *k* of a loop with work directory ``WORK``::

    params_k ──► render_step ──► WORK/iter_k/shard-<i>/      (render_shards parts; each reused if finished)
                 train_step  ──► WORK/iter_k/model/          (init = model_{k-1}; shards 0..k)
                 evaluate_step ► WORK/iter_k/report/         (real-val only)
                 production_step WORK/iter_k/report-production/  (only with cfg.production: the
                                                             window merged into the real-val report)
                 policy_step ──► WORK/iter_k/decision.json   (its params are params_{k+1})
                 then one entry appended to WORK/history.json

``params_0`` is uniform over every range for every policy (one starting point, a fair
comparison), unless the loop starts from a model (``init_model``, :mod:`flows.loop.warm_start`):
then a pre-step evaluates that model on real-val (``WORK/init/report``) and the policy's
decision on it (``WORK/init/decision.json``) gives ``params_0``, and iteration 0 trains from
it. The render budget (``images_per_iteration`` per iteration) is the same for every policy,
so only *what* gets rendered differs. Each step takes the config, the iteration and paths, and
returns a small result, so an orchestrator (Prefect) can wrap each one as a task.

Resume: :func:`run_loop` on the same work directory continues after the last iteration that
has a history entry; a half-done iteration is redone (a finished shard with the same
fingerprint is reused, the model and report are rewritten, the Optuna policy replays a
proposal it already made for the same report). The held-out ``real-test`` split is evaluated
only by reporting code (``evaluate_step(..., "real-test")``, ``final_report=True``) and never
reaches :func:`policy_step`, which refuses it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flows.loop import drift, inputs, refit
from flows.loop.state import LoopConfig, LoopHistory, iteration_seeds
from generator import atomic
from generator.errors import ConfigError, DataError, ShardError
from generator.params import GenerationParams, uniform_params, validate_params
from generator.progress import Stage, done_line, report
from generator.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from policy.base import PolicyInputs

__all__ = ["EvalStep", "PolicyStep", "RealData", "RenderStep", "TrainStep", "damaged_shards", "evaluate_step",
           "policy_step", "prepare_real", "production_record", "production_step", "render_job", "render_parts",
           "render_step", "repair_shard", "repair_shards", "starting_params", "train_step", "write_params"]

REPORT_DIRS = {"real-val": "report", "real-test": "report-test"}
PRODUCTION_DIR = "report-production"


@dataclass(frozen=True)
class RealData:
    root: Path
    built: bool  # False when an existing set was reused

    def split(self, name: str) -> Path:
        return self.root / name


@dataclass(frozen=True)
class RenderStep:
    path: Path
    fingerprint: str
    images: int
    annotations: int
    seconds: float
    reused: bool
    repaired: str | None = None  # a damaged shard of this fingerprint was re-rendered: what was wrong


@dataclass(frozen=True)
class TrainStep:
    path: Path
    steps: int
    final_loss: float
    seconds: float
    images_per_s: float
    data: list[tuple[Path, float]]
    init: Path | None
    reused: bool = False  # an intact model from the same inputs was already there
    sha256: str | None = None  # an external model's content hash (flows.loop.external.dir_sha256)


@dataclass(frozen=True)
class EvalStep:
    path: Path  # the report directory
    split: str
    map50: float | None
    recall: float | None
    weakest: str | None
    seconds: float
    report: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class PolicyStep:
    path: Path  # decision.json
    params: GenerationParams  # the next iteration's params
    decision: dict[str, Any] = field(repr=False, default_factory=dict)
    seconds: float = 0.0


def _scenario(cfg: LoopConfig) -> Scenario:
    return load_scenario(cfg.scenario)


def starting_params(cfg: LoopConfig) -> GenerationParams:
    """Iteration 0's params without a warm start: uniform over every range, except that a
    ``mixture``/``calibrated`` loop with a calibrated base starts from the uniform share + that
    base (:func:`policy.mixture.initial_params`; without a base it is exactly uniform)."""
    from policy.registry import WITH_BASE

    if cfg.policy in WITH_BASE and (cfg.policy_base or cfg.production):
        from policy.mixture import initial_params

        return initial_params(_scenario(cfg), _policy_base(cfg))
    return uniform_params(_scenario(cfg))


def prepare_real(cfg: LoopConfig) -> RealData:
    """Reuse ``cfg.real_root`` when it holds all three splits, else build it (atomically)."""
    from generator.real.build import build_real_set
    from generator.real.splits import has_real_set

    root = cfg.real_root
    if has_real_set(root):
        report(f"real set: {root} … reused", show=cfg.progress, always=True)
        return RealData(root, built=False)
    if cfg.real_dir is not None and root.exists() and any(root.iterdir()):
        raise ConfigError(f"loop.real_dir: {str(root)!r} must hold real-train/, real-val/ and real-test/ "
                          "shards (built by `synthloop data`), or be empty/absent so the loop builds them")
    with Stage("real set", None, show=cfg.progress) as stage:
        splits = build_real_set(root, seed=cfg.real_seed, sizes=cfg.real_sizes, overwrite=True, progress=cfg.progress)
        n = sum(s.images for s in splits)
        stage.done(f"built {n} images in {len(splits)} splits at {root}", count=n)
    return RealData(root, built=True)


def part_sizes(n: int, parts: int) -> list[int]:
    """Images per shard when ``n`` images are split into ``parts`` shards (earlier parts take
    the remainder; never an empty part)."""
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def part_seed(cfg: LoopConfig, k: int, part: int) -> int:
    """Render seed of shard ``part`` of iteration ``k``: child ``part`` of the iteration's render seed."""
    render = iteration_seeds(cfg.seed, k)["render"]
    return int(np.random.SeedSequence(render, spawn_key=(part,)).generate_state(1)[0])


def write_params(cfg: LoopConfig, k: int, params: GenerationParams) -> Path:
    """Validate ``params`` against the scenario and write ``iter_k/params.yaml`` (atomically).
    The first step of an iteration: what a killed run left half-written there (``.tmp-*``
    directories of unfinished shards or checkpoints) is removed (one process per work dir)."""
    validate_params(params, _scenario(cfg))
    cfg.iter_dir(k).mkdir(parents=True, exist_ok=True)
    remove_partial(cfg.iter_dir(k))
    path = cfg.iter_dir(k) / "params.yaml"
    params.save(path)
    return path


def remove_partial(directory: Path) -> None:
    """Remove what an interrupted writer left half-written in ``directory`` (its ``.tmp-*``
    entries). Only while nothing else writes there: at an iteration's start, and after all of
    its shards are done (a render worker lost mid-shard, whose task ran again elsewhere)."""
    for partial in directory.glob(".tmp-*"):
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)


def render_job(cfg: LoopConfig, k: int, params: GenerationParams, part: int = 0) -> Any:
    """The :class:`~generator.pipeline.RenderJob` of shard ``part`` of iteration ``k`` (its
    ``fingerprint()`` is known before anything renders: an orchestrator's cache key)."""
    from generator.pipeline import RenderJob

    sizes = part_sizes(cfg.images_per_iteration, cfg.render_shards)
    if not 0 <= part < len(sizes):
        raise ConfigError(f"render_step: part must be in [0, {len(sizes) - 1}], but got {part}")
    sc = _scenario(cfg)
    validate_params(params, sc)
    return RenderJob(sc, params, n=sizes[part], seed=part_seed(cfg, k, part),
                     width=cfg.width or sc.spec.image.width, height=cfg.height or sc.spec.image.height,
                     backend=cfg.backend)


def render_step(cfg: LoopConfig, k: int, params: GenerationParams, part: int = 0) -> RenderStep:
    """Render shard ``part`` of iteration ``k`` into ``iter_k/shard-<part>`` (reused when a
    finished shard with the same fingerprint is there). Parts are independent: an orchestrator
    may render them in parallel processes."""
    from generator.pipeline import render_shard

    job = render_job(cfg, k, params, part)
    # a bar per shard on a terminal (parts may render at once: one row each); the iteration's
    # line comes from render_summary, in the process that waits for every part
    with Stage(f"render iter {k} shard-{part}", job.n, show=cfg.progress, position=part) as stage:
        r = render_shard(job, cfg.iter_dir(k) / f"shard-{part}", workers=cfg.render_workers, reuse=True,
                         progress=lambda _entry: stage.update(1))
        stage.close()  # no line per shard
    if r.repaired:
        report(f"render iter {k}: {_rel(cfg, r.path)} {r.repaired}: re-rendered (same fingerprint)",
               show=True, always=True)
    return RenderStep(r.path, r.fingerprint, r.images, r.annotations, round(r.seconds, 3), r.reused, r.repaired)


def damaged_shards(history: LoopHistory) -> list[tuple[int, int, Path, str, str]]:
    """``(iteration, part, path, fingerprint, problem)`` of every shard of a completed
    iteration that is missing or no longer matches its manifest (later iterations train on
    all of them): what :func:`repair_shard` re-renders."""
    from generator.pipeline import shard_problem

    out = []
    for e in history.entries:
        for part, s in enumerate(e.render["shards"]):
            path = history.resolve(s["path"])
            problem = shard_problem(path, s["fingerprint"])
            if problem is not None:
                out.append((e.iteration, part, path, str(s["fingerprint"]), problem))
    return out


def repair_shard(cfg: LoopConfig, k: int, part: int, out: Path, fingerprint: str) -> RenderStep:
    """Re-render shard ``part`` of completed iteration ``k`` into ``out`` from its recipe
    (``iter_k/params.yaml`` and the part's seed: the same RenderJob, so the same fingerprint
    and bytes), built in a temporary directory and swapped in atomically. A recipe that no
    longer gives ``fingerprint`` is a ShardError (the shard cannot be reproduced)."""
    from generator.params import load_params
    from generator.pipeline import render_shard, shard_problem

    problem = shard_problem(out, fingerprint) or "damaged"
    params_path = cfg.iter_dir(k) / "params.yaml"
    try:
        job = render_job(cfg, k, load_params(params_path, _scenario(cfg)), part)
    except ConfigError as exc:
        raise ShardError(f"{_rel(cfg, out)}: {problem}, and its recipe {_rel(cfg, params_path)} cannot be read "
                         f"({exc}); restore the shard or start the loop in a new workdir") from exc
    if job.fingerprint() != fingerprint:
        raise ShardError(f"{_rel(cfg, out)}: {problem}, and re-rendering it from {_rel(cfg, params_path)} would give "
                         f"fingerprint {job.fingerprint()}, but history.json records {fingerprint}; restore the shard "
                         "(or iter_k/params.yaml, or the generator version) or start the loop in a new workdir")
    t0 = time.perf_counter()
    r = render_shard(job, out, workers=cfg.render_workers, overwrite=True)
    if r.fingerprint != fingerprint:  # cannot happen while RenderJob.fingerprint is the job's identity
        raise ShardError(f"{_rel(cfg, out)}: re-rendered with fingerprint {r.fingerprint}, but history.json "
                         f"records {fingerprint}; start the loop in a new workdir")
    report(f"render iter {k}: {_rel(cfg, out)} {problem}: re-rendered (same fingerprint) "
           f"in {time.perf_counter() - t0:.1f} s", show=True, always=True)
    return RenderStep(r.path, r.fingerprint, r.images, r.annotations, round(r.seconds, 3), False, problem)


def note_repairs(cfg: LoopConfig, history: LoopHistory, repaired: list[tuple[int, RenderStep]]) -> None:
    """Record each repaired shard in its iteration's history entry (``render.repairs``) and save."""
    for k, r in repaired:
        notes = history.entries[k].render.setdefault("repairs", [])
        notes.append({"shard": _rel(cfg, r.path), "problem": r.repaired})
    if repaired:
        history.save()


def repair_shards(cfg: LoopConfig, history: LoopHistory) -> list[RenderStep]:
    """Re-render every damaged or missing shard of the completed iterations (one after the
    other; the Prefect flow submits them to its process pool instead)."""
    done = [(k, repair_shard(cfg, k, part, path, fp)) for k, part, path, fp, _ in damaged_shards(history)]
    note_repairs(cfg, history, done)
    return [r for _, r in done]


def render_parts(cfg: LoopConfig, k: int, params: GenerationParams) -> list[RenderStep]:
    """Every shard of iteration ``k``, one after the other (the Prefect flow maps them instead)."""
    t0 = time.perf_counter()
    steps = [render_step(cfg, k, params, i) for i in range(len(part_sizes(cfg.images_per_iteration,
                                                                          cfg.render_shards)))]
    render_summary(cfg, k, steps, time.perf_counter() - t0)
    return steps


def render_summary(cfg: LoopConfig, k: int, steps: list[RenderStep], seconds: float) -> None:
    """The render stage's one line (``cfg.progress``; generator/progress.py): printed when the
    shards' bars were not drawn, and always when every shard was reused."""
    images = sum(r.images for r in steps)
    if all(r.reused for r in steps):
        report(f"render iter {k}: {images} images in {len(steps)} shards … reused (same fingerprints)",
               show=cfg.progress, always=True)
        return
    report(done_line(f"render iter {k}", f"{images} images in {len(steps)} shards", seconds, images),
           show=cfg.progress)


def train_data(cfg: LoopConfig, shards: list[Path]) -> list[tuple[Path, float]]:
    """``(shard, weight)`` items: every synthetic shard so far (the newest at ``latest_weight``),
    the ``replay`` shards weighted so that they make ``replay_share`` of the samples, plus
    real-train for the ``mixed`` strategy."""
    data = [(Path(p), float(cfg.latest_weight if i == len(shards) - 1 else 1.0)) for i, p in enumerate(shards)]
    if cfg.replay:
        from generator.shard import Shard

        def images(path: Path) -> int:  # the manifest's count: no need to read annotations.json
            shard = Shard(path)
            n = (shard.manifest.get("counts") or {}).get("images")
            return int(n) if isinstance(n, int) else len(shard.coco["images"])

        mass = sum(w * images(p) for p, w in data)
        replay = inputs.replay_paths(cfg)
        count = sum(images(p) for p in replay)
        w = round(cfg.replay_share / (1 - cfg.replay_share) * mass / count, 6)
        data = [(p, w) for p in replay] + data
    if cfg.strategy == "mixed":
        data.append((cfg.real_root / "real-train", 1.0))
    return data


def _train_options(cfg: LoopConfig, k: int) -> dict[str, Any]:
    return {"strategy": cfg.strategy, "steps": cfg.steps_per_iteration, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "seed": iteration_seeds(cfg.seed, k)["train"], "device": cfg.device,
            "real_ratio": cfg.real_ratio, "num_threads": cfg.num_threads}


def finished_model(out: Path, data: list[tuple[Path, float]], options: dict[str, Any], init: Path | None) -> bool:
    """True when ``out`` holds an intact model trained on exactly these inputs, read from its
    ``model.json`` (docs/trainer.md): shard fingerprints and weights, training options (device
    and threads aside), parent weights; and ``model.pt`` matches its recorded sha256."""
    from generator.shard import Shard, sha256_file
    from trainer.config import TrainConfig

    try:
        meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
        parent = json.loads((init / "model.json").read_text(encoding="utf-8"))["weights_sha256"] if init else None
        expected = [[Shard(p).fingerprint, w] for p, w in data]
        intact = sha256_file(out / "model.pt") == meta["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError, DataError, ShardError):
        return False
    loose = ("device", "num_threads")
    want = {k: v for k, v in TrainConfig(**options).to_dict().items() if k not in loose}
    got = {k: v for k, v in (meta.get("train_config") or {}).items() if k not in loose}
    return (intact and got == want and (meta.get("init") or {}).get("weights_sha256") == parent
            and [[d.get("fingerprint"), d.get("weight")] for d in meta.get("data") or []] == expected)


def train_step(cfg: LoopConfig, k: int, shards: list[Path], init: Path | None) -> TrainStep:
    """Train ``iter_k/model`` on ``shards`` for ``steps_per_iteration`` steps, continuing from
    ``init`` (the previous iteration's model) when given. A model already there from the same
    inputs (:func:`finished_model`) is kept; anything else there is replaced."""
    from trainer.api import train

    if not shards:
        raise ConfigError(f"train_step: iteration {k} needs at least one synthetic shard, but got none")
    data, options, out = train_data(cfg, shards), _train_options(cfg, k), cfg.iter_dir(k) / "model"
    t0 = time.perf_counter()
    if cfg.external:
        return _external_train(cfg, k, data, options, init)
    if finished_model(out, data, options, init):
        meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
        report(f"train iter {k}: {_rel(cfg, out)} … reused (same inputs)", show=cfg.progress, always=True)
        return TrainStep(out, int(meta["steps"]), float(meta["final_loss"]), 0.0, 0.0, data, init, reused=True)
    r = train(data, out, **options, init=init, overwrite=True, progress=cfg.progress)
    report(done_line(f"train iter {k}", f"{r.steps} steps × {cfg.batch_size} images on {len(data)} shard(s)",
                     time.perf_counter() - t0, r.images_seen, extra=f"final loss {r.final_loss:.3f}"),
           show=cfg.progress)
    return TrainStep(r.path, r.steps, r.final_loss, round(time.perf_counter() - t0, 3), r.images_per_s, data, init)


def _external_train(cfg: LoopConfig, k: int, data: list[tuple[Path, float]], options: dict[str, Any],
                    init: Path | None) -> TrainStep:
    """:func:`train_step` with ``cfg.external_train`` (flows/loop/external.py)."""
    from flows.loop import external

    path, sha, seconds, reused = external.train(cfg, k, data, init, options, list(_scenario(cfg).classes))
    what = "reused (same request)" if reused else f"done in {seconds:.1f} s"
    report(f"train iter {k}: external model {_rel(cfg, path)} (sha256 {sha[:12]}…) … {what}",
           show=cfg.progress, always=True)
    return TrainStep(path, cfg.steps_per_iteration, float("nan"), round(seconds, 3), 0.0, data, init,
                     reused=reused, sha256=sha)


def external_evaluation(cfg: LoopConfig, model: Path, split: str, out: Path, step_dir: Path, seed: int) -> Any:
    """Run ``cfg.external_predict`` with ``model`` on real ``split`` (detections in
    ``step_dir/predict-<split>.json``), then the evaluator's :func:`evaluate_predictions`
    into ``out``; ``(report dir, Evaluation)``."""
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_predictions
    from flows.loop import external

    opts = EvalOptions(resamples=cfg.eval_resamples, seed=seed, score_threshold=cfg.score_threshold)
    dets = external.predict(cfg, model, cfg.real_root / split, step_dir, f"predict-{split}")
    path, ev = evaluate_predictions(dets, cfg.real_root / split, out, opts, scenario=cfg.scenario,
                                    final_report=split == "real-test", overwrite=True)
    return path, ev


def evaluate_step(cfg: LoopConfig, k: int, model: Path, split: str = "real-val", executor: Any = None,
                  chunk_images: int = 500) -> EvalStep:
    """Evaluate ``model`` on a real split into ``iter_k/report`` (real-val, the policy's input)
    or ``iter_k/report-test`` (real-test: ``final_report=True``, for reporting only).
    ``executor`` (anything with ``submit``; the flow passes its Dask cluster's): a split of more
    than ``chunk_images`` images is predicted there in chunks, with the same report."""
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model, headline

    if split not in REPORT_DIRS:
        raise ConfigError(f"evaluate_step: split must be one of {list(REPORT_DIRS)}, but got {split!r}")
    opts = EvalOptions(resamples=cfg.eval_resamples, seed=iteration_seeds(cfg.seed, k)["evaluate"],
                       score_threshold=cfg.score_threshold)
    t0 = time.perf_counter()
    if cfg.external:
        from flows.loop.external import DIR

        path, ev = external_evaluation(cfg, model, split, cfg.iter_dir(k) / REPORT_DIRS[split],
                                       cfg.iter_dir(k) / DIR, opts.seed)
    else:
        path, ev = evaluate_model(model, cfg.real_root / split, cfg.iter_dir(k) / REPORT_DIRS[split], opts,
                                  scenario=cfg.scenario, final_report=split == "real-test", overwrite=True,
                                  progress=cfg.progress, executor=executor, chunk_images=chunk_images)
    h = headline(ev.report)
    n = int((ev.report["data"].get("counts") or {}).get("images") or 0)
    report(done_line(f"evaluate iter {k}", f"{n} {split} images", time.perf_counter() - t0, n,
                     extra="mAP@0.5 –" if h["map50"] is None else f"mAP@0.5 {h['map50']:.3f}"), show=cfg.progress)
    return EvalStep(path, split, h["map50"], h["recall"], h["weakest"], round(time.perf_counter() - t0, 3),
                    ev.report)


def production_step(cfg: LoopConfig, k: int, val_report: dict[str, Any], shards: list[Path]) -> dict[str, Any] | None:
    """Merge the frozen production window ``cfg.production`` into iteration ``k``'s real-val
    report: its records are re-sliced with *this* report's bin edges, drift is measured against
    ``shards`` (what the iteration's model trained on), and ``iter_k/report-production/``
    (signals.json/md, report.json/md) is written atomically. Returns the merged report for the
    policy, or None without a window (or when its records give no data)."""
    from evaluator.production import ProductionOptions, merge_reports, write_outputs
    from evaluator.production.frozen import replay_signals

    if cfg.production is None:
        return None
    _refuse_held_out([val_report])
    threshold = float((val_report.get("settings") or {}).get("score_threshold", cfg.score_threshold))
    options = ProductionOptions.at_threshold(threshold)
    sc = _scenario(cfg)
    signals = replay_signals(cfg.production, shards, sc, options, val_report)
    merged = merge_reports(val_report, signals, sc, options) if signals["status"] == "ok" else None
    write_outputs(cfg.iter_dir(k) / PRODUCTION_DIR, signals, merged, overwrite=True)
    return merged


def production_record(cfg: LoopConfig, k: int) -> dict[str, Any] | None:
    """The history entry's ``production`` block of iteration ``k`` (None without a window)."""
    if cfg.production is None:
        return None
    out = cfg.iter_dir(k) / PRODUCTION_DIR
    signals = json.loads((out / "signals.json").read_text(encoding="utf-8"))
    merged = (out / "report.json").is_file()
    weighting = json.loads((out / "report.json").read_text())["production"]["weighting"] if merged else None
    return {"window": signals["window"]["id"], "path": _rel(cfg, Path(cfg.production).resolve()),
            "report": _rel(cfg, out), "status": signals["status"], "merged": merged,
            "drifted": list(signals.get("drifted") or []), "weighting": weighting,
            "calibration": drift.record(cfg)}  # the base re-fitted to the window, if any


def _refuse_held_out(reports: list[dict[str, Any]]) -> None:
    for i, r in enumerate(reports):
        split = (r.get("data") or {}).get("split")
        if split == "real-test" or r.get("final_report"):
            raise DataError(f"policy_step: report #{i + 1} is on split {split!r} (final_report="
                            f"{r.get('final_report')!r}); the policy reads real-val reports only, never "
                            "the held-out real-test")


def make_loop_policy(cfg: LoopConfig) -> Any:
    """The policy object for ``cfg`` (Optuna study ``cfg.study_url`` / ``cfg.study_name``)."""
    from policy.registry import STEERED, WITH_BASE, make_policy

    base = _policy_base(cfg) if cfg.policy in WITH_BASE else None
    if cfg.policy not in STEERED:
        return make_policy(cfg.policy, base=base)
    from policy.optuna_policy import OptunaConfig

    return make_policy(cfg.policy, study=cfg.study_url, loop_id=cfg.study_name,
                       config=OptunaConfig(seed=cfg.seed, objective=cfg.objective), base=base)


def _policy_base(cfg: LoopConfig) -> GenerationParams | None:
    """The base of a ``mixture``/``calibrated`` loop: ``cfg.policy_base`` (None = uniform), re-fitted
    to the frames of a drifted production window when the loop merges one
    (:func:`flows.loop.drift.drift_base`)."""
    from flows.loop.drift import drift_base
    from policy.mixture import load_base

    scenario = _scenario(cfg)
    path = inputs.base_path(cfg)
    return drift_base(cfg, scenario, None if path is None else load_base(path, scenario))


def policy_step(cfg: LoopConfig, k: int, reports: list[dict[str, Any]], params: GenerationParams,
                shards: list[Path]) -> PolicyStep:
    """Ask the policy for the next params from the real-val ``reports`` (``reports[0]`` is the
    objective's), the ``params`` iteration ``k`` rendered and its ``shards``' conditions;
    write ``iter_k/decision.json``."""
    import pandas as pd

    from generator.shard import Shard
    from policy.base import PolicyInputs

    _refuse_held_out(reports)
    sc = _scenario(cfg)
    t0 = time.perf_counter()
    conditions = pd.concat([Shard(s).conditions() for s in shards], ignore_index=True)
    step = decide(cfg, cfg.iter_dir(k), PolicyInputs(sc, reports, params, conditions), t0)
    record = step.decision
    changed = [c.get("parameter") for c in record.get("changes") or []]
    trial = "" if record.get("trial") is None else f" trial {record['trial']}"
    report(done_line(f"policy iter {k}", f"{record.get('policy')}{trial}",
                     time.perf_counter() - t0, extra=f"changed: {', '.join(map(str, changed)) or 'nothing'}"),
           show=cfg.progress, always=True)  # no bar: one line in both modes
    return step


def decide(cfg: LoopConfig, step_dir: Path, inputs: PolicyInputs, t0: float) -> PolicyStep:
    """The loop policy's decision on ``inputs`` (plus, for ``refit``, the re-fit target made from
    ``step_dir/report``), written to ``step_dir/decision.json``; ``t0`` is when the step began."""
    target = refit.refit_target(cfg, step_dir, inputs.scenario, _policy_base(cfg))
    decision = make_loop_policy(cfg).propose(dataclasses.replace(inputs, target=target))
    record = refit.with_record(decision.to_dict(), step_dir)
    nxt = validate_params(GenerationParams.model_validate(record["params"]), inputs.scenario)
    path = step_dir / "decision.json"
    atomic.write_json(path, record)
    return PolicyStep(path, nxt, record, round(time.perf_counter() - t0, 3))


def load_decision_params(cfg: LoopConfig, k: int) -> GenerationParams:
    """The params iteration ``k``'s decision proposed (= iteration ``k + 1``'s params)."""
    path = cfg.iter_dir(k) / "decision.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        params = GenerationParams.model_validate(record["params"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"loop.workdir: {str(path)!r} must hold iteration {k}'s decision with `params` "
                          f"({exc}); remove history.json to restart the loop or choose another workdir") from exc
    return validate_params(params, _scenario(cfg))


def _rel(cfg: LoopConfig, p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(cfg.work.resolve()))
    except ValueError:
        return str(p)
