"""A warm start's pre-step in MLflow (flows/loop/warm_start.py): one child run "init" per loop.

::

    parent run "loop <loop_id>"
      metrics real_val_map50 / real_val_recall at step -1     the init model's point on the loop curve
    ├─ child run "init"      tags mlflow.parentRunId, synthloop.kind=init, synthloop.iteration=-1
    │    params  init.path, init.weights_sha256, init.fingerprint, seed.evaluate,
    │            decision.trial / trial_source / changed    (the first decision: params_0)
    │    metrics real_val_map50/map/recall/precision, slice.<condition>.<bin>.recall    step -1
    │    artifacts report/ (the init report), decision.json
    │    model   the init checkpoint as a logged model + a registered version (metric = its
    │            real-val mAP@0.5): the bar iteration 0 must strictly beat to become `champion`
    └─ child run "iter 0"    tag synthloop.previous_run_id = the init run (lineage walks back to it)
         params  init.path, init.weights_sha256; model input: the init logged model

Every call is idempotent, like :mod:`flows.tracking`: runs are found by tags, params compared,
metrics, artifacts, inputs and the model version are not logged twice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlflow.entities import LoggedModelInput

from flows.tracking.artifacts import REPORT_FILES
from flows.tracking.iteration import _log_metrics, _log_parent_curve, _read_json
from flows.tracking.model import log_model
from flows.tracking.runs import (
    TAG_FLOW_RUN,
    TAG_ITERATION,
    TAG_KIND,
    TAG_PARENT,
    TAG_WEAKEST,
    Tracking,
    _set_tags,
    client,
    close_run,
    flatten,
    log_params,
    open_child,
)
from generator.errors import is_number

KIND_INIT = "init"
INIT_STEP = -1  # the pre-step's step on the loop curve ("iteration -1")
TAG_INIT_RUN = "synthloop.init_run_id"  # on iteration 0's run


def open_init_run(t: Tracking, parent_id: str, flow_run_id: str | None = None) -> tuple[str, bool]:
    """Find or create the loop's init run under ``parent_id``: ``(run_id, already_finished)``."""
    c = client(t.uri)
    run, finished = open_child(c, c.get_run(parent_id), {TAG_PARENT: parent_id, TAG_KIND: KIND_INIT},
                               "init model", {TAG_ITERATION: str(INIT_STEP)})
    if finished:
        return str(run.info.run_id), True
    _set_tags(c, run.info.run_id, {TAG_FLOW_RUN: flow_run_id} if flow_run_id else {})
    return str(run.info.run_id), False


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Overall real-val numbers and per-slice recall of a failure report (finite values only)."""
    o = report.get("overall") or {}
    out: dict[str, Any] = {f"real_val_{n}": o.get(n) for n in ("map50", "map", "recall", "precision")}
    for s in report.get("slices") or []:
        out[re.sub(r"[^\w\-. /]", "_", f"slice.{s['condition']}.{s['bin']}.recall")] = s.get("recall")
    return {k: float(v) for k, v in out.items()
            if is_number(v)}


def init_params(init: dict[str, Any]) -> dict[str, str]:
    """The init run's params, all from history.json's ``init`` block."""
    d, seeds = init.get("decision") or {}, init.get("seeds") or {}
    return flatten({"iteration": INIT_STEP, "init.path": init["model"], "init.weights_sha256": init["weights_sha256"],
                    "init.fingerprint": init.get("fingerprint"), "seed.evaluate": seeds.get("evaluate"),
                    "decision.trial": d.get("trial"), "decision.trial_source": d.get("trial_source"),
                    "decision.changed": ",".join(d.get("changed") or []) or "none"})


def log_init(t: Tracking, run_id: str, parent_id: str, work: Path, init: dict[str, Any]) -> dict[str, Any]:
    """Log the pre-step on the init run (params, metrics at step -1, report and decision files,
    the init model as a registered version) and its point on the parent's curve. Idempotent."""
    c, work = client(t.uri), Path(work)
    run = c.get_run(run_id)
    log_params(t, run_id, init_params(init))
    report_dir = work / init["evaluate"]["path"]
    _log_metrics(c, run_id, INIT_STEP, report_metrics(_read_json(report_dir / "report.json")), set(run.data.metrics))
    _log_parent_curve(c, parent_id, INIT_STEP, {"evaluate": init["evaluate"]})
    have = {f.path for folder in (None, "report") for f in c.list_artifacts(run_id, folder)}
    for name in REPORT_FILES:
        if (report_dir / name).is_file() and f"report/{name}" not in have:
            c.log_artifact(run_id, str(report_dir / name), "report")
    decision = work / init["decision"]["path"]
    if decision.name not in have:
        c.log_artifact(run_id, str(decision))
    weakest = init["evaluate"].get("weakest")
    _set_tags(c, run_id, {TAG_WEAKEST: weakest} if weakest else {})
    return log_model(t, run_id, Path(init["model"]), INIT_STEP, init["evaluate"].get("map50"),
                     external_sha256=init["weights_sha256"] if init.get("external") else None)


def track_init(t: Tracking, parent_id: str, work: Path, init: dict[str, Any], flow_run_id: str | None = None) -> str:
    """Open, log and close the init run; its id (iteration 0's previous run)."""
    run_id, finished = open_init_run(t, parent_id, flow_run_id)
    if not finished:
        log_init(t, run_id, parent_id, work, init)
        close_run(t, run_id)
    return run_id


def log_init_input(t: Tracking, run_id: str, init_run_id: str, init: dict[str, Any]) -> None:
    """Iteration 0's run: the init model as a model input (its logged model), its path and
    weights sha256 as params and the init run as a tag. Idempotent."""
    c = client(t.uri)
    log_params(t, run_id, flatten({"init.path": init["model"], "init.weights_sha256": init["weights_sha256"]}))
    _set_tags(c, run_id, {TAG_INIT_RUN: init_run_id})
    models = [m for m in c.search_logged_models([c.get_run(init_run_id).info.experiment_id],
                                                filter_string=f"source_run_id = '{init_run_id}'")
              if str(m.status) in ("READY", "LoggedModelStatus.READY")]
    run = c.get_run(run_id)
    have = {m.model_id for m in ((run.inputs.model_inputs or []) if run.inputs else [])}
    todo = [LoggedModelInput(m.model_id) for m in models if m.model_id not in have]
    if todo:
        c.log_inputs(run_id, models=todo)
