"""``synthloop serve``: serve the closed loop's deployments (scheduled + manual) from this process.

Needs a Prefect server (``prefect server start``; ``PREFECT_API_URL`` pointing at it). Runs
until interrupted; flow runs execute in subprocesses of this one. See deployments/serve.py.
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deployments.serve import DEFAULT_CRON, serve
    from flows.commands.run import parse_sets
    from flows.settings import LoopSettings

    settings = LoopSettings.from_file(args.config, **parse_sets(args.sets))
    print("serving closed-loop/scheduled and closed-loop/manual (Ctrl-C to stop)", flush=True)
    serve(settings, cron=args.cron or DEFAULT_CRON, limit=args.limit)
    return 0
