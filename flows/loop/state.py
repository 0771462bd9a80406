"""The loop's configuration and durable state: what :mod:`flows.loop` reads and writes.

- :class:`LoopConfig` — every setting of one loop, primitives only (JSON-able, so a Prefect
  deployment can take it as a parameter), checked by :meth:`LoopConfig.validate` with one-line
  :class:`~generator.errors.ConfigError`\\ s.
- :func:`iteration_seeds` — the render / train / evaluation seeds of iteration *k*, derived
  from the loop seed with ``numpy.random.SeedSequence(seed, spawn_key=(k,))``: the same in
  every process and for every policy (so two policies at one seed differ only in their params).
- :class:`LoopHistory` — ``WORK/history.json``: the config and one :class:`IterationRecord`
  per *completed* iteration, rewritten atomically after each one. It is the resume marker: an
  iteration without an entry is redone from the start.

Paths in ``history.json`` are relative to the work directory, so a work directory can move.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from flows.loop.inputs import CALIBRATE, INIT
from generator import atomic
from generator.errors import ConfigError, field_error, is_int

HISTORY_FILE = "history.json"
HISTORY_FORMAT = "synthloop-loop/1"
# What a loop writes in its work directory (anything else there means it is not a loop's).
OWN = re.compile(r"^(history\.json|policy\.db.*|real|init|iter_\d+|\.tmp-.*|\.loop\.lock)$")
# Settings that may change between a run and its resume: how, not what, is computed, plus
# `production`, a per-run input (the window each iteration of *this* run merges; every
# iteration records the window it used in its history entry, see docs/production.md).
# settings a resume may change: how far, where and how fast it runs, and the production window
# given to this run (with how a mixture loop re-fits its base to that window's frames)
RESUMABLE = ("iterations", "workdir", "render_workers", "device", "num_threads", "progress", "production",
             "drift_calibration_trials", "drift_calibration_images")


@dataclass(frozen=True)
class LoopConfig:
    """One closed loop: render → train → evaluate on real-val → policy, ``iterations`` times.

    ``real_dir`` holds (or receives) ``real-train/``, ``real-val/``, ``real-test/`` (default
    ``WORK/real``); ``study`` is the Optuna storage (default ``WORK/policy.db``) and ``loop_id``
    the study name (default ``<scenario>-<policy>-seed<seed>``). ``latest_weight`` is the
    sampling weight of the newest shard relative to older ones (1 = plain concatenation).
    ``production`` is a frozen production window merged into every report this run's
    iterations give the policy (:func:`flows.loop.steps.production_step`).
    """

    workdir: str
    scenario: str = "digits"
    iterations: int = 3
    images_per_iteration: int = 400
    policy: str = "optuna"
    objective: str = "map50"
    strategy: str = "synthetic-only"  # or "mixed" (adds real-train at real_ratio)
    real_ratio: float | None = None
    steps_per_iteration: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    latest_weight: float = 1.0
    seed: int = 0
    width: int | None = None  # default: the scenario's image size
    height: int | None = None
    backend: str = "pyrender"
    render_workers: int = 1  # processes inside one shard's render
    render_shards: int = 2  # shards per iteration (an orchestrator renders them in parallel)
    real_dir: str | None = None
    real_seed: int = 0
    real_sizes: dict[str, int] | None = None  # digits per split; default generator's sizes
    study: str | None = None
    loop_id: str | None = None
    # warm start: a model directory (`synthloop train`'s model.json + model.pt) the loop improves;
    # it is evaluated on real-val before iteration 0 renders (flows/loop/warm_start.py). None: cold start
    init_model: str | None = None
    eval_resamples: int = 200
    # the evaluator's operating point for recall and slices: a few minutes of CPU training gives
    # low scores, and at the evaluator's usual 0.3 recall (and so every slice) would sit near 0
    score_threshold: float = 0.1
    device: str = "auto"
    num_threads: int | None = None
    progress: bool = False
    # a frozen production window (WINDOWS/<id>/, written by the monitor): every iteration this
    # run computes merges it into the failure report the policy reads (None: real-val alone)
    production: str | None = None
    # replay buffer: synthetic shards trained on in every iteration beside the loop's own (e.g.
    # the data the init model was trained on), so a warm-started model does not forget the
    # basics while it adapts to a few hundred new images; together they make `replay_share` of
    # the training samples (flows.loop.steps.train_data)
    # (flows.loop.steps.train_data); "init" = the init model's own training data, re-rendered
    # from its base-model recipe into WORK/replay-init (flows.loop.inputs)
    replay: list[str] | None = None
    replay_share: float = 0.5
    # policies mixture/refit/calibrated: the calibrated base params file (`synthloop calibrate`'s
    # output), or "calibrate": the loop fits it to real-val itself before its first decision
    # (calibration_trials Optuna trials of calibration_images rendered images; flows.loop.inputs);
    # None = uniform base. Read with policy.mixture.load_base when the policy is built.
    policy_base: str | None = None
    calibration_trials: int = 48
    calibration_images: int = 32
    # mixture/calibrated with a drifted production window: re-fit the base to the window's frames
    # first (flows.loop.drift): Optuna trials of that many rendered images; 0 turns it off
    drift_calibration_trials: int = 16
    drift_calibration_images: int = 32
    # policy "refit" only (flows/loop/refit.py): after each real-val evaluation, re-fit the base
    # to real-val with each missed object counted failure_weight times: Optuna trials of
    # refit_images rendered images
    refit_trials: int = 16
    refit_images: int = 32
    failure_weight: int = 2
    # your own detector (flows/loop/external.py, docs/trainer.md "Your own model in the loop"): the
    # commands (a string, shell-split, or an argv list) that train a model directory and write
    # COCO detections from it, each given a JSON request file; None: the built-in CenterNet
    external_train: str | list[str] | None = None
    external_predict: str | list[str] | None = None

    def validate(self) -> LoopConfig:
        """Check every field; return ``self`` (raises ConfigError naming the field)."""
        for name, low in (("iterations", 1), ("images_per_iteration", 1), ("steps_per_iteration", 1),
                          ("batch_size", 1), ("seed", 0), ("render_workers", 1), ("render_shards", 1), ("real_seed", 0),
                          ("eval_resamples", 0), ("drift_calibration_images", 4), ("refit_trials", 2),
                          ("refit_images", 4), ("calibration_trials", 2), ("calibration_images", 4)):
            _int_at_least(name, getattr(self, name), low)
        n = self.drift_calibration_trials  # 0: off; else as many as a calibration needs
        if not is_int(n) or (n != 0 and n < 2):
            raise field_error("loop.drift_calibration_trials", "must be 0 (off) or an integer >= 2", n,
                              "use e.g. 16")
        from policy.failure_set import check_weight

        check_weight(self.failure_weight, "loop.failure_weight")
        for name in ("width", "height", "num_threads"):
            if getattr(self, name) is not None:
                _int_at_least(name, getattr(self, name), 1)
        for name in ("lr", "latest_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise field_error(f"loop.{name}", "must be a finite number > 0", v)
        self._check_replay()
        t = self.score_threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < 1:
            raise field_error("loop.score_threshold", "must be a number in [0, 1)", t)
        if not str(self.workdir):
            raise field_error("loop.workdir", "must be a directory path", self.workdir)
        if self.production is not None:
            from evaluator.production.frozen import read_info

            if not isinstance(self.production, str) or not self.production:
                raise field_error("loop.production", "must be a window directory path or null", self.production)

            read_info(self.production)
        from flows.loop.external import check_settings

        check_settings(self.external_train, self.external_predict)  # both or neither, each on PATH
        self._check_choices()
        from flows.loop.checks import check_runnable

        check_runnable(self)  # scenario exists, image size and device usable: before anything is written
        if self.policy_base is not None:
            if not isinstance(self.policy_base, str) or not self.policy_base:
                raise field_error("loop.policy_base", "must be a params file path or null", self.policy_base)
            from policy.registry import WITH_BASE

            if self.policy not in WITH_BASE:
                *first, last = (repr(n) for n in WITH_BASE)
                raise field_error("loop.policy_base", f"applies to policies {', '.join(first)} and {last} only",
                                  self.policy_base, "drop it or set policy='mixture'")
            if self.policy_base != CALIBRATE:  # the file itself, before anything is written
                _check_policy_base(self.policy_base, self.scenario)
        elif self.policy == "calibrated":
            raise field_error("loop.policy_base", "policy 'calibrated' needs the calibrated params file",
                              self.policy_base, "pass the params `synthloop calibrate` wrote, or 'calibrate'")
        return self

    def _check_replay(self) -> None:
        r = self.replay_share
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 < r < 1:
            raise field_error("loop.replay_share", "must lie strictly between 0 and 1", r, "e.g. 0.5")
        if self.replay is None:
            return
        if not isinstance(self.replay, list | tuple) or not self.replay:
            raise field_error("loop.replay", "must be a non-empty list of shard directories or null", self.replay)
        for i, path in enumerate(self.replay):
            if path == INIT:
                self._check_replay_init(i)
            elif not isinstance(path, str) or not (Path(path) / "manifest.json").is_file():
                raise field_error(f"loop.replay[{i}]", "must be a shard directory (with manifest.json)", path,
                                  "render it (e.g. `synthloop render`) or drop it from replay")

    def _check_replay_init(self, i: int) -> None:
        """``replay: [init]`` needs an init model made by a recipe it can re-render."""
        from flows.loop.base_model import RECIPE_FILE

        if self.init_model is None or not (Path(self.init_model) / RECIPE_FILE).is_file():
            raise field_error(f"loop.replay[{i}]", f"'{INIT}' needs an init_model with a {RECIPE_FILE} "
                              "(a base model of `synthloop base-model`)", self.init_model,
                              "pass the init model's training shard instead, or drop it from replay")

    def _check_choices(self) -> None:
        from generator.pipeline import BACKENDS
        from policy.registry import check_name

        check_name(self.policy)
        if self.backend not in BACKENDS:
            raise field_error("loop.backend", f"must be one of {list(BACKENDS)}", self.backend)
        if self.strategy not in ("synthetic-only", "mixed"):
            raise field_error("loop.strategy", "must be 'synthetic-only' or 'mixed' (with real-train)",
                              self.strategy, "the loop varies synthetic data; real-only ignores it")
        if self.real_ratio is not None and self.strategy != "mixed":
            raise field_error("loop.real_ratio", "applies to strategy 'mixed' only", self.real_ratio,
                              "drop it or set strategy='mixed'")
        if self.objective not in ("map50", "recall", "slice_recall"):
            raise field_error("loop.objective", "must be one of map50, recall, slice_recall", self.objective)
        if self.init_model is not None and self.external:
            from flows.loop.external import check_model_dir

            check_model_dir("init_model", self.init_model)  # your detector's directory: hashed, not loaded
        elif self.init_model is not None:
            from flows.loop.checks import check_init_model

            check_init_model(self.init_model, self.scenario)

    @property
    def external(self) -> bool:
        """True when the loop trains and evaluates an external detector (flows/loop/external.py)."""
        return self.external_train is not None

    @property
    def work(self) -> Path:
        return Path(self.workdir)

    @property
    def real_root(self) -> Path:
        return Path(self.real_dir) if self.real_dir else self.work / "real"

    @property
    def study_url(self) -> str:
        return self.study or str(self.work / "policy.db")

    @property
    def study_name(self) -> str:
        return self.loop_id or f"{self.scenario}-{self.policy}-seed{self.seed}"

    def iter_dir(self, k: int) -> Path:
        return self.work / f"iter_{k}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise field_error("loop config", f"has unknown keys; known: {', '.join(sorted(known))}", unknown)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"loop config: {exc}; pass at least `workdir`") from exc


def _check_policy_base(path: str, scenario: str) -> None:
    """A calibrated base must load as params of the loop's scenario (one line naming the field)."""
    from generator.scenario import load_scenario
    from policy.mixture import load_base

    try:
        load_base(path, load_scenario(scenario))
    except (ConfigError, OSError, ValueError) as exc:
        raise ConfigError(f"loop.policy_base: {path!r} is not a usable params file of scenario {scenario!r} "
                          f"({exc}); pass the params `synthloop calibrate` wrote") from None


def _int_at_least(name: str, value: Any, low: int) -> None:
    if not is_int(value) or value < low:
        raise field_error(f"loop.{name}", f"must be an integer >= {low}", value)


def iteration_seeds(seed: int, k: int) -> dict[str, int]:
    """Render, train and evaluation seeds of iteration ``k`` (child ``k`` of ``SeedSequence(seed)``)."""
    render, train, evaluate = (int(x) for x in np.random.SeedSequence(seed, spawn_key=(k,)).generate_state(3))
    return {"render": render, "train": train, "evaluate": evaluate}


@dataclass
class IterationRecord:
    """One completed iteration as ``history.json`` stores it (paths relative to the work dir)."""

    iteration: int
    seeds: dict[str, int]
    params: str  # iter_k/params.yaml: what this iteration rendered
    images_rendered: int  # cumulative, this iteration included
    render: dict[str, Any]  # path, fingerprint, images, annotations, seconds, reused
    train: dict[str, Any]  # path, steps, final_loss, seconds, images_per_s, init, data
    evaluate: dict[str, Any]  # path, split, map50, recall, weakest, seconds
    decision: dict[str, Any]  # path, policy, trial, trial_source, slices, changed, seconds
    seconds: float = 0.0
    # the production window merged into the policy's report (window, path, report, status,
    # drifted, weighting); None without one (and in histories written before windows existed)
    production: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IterationRecord:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def check_workdir(work: Path) -> None:
    """Refuse a loop work directory that is a file, or a directory without ``history.json``
    holding files a loop does not write (someone else's directory)."""
    if (work / HISTORY_FILE).is_file():
        return
    if work.exists() and not work.is_dir():
        raise field_error("loop.workdir", "must be a directory", str(work))
    foreign = sorted(p.name for p in work.iterdir() if not OWN.match(p.name)) if work.is_dir() else []
    if foreign:
        raise field_error("loop.workdir", "must be absent, empty or a loop's work directory",
                          f"{work} holding {foreign[:3]}", "choose a new directory for the loop")


@dataclass
class LoopHistory:
    """``WORK/history.json``: the loop's config and its completed iterations, in order."""

    workdir: Path
    config: dict[str, Any]
    entries: list[IterationRecord] = field(default_factory=list)
    # a warm start's pre-step (flows/loop/warm_start.py: init model, its report, the first decision);
    # None for a cold start or before the pre-step finished
    init: dict[str, Any] | None = None
    # this loop's identity in MLflow (flows/tracking/runs.py: the parent run's synthloop.loop_uid tag):
    # made once per work directory by :meth:`identity`, kept when the directory moves
    uid: str | None = None

    @property
    def path(self) -> Path:
        return self.workdir / HISTORY_FILE

    @property
    def images_rendered(self) -> int:
        return self.entries[-1].images_rendered if self.entries else 0

    def resolve(self, rel: str) -> Path:
        return self.workdir / rel

    def append(self, record: IterationRecord) -> None:
        if record.iteration != len(self.entries):
            raise ConfigError(f"history: iteration {record.iteration} cannot follow "
                              f"{len(self.entries)} completed iterations")
        self.entries.append(record)
        self.save()

    def set_init(self, init: dict[str, Any]) -> None:
        """Record a warm start's finished pre-step (before any iteration) and save."""
        if self.entries:
            raise ConfigError(f"history: the init pre-step must come before iteration 0, but "
                              f"{len(self.entries)} iterations are complete")
        self.init = init
        self.save()

    def identity(self) -> str:
        """This work directory's loop identity (a random id made on first use and saved in
        history.json): two work directories with the same settings are two loops in MLflow,
        a moved one is the same loop. Call it with the work directory's lock held."""
        if self.uid is None:
            self.uid = uuid.uuid4().hex
            self.save()
        return self.uid

    def save(self) -> None:
        data: dict[str, Any] = {"format": HISTORY_FORMAT, "config": self.config,
                                "iterations": [e.to_dict() for e in self.entries]}
        if self.uid is not None:
            data["uid"] = self.uid
        atomic.write_json(self.path, {**data, "init": self.init} if self.init is not None else data)

    @staticmethod
    def peek(work: Path) -> dict[str, Any] | None:
        """``WORK/history.json`` as stored, for code that only looks (the run plan, the production
        monitor, artifacts): None when there is none. No check that it is this loop's (that is
        :meth:`open`'s); an unreadable file, or one that is not a JSON mapping, raises OSError or
        ValueError for the caller to word."""
        try:
            data = json.loads((work / HISTORY_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if not isinstance(data, dict):
            raise ValueError(f"{work / HISTORY_FILE} holds a JSON {type(data).__name__}, not a loop history")
        return data

    @classmethod
    def open(cls, cfg: LoopConfig) -> LoopHistory:
        """Load ``WORK/history.json`` for a resume (checking it is this loop's), or start one."""
        work = cfg.work
        path = work / HISTORY_FILE
        if not path.is_file():
            check_workdir(work)
            work.mkdir(parents=True, exist_ok=True)
            return cls(work, cfg.to_dict())
        try:
            data = cls.peek(work) or {}
            entries = [IterationRecord.from_dict(e) for e in data["iterations"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"loop.workdir: {str(path)!r} is not a readable loop history ({exc}); "
                              "choose another workdir or remove it") from exc
        _check_same_loop(data.get("config") or {}, cfg)
        if data.get("init") is not None:
            from flows.loop.checks import check_resumed_init

            check_resumed_init(data["init"], cfg)
        new = cfg.to_dict()
        uid = data.get("uid")
        return cls(work, {**data["config"], **{k: new[k] for k in RESUMABLE}}, entries, data.get("init"),
                   uid if isinstance(uid, str) and uid else None)


def _check_same_loop(old: dict[str, Any], cfg: LoopConfig) -> None:
    """A resume must compute the same thing: only settings in RESUMABLE may differ."""
    new = cfg.to_dict()
    # a setting added after the loop was written reads as its default (the old loop computed that)
    defaults = {f.name: f.default for f in fields(LoopConfig)}
    for key in sorted(set(old) | set(new)):
        was = old.get(key, defaults.get(key))
        if key not in RESUMABLE and was != new.get(key):
            raise ConfigError(f"loop.{key}: the work directory {cfg.workdir!r} holds a loop with "
                              f"{key}={was!r}, but got {new.get(key)!r}; resume with the same "
                              "settings or choose another workdir")
