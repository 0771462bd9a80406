"""MLflow lineage of the closed loop: one parent run per loop, one nested child run per iteration.

The Prefect flow calls these functions from its tasks (threads or worker processes), so
nothing here uses MLflow's fluent API or its global tracking URI: every call builds an
``MlflowClient(tracking_uri=...)`` and names the run id explicitly (the fluent active run is
thread-local; in a worker thread ``mlflow.log_*`` would silently create a stray run).

::

    experiment <Tracking.experiment>          artifact_location: file:// beside a sqlite store
      parent run  "loop <loop_id>"            tags synthloop.loop_id, synthloop.kind=loop
        params: the loop config; metrics real_val_map50 / real_val_recall / images_rendered, step = k
        images: param_evolution (step = k)
      child run   "iter <k>"                  tags mlflow.parentRunId, synthloop.iteration=k,
                                              synthloop.previous_run_id, prefect.flow_run_id
        params gen.* (iter_k/params.yaml), seeds, trials; inputs: one dataset per shard (and the
        production window, if merged); metrics (step = k); artifacts report/, report-production/,
        params.yaml, decision.json, images

Every function is idempotent so a resumed flow can call it again: runs are found by their
tags before one is created, params are derived from files (re-logging the same value is
skipped, a different one is a :class:`ConfigError`), and datasets, metric points, artifacts
and images already there are not logged twice. See docs/lineage.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param, Run, RunTag
from mlflow.exceptions import MlflowException

from flows.loop.state import RESUMABLE
from generator.errors import ConfigError, field_error, is_int

TAG_LOOP = "synthloop.loop_id"
TAG_UID = "synthloop.loop_uid"  # the loop's identity: its work directory's LoopHistory.identity()
TAG_WORKDIR = "synthloop.workdir"  # the resolved work directory of the loop's latest run
TAG_KIND = "synthloop.kind"  # "loop" (parent) or "iteration" (child)
TAG_ITERATION = "synthloop.iteration"
TAG_PREVIOUS = "synthloop.previous_run_id"
TAG_WEAKEST = "synthloop.weakest"
TAG_FLOW_RUN = "prefect.flow_run_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_CONTEXT = "mlflow.data.context"
TAG_NEW_SHARD = "synthloop.new"  # dataset input tag: "true" for the shards this iteration rendered
TAG_WINDOW = "synthloop.window"  # the production window an iteration merged (or a monitor run measured)
PRODUCTION_ARTIFACTS = "report-production"
PARENT_METRICS = {"real_val_map50": ("evaluate", "map50"), "real_val_recall": ("evaluate", "recall"),
                  "images_rendered": (None, "images_rendered")}
STATUSES = ("FINISHED", "FAILED", "KILLED")
MAX_PARAMS_PER_BATCH, MAX_PARAM_CHARS, MAX_METRICS_PER_BATCH = 100, 6000, 1000
_NAME = re.compile(r"^[^'\"`\\\n]+$")


@dataclass(frozen=True)
class Tracking:
    """Where a loop logs: a tracking URI (``sqlite:///...`` or ``http://host:port``), one
    experiment per loop and the registered model name its checkpoints join."""

    uri: str
    experiment: str
    model_name: str

    def __post_init__(self) -> None:
        for name in ("uri", "experiment", "model_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.match(value):
                raise field_error(f"tracking.{name}", "must be a non-empty string without quotes, "
                                  "backslashes or newlines", value)

    @classmethod
    def for_loop(cls, uri: str, experiment: str, scenario: str) -> Tracking:
        """The default registered model name: ``synthloop-<scenario>``."""
        return cls(uri, experiment, f"synthloop-{scenario}")


def sqlite_uri(db: Path) -> str:
    """``sqlite:///<absolute path>`` of a database file (nothing is created)."""
    return f"sqlite:///{Path(db).resolve()}"


def default_tracking_uri(data_dir: Path) -> str:
    """``sqlite:///<abs data_dir>/mlflow.db``; creates ``data_dir``."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return sqlite_uri(Path(data_dir) / "mlflow.db")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len("sqlite:///"):]).resolve() if uri.startswith("sqlite:///") else None


@functools.lru_cache(maxsize=16)
def client(uri: str) -> MlflowClient:
    """One client per URI (it holds no run state, so threads may share it). A sqlite store is
    opened under :func:`sqlite_creation_lock`: the first use creates its tables and runs its
    migrations, which two processes must not do at once."""
    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    with sqlite_creation_lock(db):
        c = MlflowClient(tracking_uri=uri)  # opens the tracking store: tables created here
        c.search_registered_models(max_results=1)  # the model registry's store (the same file)
    return c


@contextlib.contextmanager
def sqlite_creation_lock(db: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``<db>.lock`` (beside the database) while a process
    opens a sqlite store: MLflow creates the tables and runs alembic migrations on first use,
    and two processes doing it at once crash (``table ... already exists``, "Online migration
    expected to match one row"). The kernel drops the lock when its holder dies."""
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{db}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def experiment_id(t: Tracking) -> str:
    """Find or create ``t.experiment``; with a sqlite store its artifacts go to
    ``<db dir>/mlartifacts/<experiment>`` (never the working directory)."""
    c = client(t.uri)
    exp = c.get_experiment_by_name(t.experiment)
    if exp is None:
        db = sqlite_path(t.uri)
        where = None if db is None else (db.parent / "mlartifacts" / re.sub(r"[^\w.-]", "_", t.experiment)).as_uri()
        try:
            return str(c.create_experiment(t.experiment, artifact_location=where))
        except MlflowException:  # created meanwhile by another worker
            exp = c.get_experiment_by_name(t.experiment)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise field_error("tracking.experiment", "is deleted in the tracking store", t.experiment,
                          "restore it (`mlflow experiments restore`) or choose another name")
    return str(exp.experiment_id)


def _find_runs(c: MlflowClient, experiment: str, tags: dict[str, str]) -> list[Run]:
    clauses = []
    for key, value in tags.items():
        if not _NAME.match(value):
            raise field_error(f"tag {key}", "must be non-empty, without quotes or backslashes", value)
        clauses.append(f"tags.`{key}` = '{value}'")
    return list(c.search_runs([experiment], " and ".join(clauses), order_by=["attributes.start_time ASC"]))


def _value(v: Any) -> str:
    """A param value as MLflow stores it: strings as is, anything else as canonical JSON."""
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= MAX_PARAM_CHARS else s[:MAX_PARAM_CHARS - 1] + "…"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to ``a.b.c`` keys with :func:`_value` values (``weights`` stay one JSON value)."""
    out: dict[str, str] = {}
    for key, v in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(v, dict) and v and key != "weights":
            out.update(flatten(v, name))
        else:
            out[re.sub(r"[^\w\-. /]", "_", name)] = _value(v)
    return out


def _check_params(run_id: str, have: dict[str, str], params: dict[str, str]) -> None:
    """A param already logged with another value is a ConfigError (MLflow params are immutable)."""
    for key, value in sorted(params.items()):
        if key in have and have[key] != value:
            raise ConfigError(f"tracking: run {run_id} already has param {key}={have[key]!r}, but got {value!r}; "
                              "MLflow params are immutable: resume with the same settings or use another "
                              "loop id / experiment")


def log_params(t: Tracking, run_id: str, params: dict[str, str]) -> None:
    """Log the params the run lacks (in batches of 100); a param already logged with another
    value is a ConfigError (MLflow params are immutable)."""
    c = client(t.uri)
    have = c.get_run(run_id).data.params
    _check_params(run_id, have, params)
    new = [Param(k, v) for k, v in sorted(params.items()) if k not in have]
    for i in range(0, len(new), MAX_PARAMS_PER_BATCH):
        c.log_batch(run_id, params=new[i:i + MAX_PARAMS_PER_BATCH])


def _set_tags(c: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    if tags:
        c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def _reopen(c: MlflowClient, run: Run) -> None:
    if run.info.status != "RUNNING":
        c.update_run(run.info.run_id, status="RUNNING")


def _loop_run(c: MlflowClient, eid: str, loop_id: str, uid: str | None, config: dict[str, Any]) -> Run | None:
    """The parent run of loop ``uid`` (tag ``synthloop.loop_uid``). A parent logged before loops
    had an identity (no such tag) is this loop's only when its ``synthloop.config.workdir`` is
    this config's; without ``uid``, only such untagged parents match."""
    found = _find_runs(c, eid, {TAG_LOOP: loop_id, TAG_KIND: "loop"})
    mine = [r for r in found if uid is not None and r.data.tags.get(TAG_UID) == uid]
    legacy = [r for r in found if TAG_UID not in r.data.tags
              and (uid is None or r.data.tags.get("synthloop.config.workdir") == _value(config.get("workdir")))]
    runs = mine or legacy
    return runs[0] if runs else None


def open_loop_run(t: Tracking, loop_id: str, config: dict[str, Any], flow_run_id: str | None = None,
                  uid: str | None = None) -> str:
    """Find or create the loop's parent run: one per loop identity ``uid`` (the work
    directory's :meth:`~flows.loop.state.LoopHistory.identity`, tag ``synthloop.loop_uid``) and
    ``loop_id`` in the experiment, so a second work directory with the same settings is a
    second parent run; a resume gets the same run back, set RUNNING again. The config is
    logged as params, except the settings a resume may change (``flows.loop.state.RESUMABLE``),
    which become ``synthloop.config.<key>`` tags (and ``synthloop.workdir``, resolved). Params
    that clash with the run's are a ConfigError raised before the run is touched."""
    c, eid = client(t.uri), experiment_id(t)
    params = {k: v for k, v in flatten(config).items() if k.split(".")[0] not in RESUMABLE}
    identity = {TAG_LOOP: loop_id, TAG_KIND: "loop", **({TAG_UID: uid} if uid else {})}
    run = _loop_run(c, eid, loop_id, uid, config)
    if run is not None:
        _check_params(str(run.info.run_id), run.data.params, params)  # refused: nothing changed
        _reopen(c, run)
    else:
        run = c.create_run(eid, run_name=f"loop {loop_id}", tags=identity)
    run_id = run.info.run_id
    log_params(t, run_id, params)
    tags = {f"synthloop.config.{k}": _value(config[k]) for k in RESUMABLE if k in config}
    if config.get("workdir"):
        tags[TAG_WORKDIR] = str(Path(config["workdir"]).resolve())
    _set_tags(c, run_id, {**identity, **tags, **({TAG_FLOW_RUN: flow_run_id} if flow_run_id else {})})
    return str(run_id)


def open_iteration_run(t: Tracking, parent_id: str, k: int, previous_id: str | None,
                       flow_run_id: str | None = None) -> tuple[str, bool]:
    """Find or create the child run of iteration ``k`` under ``parent_id``. Returns
    ``(run_id, already_finished)``: True when that run is FINISHED (skip re-logging); a
    RUNNING (killed process) or FAILED child is reused and set RUNNING."""
    if not is_int(k) or k < 0:
        raise field_error("open_iteration_run.k", "must be an integer >= 0", k)
    c = client(t.uri)
    run, finished = open_child(c, c.get_run(parent_id), {TAG_PARENT: parent_id, TAG_ITERATION: str(k)},
                               f"iter {k}", {TAG_KIND: "iteration"})
    if finished:
        return str(run.info.run_id), True
    tags = {TAG_PREVIOUS: previous_id} if previous_id else {}
    if previous_id:
        c.get_run(previous_id)  # raises when the previous run is not in this store
    _set_tags(c, run.info.run_id, {**tags, **({TAG_FLOW_RUN: flow_run_id} if flow_run_id else {})})
    return str(run.info.run_id), False


def open_child(c: Any, parent: Any, match: dict[str, str], name: str,
               extra: dict[str, str]) -> tuple[Any, bool]:
    """The child run of ``parent`` whose tags include ``match``, else a new one named ``name``
    (tags ``match`` + ``extra`` + the loop's): ``(run, finished)``. A found run that is not
    FINISHED (a killed or failed attempt) is set RUNNING again for reuse."""
    found = _find_runs(c, parent.info.experiment_id, match)
    if found and found[0].info.status == "FINISHED":
        return found[0], True
    if found:
        _reopen(c, found[0])
        return found[0], False
    tags = {**match, **extra, TAG_LOOP: parent.data.tags.get(TAG_LOOP, "")}
    return c.create_run(parent.info.experiment_id, run_name=name, tags=tags), False


def iteration_runs(t: Tracking, parent_id: str) -> dict[int, str]:
    """``{k: run_id}`` of the child runs under ``parent_id``."""
    c = client(t.uri)
    runs = _find_runs(c, c.get_run(parent_id).info.experiment_id, {TAG_PARENT: parent_id})
    return {int(r.data.tags[TAG_ITERATION]): str(r.info.run_id) for r in runs if TAG_ITERATION in r.data.tags}


def run_link(t: Tracking, run_id: str) -> str | None:
    """The MLflow UI address of a run when ``t.uri`` is a server (``http(s)://``), else None."""
    if not t.uri.startswith(("http://", "https://")):
        return None
    eid = client(t.uri).get_run(run_id).info.experiment_id
    return f"{t.uri.rstrip('/')}/#/experiments/{eid}/runs/{run_id}"


def close_run(t: Tracking, run_id: str, status: str = "FINISHED") -> None:
    """End a run as FINISHED, FAILED or KILLED."""
    if status not in STATUSES:
        raise field_error("close_run.status", f"must be one of {list(STATUSES)}", status)
    client(t.uri).set_terminated(run_id, status)
