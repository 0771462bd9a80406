"""``synthloop serve``: serve the closed loop's deployments (scheduled + manual) from this process.

Needs a Prefect server (``prefect server start``; ``PREFECT_API_URL`` pointing at it). Runs
until interrupted; flow runs execute in subprocesses of this one. With ``--monitor-config``,
also serves ``production-monitor/scheduled`` (every 15 minutes by default), which triggers
closed-loop/manual when a production window drifts. See flows/orchestration/deploy.py.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the loop's Prefect deployments (cron schedule + manual runs)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--config", help="YAML file of loop settings for both deployments' default parameters")
    p.add_argument("--cron", default=None, help="schedule of closed-loop/scheduled (default: '0 2 * * *', UTC)")
    p.add_argument("--limit", type=int, default=None, help="at most this many flow runs at once (default: no limit)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a loop setting for the default parameters (value parsed as YAML); repeatable")
    p.add_argument("--monitor-config", default=None, metavar="FILE",
                   help="YAML file of production-monitor settings (flows/orchestration/monitor_settings.py); serves "
                        "production-monitor/scheduled too (without `loop` it watches the served loop)")
    p.add_argument("--monitor-minutes", type=float, default=None, metavar="M",
                   help="interval of production-monitor/scheduled in minutes (default 15)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.commands.run import parse_sets
    from flows.orchestration.deploy import DEFAULT_CRON, DEFAULT_MONITOR_MINUTES, serve
    from flows.orchestration.monitor_settings import MonitorSettings
    from flows.orchestration.settings import LoopSettings

    settings = LoopSettings.from_file(args.config, **parse_sets(args.sets))
    monitor = None if args.monitor_config is None else MonitorSettings.from_file(args.monitor_config).check()
    names = "closed-loop/scheduled and closed-loop/manual" + ("" if monitor is None else
                                                                " and production-monitor/scheduled")
    print(f"serving {names} (Ctrl-C to stop)", flush=True)
    serve(settings, cron=args.cron or DEFAULT_CRON, limit=args.limit, monitor=monitor,
          monitor_minutes=DEFAULT_MONITOR_MINUTES if args.monitor_minutes is None else args.monitor_minutes)
    return 0
