"""The Optuna side of the policy: one persistent study per loop, driven through ask/tell.

Everything a resumed process needs lives in the study's storage (SQLite by default, any
SQLAlchemy URL), never only in memory. Each trial carries user attributes:

- ``iteration`` and ``source`` — set right after ``ask``; ``source`` is ``heuristic`` (the
  enqueued data-driven proposal) or ``sampler`` (TPE);
- ``proposal`` — written in one transaction once the params are built, so it doubles as the
  commit marker: a RUNNING trial without it was asked by a run that died mid-iteration. It holds
  ``source_sha`` (the reports that drove it), ``baseline`` (objective on them), ``driving`` (the
  weak slices acted on), ``plan_keys``, ``params``, ``params_sha`` and the ``decision``;
- ``fail_reason`` when it was failed, ``measured`` (before/after) when it was told a value.

Heartbeats do not apply to ask/tell, so RUNNING trials a crashed run left behind are failed
explicitly at the start of the next iteration; WAITING (enqueued, never asked) ones too.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from generator.errors import ConfigError, driver_error_line, redact
from policy.knobs import KnobSpace
from policy.moves import Knobs

PROPOSAL = "proposal"  # user attribute holding the stored proposal (the commit marker)
LOOP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class SearchSpace(KnobSpace):
    """Bounds of the knobs a trial suggests, and the heuristic's values for them."""

    FLOAT_KNOBS: ClassVar[tuple[str, ...]] = ("step", "width_scale", "uniform_share")
    FIELD: ClassVar[str] = "policy"

    step: tuple[float, float] = (0.2, 1.0)
    width_scale: tuple[float, float] = (0.5, 2.0)
    uniform_share: tuple[float, float] = (0.2, 0.6)
    top_k: int = 3
    heuristic_step: float = 1.0
    heuristic_width_scale: float = 1.0
    heuristic_uniform_share: float = 0.3

    def validate(self) -> SearchSpace:
        self.check_knobs()
        self.check_top_k(self.top_k)
        return self

    def distributions(self) -> dict[str, BaseDistribution]:
        return self.knob_distributions(self.top_k)

    def heuristic(self) -> dict[str, Any]:
        return self.knob_heuristic(self.top_k)


def storage_url(study: str | Path) -> str:
    """A SQLAlchemy URL as is; a plain path becomes ``sqlite:///<absolute path>``."""
    s = str(study)
    return s if "://" in s else f"sqlite:///{Path(s).resolve()}"


def _creation_race(exc: BaseException) -> bool:
    """True when opening a fresh storage lost the race to create its tables (or its version row)
    to another process: PostgreSQL's concurrent CREATE TABLE fails with a duplicate key in
    ``pg_type``, a second version row with a unique violation, SQLite with "already exists"."""
    text = str(getattr(exc, "orig", None) or exc)
    return "duplicate key value" in text or "already exists" in text or "UNIQUE constraint failed" in text


def open_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """The study's storage. One loop at a time: a SQLite file; several loops (or processes) at
    once: a database server, e.g. ``postgresql+psycopg://user@host:5432/db`` (docs/stores.md).

    Optuna creates the tables on first use: loops that open a fresh database at the same moment
    race to create them and all but one fail (measured: 5 of 6 threads on PostgreSQL). The
    losers find the tables there on a retry, so a creation race is retried (``attempts``)."""
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # SQLAlchemy raises many types for a bad URL / unwritable file / no server
            if attempt < attempts and _creation_race(exc):
                time.sleep(0.2 * attempt)
                continue
            error = exc
            break
    raise ConfigError(f"--study: cannot open Optuna storage {redact(url)!r} ({driver_error_line(error)}); "
                      "pass a path to a .db file, sqlite:///ABS/PATH/policy.db (one loop at a time) or a reachable "
                      "PostgreSQL database postgresql+psycopg://user@host:5432/db (several at once)") from None


def check_loop_id(loop_id: str) -> str:
    if not isinstance(loop_id, str) or not LOOP_ID.match(loop_id):
        raise ConfigError(f"--loop-id: must match {LOOP_ID.pattern} (letters, digits, _.:-), but got "
                          f"{loop_id!r}; pick a simple id such as digits-loop-1")
    return loop_id


def open_study(storage: optuna.storages.RDBStorage, loop_id: str, scenario: str,
               objective: str) -> optuna.Study:
    """Create or load the loop's study (name = loop id); refuse one made for another setup."""
    check_loop_id(loop_id)
    study = optuna.create_study(storage=storage, study_name=loop_id, direction="maximize",
                                load_if_exists=True)
    attrs = study.user_attrs
    if not attrs:
        study.set_user_attr("scenario", scenario)
        study.set_user_attr("objective", objective)
    elif attrs.get("scenario") != scenario or attrs.get("objective") != objective:
        raise ConfigError(f"--loop-id: study {loop_id!r} belongs to scenario {attrs.get('scenario')!r} "
                          f"with objective {attrs.get('objective')!r}, but got {scenario!r} / "
                          f"{objective!r}; use another --loop-id for a new loop")
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"--loop-id: study {loop_id!r} does not maximize; use another --loop-id")
    return study


def sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def set_attrs(study: optuna.Study, storage: optuna.storages.RDBStorage, number: int,
              attrs: dict[str, Any]) -> None:
    """Set user attributes on a RUNNING trial by number (works from any process)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def fail(study: optuna.Study, storage: optuna.storages.RDBStorage, t: FrozenTrial,
         reason: str) -> dict[str, Any]:
    """Fail a RUNNING trial with ``reason`` stored as its ``fail_reason`` attribute."""
    set_attrs(study, storage, t.number, {"fail_reason": reason})
    study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    return {"trial": t.number, "iteration": t.user_attrs.get("iteration"), "state": "FAIL",
            "value": None, "reason": reason}


def complete(study: optuna.Study, storage: optuna.storages.RDBStorage, t: FrozenTrial,
             before: float, after: float) -> dict[str, Any]:
    """Tell a RUNNING trial its measured gain ``after − before``."""
    value = after - before
    set_attrs(study, storage, t.number, {"measured": {"before": before, "after": after}})
    study.tell(t.number, value, skip_if_finished=True)
    return {"trial": t.number, "iteration": t.user_attrs.get("iteration"), "state": "COMPLETE",
            "value": value, "before": before, "after": after, "reason": ""}


def drain_waiting(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[dict[str, Any]]:
    """Fail WAITING trials (enqueued by a run that died before asking): ask pops, then fail."""
    told = []
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        number = study.ask().number
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        told.append(fail(study, storage, frozen, "stale: enqueued by a run that stopped before asking it"))
    return told


def iteration_seed(seed: int, iteration: int) -> int:
    """The sampler's seed for one iteration: distinct per iteration, equal across restarts."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])


def ask_params(study: optuna.Study, storage: optuna.storages.RDBStorage,
               distributions: dict[str, BaseDistribution], heuristic: dict[str, Any], iteration: int,
               seed: int, n_startup: int, enqueue: bool) -> tuple[int, dict[str, Any], str]:
    """Ask one trial over ``distributions`` (the enqueued ``heuristic`` when ``enqueue``, else
    TPE), mark it asked; return its number, parameter values and source."""
    study.sampler = optuna.samplers.TPESampler(seed=iteration_seed(seed, iteration),
                                               n_startup_trials=n_startup, constant_liar=True)
    source = "heuristic" if enqueue else "sampler"
    if enqueue:
        study.enqueue_trial(heuristic, user_attrs={"source": source})
    trial = study.ask(distributions)
    set_attrs(study, storage, trial.number, {"iteration": iteration, "source": source})
    return trial.number, dict(trial.params), source


def ask(study: optuna.Study, storage: optuna.storages.RDBStorage, space: SearchSpace,
        iteration: int, seed: int, n_startup: int, enqueue: bool) -> tuple[int, Knobs, str]:
    """Ask one trial (the enqueued heuristic when ``enqueue``, else TPE) and mark it asked."""
    number, p, source = ask_params(study, storage, space.distributions(), space.heuristic(), iteration,
                                   seed, n_startup, enqueue)
    knobs = Knobs(step=float(p["step"]), width_scale=float(p["width_scale"]),
                  uniform_share=float(p["uniform_share"]), n_slices=int(p["n_slices"]))
    return number, knobs, source


def check_mode(study: optuna.Study, loop_id: str, mode: str) -> None:
    """Record the policy mode (``move`` / ``mixture``) on a new study; refuse a study made in
    another mode (their trials decide different knobs). A study without the attribute predates
    modes and is ``move``."""
    have = study.user_attrs.get("mode")
    if have is None:
        if not study.get_trials(deepcopy=False):
            study.set_user_attr("mode", mode)
            return
        have = "move"
    if have != mode:
        raise ConfigError(f"--loop-id: study {loop_id!r} was made by the {have!r} policy mode, but got "
                          f"{mode!r}; use another --loop-id for a new loop")


def proposal(t: FrozenTrial) -> dict[str, Any] | None:
    """The stored proposal of a trial, or None when it never got that far."""
    p = t.user_attrs.get(PROPOSAL)
    return p if isinstance(p, dict) else None


def history(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial: number, iteration, source, state, value and the failure reason if any."""
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        out.append({"trial": t.number, "iteration": a.get("iteration"), "source": a.get("source"),
                    "state": t.state.name, "value": t.value if t.state == TrialState.COMPLETE else None,
                    "reason": a.get("fail_reason", "")})
    return out
