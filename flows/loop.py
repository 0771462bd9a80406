"""The closed loop as plain library calls: one function per step, one driver.

Iteration *k* of a loop with work directory ``WORK``::

    params_k ──► render_step ──► WORK/iter_k/shard/          (k images; reused if finished)
                 train_step  ──► WORK/iter_k/model/          (init = model_{k-1}; shards 0..k)
                 evaluate_step ► WORK/iter_k/report/         (real-val only)
                 policy_step ──► WORK/iter_k/decision.json   (its params are params_{k+1})
                 then one entry appended to WORK/history.json

``params_0`` is uniform over every range for every policy (one starting point, a fair
comparison); the render budget (``images_per_iteration`` per iteration) is the same for every
policy, so only *what* gets rendered differs. Each step takes the config, the iteration and
paths, and returns a small result, so an orchestrator (Prefect) can wrap each one as a task.

Resume: :func:`run_loop` on the same work directory continues after the last iteration that
has a history entry; a half-done iteration is redone (a finished shard with the same
fingerprint is reused, the model and report are rewritten, the Optuna policy replays a
proposal it already made for the same report). The held-out ``real-test`` split is evaluated
only by reporting code (``evaluate_step(..., "real-test")``, ``final_report=True``) and never
reaches :func:`policy_step`, which refuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.loop_state import SPLITS, IterationRecord, LoopConfig, LoopHistory, iteration_seeds
from generator import atomic
from generator.errors import ConfigError, DataError, ShardError
from generator.params import GenerationParams, uniform_params, validate_params
from generator.scenario import Scenario, load_scenario

__all__ = ["EvalStep", "IterationRecord", "LoopConfig", "LoopHistory", "PolicyStep", "RealData",
           "RenderStep", "TrainStep", "evaluate_step", "iteration_seeds", "policy_step",
           "prepare_real", "render_step", "run_iteration", "run_loop", "starting_params", "train_step"]

REPORT_DIRS = {"real-val": "report", "real-test": "report-test"}


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
    """Iteration 0's params: uniform over every range, whatever the policy."""
    return uniform_params(_scenario(cfg))


def prepare_real(cfg: LoopConfig) -> RealData:
    """Reuse ``cfg.real_root`` when it holds all three splits, else build it (atomically)."""
    from generator.real.build import build_real_set

    root = cfg.real_root
    if all((root / s / "manifest.json").is_file() for s in SPLITS):
        return RealData(root, built=False)
    if cfg.real_dir is not None and root.exists() and any(root.iterdir()):
        raise ConfigError(f"loop.real_dir: {str(root)!r} must hold real-train/, real-val/ and real-test/ "
                          "shards (built by `synthloop data`), or be empty/absent so the loop builds them")
    build_real_set(root, seed=cfg.real_seed, sizes=cfg.real_sizes, overwrite=True, progress=cfg.progress)
    return RealData(root, built=True)


def render_step(cfg: LoopConfig, k: int, params: GenerationParams) -> RenderStep:
    """Write ``iter_k/params.yaml`` and render ``iter_k/shard`` (reused when already finished)."""
    from generator.pipeline import RenderJob, render_shard

    sc = _scenario(cfg)
    validate_params(params, sc)
    d = cfg.iter_dir(k)
    d.mkdir(parents=True, exist_ok=True)
    params.save(d / "params.yaml")
    job = RenderJob(sc, params, n=cfg.images_per_iteration, seed=iteration_seeds(cfg.seed, k)["render"],
                    width=cfg.width or sc.spec.image.width, height=cfg.height or sc.spec.image.height,
                    backend=cfg.backend)
    r = render_shard(job, d / "shard", workers=cfg.render_workers, reuse=True)
    return RenderStep(r.path, r.fingerprint, r.images, r.annotations, round(r.seconds, 3), r.reused)


def train_data(cfg: LoopConfig, shards: list[Path]) -> list[tuple[Path, float]]:
    """``(shard, weight)`` items: every synthetic shard so far (the newest at ``latest_weight``),
    plus real-train for the ``mixed`` strategy."""
    data = [(Path(p), float(cfg.latest_weight if i == len(shards) - 1 else 1.0)) for i, p in enumerate(shards)]
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
    if finished_model(out, data, options, init):
        meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
        return TrainStep(out, int(meta["steps"]), float(meta["final_loss"]), 0.0, 0.0, data, init, reused=True)
    r = train(data, out, **options, init=init, overwrite=True, progress=cfg.progress)
    return TrainStep(r.path, r.steps, r.final_loss, round(time.perf_counter() - t0, 3), r.images_per_s, data, init)


def evaluate_step(cfg: LoopConfig, k: int, model: Path, split: str = "real-val") -> EvalStep:
    """Evaluate ``model`` on a real split into ``iter_k/report`` (real-val, the policy's input)
    or ``iter_k/report-test`` (real-test: ``final_report=True``, for reporting only)."""
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model, headline

    if split not in REPORT_DIRS:
        raise ConfigError(f"evaluate_step: split must be one of {list(REPORT_DIRS)}, but got {split!r}")
    opts = EvalOptions(resamples=cfg.eval_resamples, seed=iteration_seeds(cfg.seed, k)["evaluate"])
    t0 = time.perf_counter()
    path, ev = evaluate_model(model, cfg.real_root / split, cfg.iter_dir(k) / REPORT_DIRS[split], opts,
                              scenario=cfg.scenario, final_report=split == "real-test", overwrite=True,
                              progress=cfg.progress)
    h = headline(ev.report)
    return EvalStep(path, split, h["map50"], h["recall"], h["weakest"], round(time.perf_counter() - t0, 3),
                    ev.report)


def _refuse_held_out(reports: list[dict[str, Any]]) -> None:
    for i, r in enumerate(reports):
        split = (r.get("data") or {}).get("split")
        if split == "real-test" or r.get("final_report"):
            raise DataError(f"policy_step: report #{i + 1} is on split {split!r} (final_report="
                            f"{r.get('final_report')!r}); the policy reads real-val reports only, never "
                            "the held-out real-test")


def make_loop_policy(cfg: LoopConfig) -> Any:
    """The policy object for ``cfg`` (Optuna study ``cfg.study_url`` / ``cfg.study_name``)."""
    from policy.registry import make_policy

    if cfg.policy != "optuna":
        return make_policy(cfg.policy)
    from policy.optuna_policy import OptunaConfig

    return make_policy("optuna", study=cfg.study_url, loop_id=cfg.study_name,
                       config=OptunaConfig(seed=cfg.seed, objective=cfg.objective))


def policy_step(cfg: LoopConfig, k: int, reports: list[dict[str, Any]], params: GenerationParams,
                shard: Path) -> PolicyStep:
    """Ask the policy for the next params from the real-val ``reports`` (``reports[0]`` is the
    objective's), the ``params`` iteration ``k`` rendered and its ``shard``'s conditions;
    write ``iter_k/decision.json``."""
    from generator.shard import Shard
    from policy.base import PolicyInputs

    _refuse_held_out(reports)
    sc = _scenario(cfg)
    t0 = time.perf_counter()
    decision = make_loop_policy(cfg).propose(PolicyInputs(sc, reports, params, Shard(shard).conditions()))
    record = decision.to_dict()
    nxt = validate_params(GenerationParams.model_validate(record["params"]), sc)
    path = cfg.iter_dir(k) / "decision.json"
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


def run_iteration(cfg: LoopConfig, k: int, history: LoopHistory) -> IterationRecord:
    """Render, train, evaluate (real-val) and ask the policy for iteration ``k``."""
    t0 = time.perf_counter()
    params = starting_params(cfg) if k == 0 else load_decision_params(cfg, k - 1)
    r = render_step(cfg, k, params)
    shards = [history.resolve(e.render["path"]) for e in history.entries] + [r.path]
    init = history.resolve(history.entries[-1].train["path"]) if history.entries else None
    t = train_step(cfg, k, shards, init)
    e = evaluate_step(cfg, k, t.path, "real-val")
    p = policy_step(cfg, k, [e.report], params, r.path)
    d = p.decision
    return IterationRecord(
        iteration=k, seeds=iteration_seeds(cfg.seed, k), params=_rel(cfg, cfg.iter_dir(k) / "params.yaml"),
        images_rendered=history.images_rendered + r.images,
        render={"path": _rel(cfg, r.path), "fingerprint": r.fingerprint, "images": r.images,
                "annotations": r.annotations, "seconds": r.seconds, "reused": r.reused},
        train={"path": _rel(cfg, t.path), "steps": t.steps, "final_loss": t.final_loss, "seconds": t.seconds,
               "images_per_s": round(t.images_per_s, 2), "init": None if init is None else _rel(cfg, init),
               "reused": t.reused, "data": [f"{_rel(cfg, p)}:{w}" for p, w in t.data]},
        evaluate={"path": _rel(cfg, e.path), "split": e.split, "map50": e.map50, "recall": e.recall,
                  "weakest": e.weakest, "seconds": e.seconds},
        decision={"path": _rel(cfg, p.path), "policy": d.get("policy"), "trial": d.get("trial"),
                  "trial_source": d.get("trial_source"), "replayed": d.get("replayed", False),
                  "slices": [{"condition": s["condition"], "range": s["range"], "side": s.get("side")}
                             for s in d.get("slices") or []],
                  "changed": [c.get("parameter") for c in d.get("changes") or []], "seconds": p.seconds},
        seconds=round(time.perf_counter() - t0, 3),
    )


def run_loop(cfg: LoopConfig, on_iteration: Callable[[IterationRecord], None] | None = None) -> LoopHistory:
    """Run (or resume) the loop in ``cfg.workdir`` until ``cfg.iterations`` are complete.

    ``on_iteration(record)`` is called after each iteration's history entry is written (an
    exception there stops the loop; the iteration stays complete).
    """
    cfg = cfg.validate()
    history = LoopHistory.open(cfg)
    prepare_real(cfg)
    while len(history.entries) < cfg.iterations:
        record = run_iteration(cfg, len(history.entries), history)
        history.append(record)
        if on_iteration is not None:
            on_iteration(record)
    return history
