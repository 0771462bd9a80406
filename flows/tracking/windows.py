"""MLflow record of the production monitor: one run per window (called by :mod:`flows.orchestration.monitor`).

::

    experiment <synthloop/<loop id>/production>      (MonitorSettings.experiment)
      run "window <id>"     tags synthloop.kind=production-window, synthloop.window=<id>,
                            synthloop.window.status (ok | no_data), .first_timestamp, .last_timestamp,
                            .drifted, .dir; synthloop.triggered, synthloop.trigger.reason,
                            synthloop.trigger.flow_run_id (the loop run), prefect.flow_run_id (monitor)
                            metrics (step 0): lines_new/duplicate/malformed, frames, readable_frames,
                            reviewed_frames, drifted_conditions, low_conf_rate, mean_entropy,
                            empty_rate, mean_max_score, reviewed_recall, reviewed_precision,
                            psi.<condition>, ks_p.<condition>, triggered
                            artifacts signals.json, signals.md (+ report.json, report.md when merged)

Idempotent like :mod:`flows.tracking`: the run is found by its window tag before one is made
(a rerun of the same window, or a poll that finds the same empty watermark, reuses it), metrics
and artifacts already there are not logged again. Only ``MlflowClient`` calls with explicit run
ids (no fluent API).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.tracking import runs
from flows.tracking.iteration import _log_metrics
from flows.tracking.runs import TAG_FLOW_RUN, TAG_KIND, TAG_WINDOW
from generator.errors import is_number

KIND = "production-window"
FILES = ("signals.json", "signals.md", "report.json", "report.md")


def window_metrics(signals: dict[str, Any], decision: dict[str, Any]) -> dict[str, float]:
    """The run's metrics (finite numbers only; a no-data window has counts and nothing else)."""
    counts = signals.get("counts") or {}
    out: dict[str, Any] = {f"lines_{k}": counts.get(k) for k in ("total", "new", "duplicate", "malformed")}
    overall = signals.get("overall") or {}
    if signals.get("status") == "ok":
        out.update({k: overall.get(k) for k in ("frames", "readable_frames", "reviewed_frames", "low_conf_rate",
                                                 "mean_entropy", "empty_rate", "mean_max_score")})
        rev = overall.get("reviewed") or {}
        out.update(reviewed_recall=rev.get("recall"), reviewed_precision=rev.get("precision"),
                   drifted_conditions=len(signals.get("drifted") or []), triggered=int(decision["triggered"]))
        for d in signals.get("drift") or []:
            for key in ("psi", "ks_p"):
                out[re.sub(r"[^\w\-. /]", "_", f"{key}.{d['condition']}")] = d.get(key)
    return {k: float(v) for k, v in out.items()
            if is_number(v)}


def _tags(signals: dict[str, Any], decision: dict[str, Any], trigger: dict[str, Any] | None,
          window_dir: Path | None, flow_run_id: str | None) -> dict[str, str]:
    w = signals.get("window") or {}
    tags = {f"{TAG_WINDOW}.status": str(signals.get("status")),
            "synthloop.triggered": str(decision["triggered"]).lower(),
            "synthloop.trigger.reason": decision["reason"][:4000],
            "synthloop.window.last_checked": datetime.now(UTC).isoformat(timespec="seconds")}
    for key in ("first_timestamp", "last_timestamp"):
        if w.get(key):
            tags[f"{TAG_WINDOW}.{key}"] = str(w[key])
    if signals.get("status") == "ok":
        tags[f"{TAG_WINDOW}.drifted"] = ",".join(signals.get("drifted") or []) or "none"
    if window_dir is not None:
        tags[f"{TAG_WINDOW}.dir"] = str(window_dir)
    if trigger:
        tags["synthloop.trigger.flow_run_id"] = str(trigger["flow_run_id"])
    if flow_run_id:
        tags[TAG_FLOW_RUN] = flow_run_id
    return tags


def _open_run(uri: str, experiment: str, window_id: str) -> str:
    c = runs.client(uri)
    eid = runs.experiment_id(runs.Tracking(uri, experiment, "unused"))
    found = runs._find_runs(c, eid, {TAG_KIND: KIND, TAG_WINDOW: window_id})
    if found:
        return str(found[0].info.run_id)
    run = c.create_run(eid, run_name=f"window {window_id}", tags={TAG_KIND: KIND, TAG_WINDOW: window_id})
    return str(run.info.run_id)


def log_window(uri: str, experiment: str, signals: dict[str, Any], decision: dict[str, Any],
               trigger: dict[str, Any] | None = None, window_dir: Path | None = None,
               flow_run_id: str | None = None) -> str:
    """Log one window (see the module docstring); returns the run id. Idempotent."""
    from generator import atomic

    c = runs.client(uri)
    run_id = _open_run(uri, experiment, str((signals.get("window") or {})["id"]))
    have = c.get_run(run_id).data.metrics
    _log_metrics(c, run_id, 0, window_metrics(signals, decision), set(have))
    runs._set_tags(c, run_id, _tags(signals, decision, trigger, window_dir, flow_run_id))
    listing = {f.path for f in c.list_artifacts(run_id)}
    if window_dir is not None:
        for name in FILES:
            if (window_dir / name).is_file() and name not in listing:
                c.log_artifact(run_id, str(window_dir / name))
    elif "signals.json" not in listing:
        from evaluator.production.report import signals_markdown

        c.log_text(run_id, atomic.dumps_json(signals), "signals.json")
        c.log_text(run_id, signals_markdown(signals), "signals.md")
    c.set_terminated(run_id, "FINISHED")
    return run_id
