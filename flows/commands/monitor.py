"""``synthloop monitor``: run the production monitor flow once.

Reads the production log's records since the watermark, measures drift and failure signals
against the watched loop's training shards and latest real-val report, freezes the window
under WINDOWS_DIR/<window id>/, logs an MLflow run for it and, when drift or failure passes
its threshold, triggers the loop's deployment (default closed-loop/manual) with the window,
once per window; then commits the watermark. Settings: ``--config FILE`` (YAML), then
``--log``, then ``--set key=value`` (any field of flows/orchestration/monitor_settings.py; ``loop.<field>``
sets a field of the watched loop). Triggering needs a Prefect server where the loop deployment
is served (``synthloop serve``) and ``PREFECT_API_URL``.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="run the production monitor once (signals, MLflow, trigger the loop)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--config", help="YAML file of monitor settings (any field of "
                   "flows/orchestration/monitor_settings.py)")
    p.add_argument("--log", default=None, metavar="DIR", help="the production log directory (*.jsonl)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting, value parsed as YAML (e.g. --set min_drifted=2, "
                        "--set loop.workdir=runs/loop); repeatable")
    p.set_defaults(func=run)


def _nest(items: dict[str, Any]) -> dict[str, Any]:
    """``{"loop.workdir": x}`` → ``{"loop": {"workdir": x}}`` (only ``loop.`` keys nest)."""
    out: dict[str, Any] = {}
    for key, value in items.items():
        head, dot, rest = key.partition(".")
        if dot and head == "loop":
            out.setdefault("loop", {})[rest] = value
        else:
            out[key] = value
    return out


def _print(summary: dict[str, Any]) -> None:
    c = summary["counts"]
    print(f"window {summary['window']}: {summary['status']}; lines {c['total']} (new {c['new']}, duplicate "
          f"{c['duplicate']}, malformed {c['malformed']})")
    if summary["window_dir"]:
        print(f"frozen:    {summary['window_dir']} ({summary['frames']} frames)")
    print(f"drifted:   {', '.join(summary['drifted']) or 'none'}")
    print(f"decision:  {summary['reason']}")
    if summary["flow_run_id"]:
        again = " (already triggered by an earlier run)" if summary["already_triggered"] else ""
        print(f"triggered: loop flow run {summary['flow_run_id']}{again}")
    print(f"MLflow:    run {summary['mlflow_run_id']}")


def run(args: argparse.Namespace) -> int:
    from flows.commands.run import parse_sets
    from flows.orchestration.closed_loop import prefect_api
    from flows.orchestration.monitor import production_monitor
    from flows.orchestration.monitor_settings import MonitorSettings

    sets = _nest(parse_sets(args.sets))
    loop = sets.pop("loop", None)
    settings = MonitorSettings.from_file(args.config, log=args.log, **sets)
    if loop:
        settings = MonitorSettings.build({**settings.model_dump(), "loop": {**settings.loop, **loop}})
    settings.check()
    with prefect_api():
        summary = production_monitor(settings)
    _print(summary)
    return 0
