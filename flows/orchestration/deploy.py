"""The closed loop's deployments, served from this process: ``synthloop serve``.

- ``closed-loop/scheduled``: the loop on a cron schedule (default nightly, 02:00 UTC); each
  run resumes the same loop and adds ``add_iterations`` iterations (default 1) to it.
- ``closed-loop/manual``: no schedule; trigger it with parameters, e.g.
  ``prefect deployment run closed-loop/manual --param settings='{"iterations": 2}'``. The
  production monitor triggers it with a frozen window (``production``).
- ``production-monitor/scheduled`` (only with monitor settings): the production monitor every
  ``monitor_minutes`` (default 15); a drifted window triggers ``closed-loop/manual``.

Schedules need a real Prefect server (``prefect server start`` + ``PREFECT_API_URL``): the
temporary server a plain flow run starts forgets them. ``pause_on_shutdown=False`` keeps the
schedule active when this process restarts.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flows.orchestration.closed_loop import closed_loop
from flows.orchestration.settings import UNATTENDED_WAIT_S, LoopSettings
from generator.errors import ConfigError

if TYPE_CHECKING:
    from flows.orchestration.monitor_settings import MonitorSettings

DEFAULT_CRON = "0 2 * * *"
DEFAULT_MONITOR_MINUTES = 15.0


def deployments(settings: LoopSettings, cron: str = DEFAULT_CRON) -> list[Any]:
    """The scheduled and the manual deployment (``RunnerDeployment`` objects)."""
    from prefect.client.schemas.schedules import construct_schedule

    try:
        schedule = construct_schedule(cron=cron, timezone="UTC")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--cron: must be a cron expression like '0 2 * * *', but got {cron!r} ({exc})") from None
    params = {"settings": settings.model_dump(mode="json")}
    grow = {"settings": {**params["settings"], "add_iterations": settings.add_iterations or 1,
                         "wait_for_loop_s": settings.wait_for_loop_s or UNATTENDED_WAIT_S}}
    scheduled = closed_loop.to_deployment(name="scheduled", schedules=[schedule], parameters=grow, tags=["synthloop"],
                                          description=f"the closed loop {settings.loop_config().study_name}, "
                                                      f"cron {cron!r} (UTC)")
    manual = closed_loop.to_deployment(name="manual", parameters=params, tags=["synthloop"],
                                       description="the closed loop with the parameters given at trigger time")
    return [scheduled, manual]


def monitor_deployment(monitor: MonitorSettings, settings: LoopSettings,
                       minutes: float = DEFAULT_MONITOR_MINUTES) -> Any:
    """``production-monitor/scheduled``: the monitor every ``minutes``. A monitor without
    ``loop`` settings watches (and triggers) the served loop."""
    from flows.orchestration.monitor import production_monitor
    from flows.orchestration.monitor_settings import MonitorSettings

    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0:
        raise ConfigError(f"--monitor-minutes: must be a number of minutes > 0, but got {minutes!r}")
    if not monitor.loop:
        monitor = MonitorSettings.build({**monitor.model_dump(),
                                         "loop": settings.model_dump(mode="json", exclude_defaults=True)})
    monitor.check()
    return production_monitor.to_deployment(
        name="scheduled", interval=timedelta(minutes=minutes), tags=["synthloop", "production"],
        parameters={"settings": monitor.model_dump(mode="json")},
        description=f"the production monitor of {monitor.log!r} every {minutes:g} min; drifted windows "
                    f"trigger {monitor.deployment}")


def require_server() -> str:
    url = os.environ.get("PREFECT_API_URL") or ""
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value() or ""
    if not url:
        raise ConfigError("PREFECT_API_URL: serving needs a running Prefect server, but none is set; run "
                          "`prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    return url


def serve(settings: LoopSettings, cron: str = DEFAULT_CRON, limit: int | None = None,
          monitor: MonitorSettings | None = None, monitor_minutes: float = DEFAULT_MONITOR_MINUTES) -> None:
    """Serve the loop's deployments (and the monitor's, given its settings) until interrupted."""
    from prefect import serve as prefect_serve

    require_server()
    extra = [] if monitor is None else [monitor_deployment(monitor, settings, monitor_minutes)]
    prefect_serve(*deployments(settings, cron), *extra, pause_on_shutdown=False, limit=limit)
