"""The closed loop's deployments, served from this process: ``synthloop serve``.

- ``closed-loop/scheduled``: the loop on a cron schedule (default nightly, 02:00 UTC); each
  run resumes the same loop and adds ``add_iterations`` iterations (default 1) to it.
- ``closed-loop/manual``: no schedule; trigger it with parameters, e.g.
  ``prefect deployment run closed-loop/manual --param settings='{"iterations": 2}'``.

Schedules need a real Prefect server (``prefect server start`` + ``PREFECT_API_URL``): the
temporary server a plain flow run starts forgets them. ``pause_on_shutdown=False`` keeps the
schedule active when this process restarts.
"""

from __future__ import annotations

import os
from typing import Any

from flows.closed_loop import closed_loop
from flows.settings import LoopSettings
from generator.errors import ConfigError

DEFAULT_CRON = "0 2 * * *"


def deployments(settings: LoopSettings, cron: str = DEFAULT_CRON) -> list[Any]:
    """The scheduled and the manual deployment (``RunnerDeployment`` objects)."""
    from prefect.client.schemas.schedules import construct_schedule

    try:
        construct_schedule(cron=cron, timezone="UTC")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--cron: must be a cron expression like '0 2 * * *', but got {cron!r} ({exc})") from None
    params = {"settings": settings.model_dump(mode="json")}
    grow = {"settings": {**params["settings"], "add_iterations": settings.add_iterations or 1}}
    scheduled = closed_loop.to_deployment(name="scheduled", cron=cron, parameters=grow, tags=["synthloop"],
                                          description=f"the closed loop {settings.loop_config().study_name}, "
                                                      f"cron {cron!r} (UTC)")
    manual = closed_loop.to_deployment(name="manual", parameters=params, tags=["synthloop"],
                                       description="the closed loop with the parameters given at trigger time")
    return [scheduled, manual]


def require_server() -> str:
    url = os.environ.get("PREFECT_API_URL") or ""
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value() or ""
    if not url:
        raise ConfigError("PREFECT_API_URL: serving needs a running Prefect server, but none is set; run "
                          "`prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    return url


def serve(settings: LoopSettings, cron: str = DEFAULT_CRON, limit: int | None = None) -> None:
    """Serve both deployments until interrupted (blocks)."""
    from prefect import serve as prefect_serve

    require_server()
    prefect_serve(*deployments(settings, cron), pause_on_shutdown=False, limit=limit)
