"""The production monitor as a Prefect flow: new production records → signals → MLflow → the
loop, when production has moved.

    production_monitor(settings)              one MonitorSettings parameter (flows/orchestration/monitor_settings.py)
      read-window        records since the watermark        evaluator.production.read_window
      window-signals     drift, proxies, reviewed errors    window_signals (+ merge_reports with the
                                                            loop's latest real-val report)
      freeze-window      WINDOWS/<window id>/               records, frames, signals, merged report
      (decide)           drift or failure past threshold    flows.orchestration.monitor_settings.decide
      trigger-loop       run_deployment(closed-loop/manual, {settings: {**loop, production: WINDOW,
                                                            add_iterations: 1}}), recorded in trigger.json
      log-window         MLflow run "window <id>"           flows.tracking.windows
      commit-watermark   LOG/ingest-state.json              evaluator.production.commit

A window without new valid records (``NoData``) is logged (status ``no_data``) and committed,
with no signal and no trigger.

**Exactly one loop run per window.** The watermark is committed last, so a crash anywhere
before it reruns *the same window* (same id: a hash of the watermark and the bytes read). The
rerun finds the frozen window and reuses its signals; finds ``trigger.json`` and does not
trigger again; and if the crash fell between the trigger and ``trigger.json``, the trigger's
Prefect idempotency key (window id + loop + deployment) makes the server return the run it
already created instead of a second one. The MLflow run is found again by its window tag.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from evaluator.production import NoData, Window, commit, read_window
from evaluator.production.frozen import freeze_window, is_frozen, read_json, read_trigger, write_trigger
from flows.orchestration.closed_loop import IO_RETRY, _flow_run_id
from flows.orchestration.monitor_settings import MonitorSettings, decide, default_reference, default_val_report
from flows.orchestration.settings import UNATTENDED_WAIT_S
from generator.errors import ConfigError

__all__ = ["MonitorSettings", "production_monitor"]


def _scenario(settings: MonitorSettings) -> Any:
    from generator.scenario import load_scenario

    return load_scenario(settings.loop_settings().scenario)


@task(name="read-window", cache_policy=NO_CACHE, **IO_RETRY)
def read_new_records(settings: MonitorSettings) -> Window | NoData:
    return read_window(settings.log, settings.state, classes=_scenario(settings).classes,
                       frames_root=settings.frames_root)


@task(name="window-signals", cache_policy=NO_CACHE)
def measure(settings: MonitorSettings, result: Window | NoData) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The window's signals and, with a real-val report, the merged report."""
    from evaluator.production.merge import load_val_report, measure_window

    if isinstance(result, NoData):  # no measurement: no reference or report needed (no loop yet, maybe)
        return measure_window(result, _scenario(settings), [], None, settings.score_threshold)
    path = default_val_report(settings)
    val = load_val_report(path) if path is not None else None
    return measure_window(result, _scenario(settings), default_reference(settings), val, settings.score_threshold,
                          default_threshold=settings.loop_settings().loop_config().score_threshold)


@task(name="freeze-window", cache_policy=NO_CACHE, **IO_RETRY)
def freeze(settings: MonitorSettings, result: Window, signals: dict[str, Any],
           merged: dict[str, Any] | None) -> Path:
    return freeze_window(result, settings.windows_dir, signals, merged)


def idempotency_key(settings: MonitorSettings, window_id: str) -> str:
    """One key per (window, loop work directory, deployment): the server creates one run per key."""
    loop = str(Path(settings.loop_settings().workdir).resolve())
    digest = hashlib.sha256(f"{loop}\n{settings.deployment}".encode()).hexdigest()[:12]
    return f"synthloop-window-{window_id}-{digest}"


def loop_parameters(settings: MonitorSettings, window_dir: Path) -> dict[str, Any]:
    """The triggered loop run's parameters: the loop's settings plus the window."""
    return {"settings": {"wait_for_loop_s": UNATTENDED_WAIT_S, **settings.loop,
                         "production": str(window_dir.resolve()), "add_iterations": settings.add_iterations}}


@task(name="trigger-loop", cache_policy=NO_CACHE)
def trigger_loop(settings: MonitorSettings, window_dir: Path, window_id: str) -> dict[str, Any]:
    """Create the loop's flow run for this window, once (module docstring); record it."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    done = read_trigger(window_dir)
    if done is not None:
        return {**done, "already": True}
    params, key = loop_parameters(settings, window_dir), idempotency_key(settings, window_id)
    try:
        run: Any = run_deployment(settings.deployment, parameters=params, timeout=0, as_subflow=False,
                             idempotency_key=key, flow_run_name=f"production-window-{window_id}",
                             tags=["synthloop", "production-window"])
    except ObjectNotFound:
        raise ConfigError(f"monitor.deployment: {settings.deployment!r} must be a deployment on the Prefect server, "
                          "but it is not there; serve it (`synthloop serve`) or set trigger: false") from None
    info = {"flow_run_id": str(run.id), "flow_run_name": run.name, "deployment": settings.deployment,
            "window": window_id, "idempotency_key": key, "parameters": params,
            "triggered_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_trigger(window_dir, info)
    return {**info, "already": False}


@task(name="log-window", cache_policy=NO_CACHE, **IO_RETRY)
def log_to_mlflow(settings: MonitorSettings, signals: dict[str, Any], decision: dict[str, Any],
                  trigger: dict[str, Any] | None, window_dir: Path | None, flow_run_id: str | None) -> str:
    from flows.orchestration.settings import DATA_DIR
    from flows.tracking import runs
    from flows.tracking.windows import log_window

    uri = settings.tracking_uri or settings.loop_settings().tracking_uri or runs.default_tracking_uri(DATA_DIR)
    return log_window(uri, settings.default_experiment(), signals, decision, trigger, window_dir, flow_run_id)


@task(name="commit-watermark", cache_policy=NO_CACHE)
def commit_watermark(result: Window | NoData) -> None:
    commit(result)


def _summary(result: Window | NoData, signals: dict[str, Any], decision: dict[str, Any],
             trigger: dict[str, Any] | None, window_dir: Path | None, run_id: str) -> dict[str, Any]:
    return {"window": result.window_id, "status": signals["status"], "counts": dict(result.counts),
            "frames": (signals.get("overall") or {}).get("frames", 0), "drifted": decision["drifted"],
            "failure": decision["failure"], "triggered": decision["triggered"], "reason": decision["reason"],
            "flow_run_id": (trigger or {}).get("flow_run_id"),
            "already_triggered": bool((trigger or {}).get("already")),
            "window_dir": None if window_dir is None else str(window_dir), "mlflow_run_id": run_id}


@flow(name="production-monitor", log_prints=True)
def production_monitor(settings: MonitorSettings) -> dict[str, Any]:
    """Read new production records, measure them, log them, trigger the loop when they moved."""
    settings = settings.check()
    result = read_new_records(settings)
    window_dir: Path | None = None
    if isinstance(result, Window) and is_frozen(Path(settings.windows_dir) / result.window_id, result.window_id):
        window_dir = Path(settings.windows_dir) / result.window_id  # a rerun: the window is already frozen
        signals, merged = read_json(window_dir / "signals.json") or {}, read_json(window_dir / "report.json")
    else:
        signals, merged = measure(settings, result)
        if isinstance(result, Window):
            window_dir = freeze(settings, result, signals, merged)
    decision = decide(signals, merged, settings)
    trigger = trigger_loop(settings, window_dir, result.window_id) if decision["triggered"] and window_dir else None
    run_id = log_to_mlflow(settings, signals, decision, trigger, window_dir, _flow_run_id())
    commit_watermark(result)
    summary = _summary(result, signals, decision, trigger, window_dir, run_id)
    print(f"window {result.window_id}: {summary['status']}; {decision['reason']}"
          + (f"; loop run {summary['flow_run_id']}" if trigger else ""))
    return summary
