"""The deployments are written twice, for two ways of running them: ``synthloop serve``
(flows/orchestration/deploy.py, no work pool) and ``prefect deploy`` (deployments/prefect.yaml, a process
work pool and a worker). They must be the same deployments: same flow, name, tags and schedule,
and the YAML's parameters set what serve.py sets beyond the settings' defaults (they had
drifted: the YAML's scheduled loop lacked the unattended ``wait_for_loop_s``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow  # imports prefect

YAML = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"


def _non_default(value: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(default.get(k), dict):
            v = _non_default(v, default[k])
            if v:
                out[k] = v
        elif k not in default or v != default[k]:
            out[k] = v
    return out


def _schedule(s: Any) -> dict[str, Any]:
    if hasattr(s, "cron"):
        return {"cron": s.cron, "timezone": s.timezone}
    return {"interval": s.interval.total_seconds()}


def _yaml_schedule(s: dict[str, Any]) -> dict[str, Any]:
    return ({"cron": s["cron"], "timezone": s.get("timezone")} if "cron" in s
            else {"interval": float(s["interval"])})


def _served() -> dict[tuple[str, str], Any]:
    from flows.orchestration.deploy import deployments, monitor_deployment
    from flows.orchestration.monitor_settings import MonitorSettings
    from flows.orchestration.settings import LoopSettings

    doc = yaml.safe_load(YAML.read_text(encoding="utf-8"))
    by_entry = {(d["entrypoint"], d["name"]): d for d in doc["deployments"]}
    loop_yaml = by_entry[("flows/orchestration/closed_loop.py:closed_loop", "scheduled")]["parameters"]["settings"]
    manual_yaml = by_entry[("flows/orchestration/closed_loop.py:closed_loop", "manual")]["parameters"]["settings"]
    mon_yaml = by_entry[("flows/orchestration/monitor.py:production_monitor", "scheduled")]["parameters"]["settings"]
    scheduled, _ = deployments(LoopSettings(workdir=loop_yaml["workdir"]))
    _, manual = deployments(LoopSettings(workdir=manual_yaml["workdir"]))
    monitor = monitor_deployment(MonitorSettings.build({k: v for k, v in mon_yaml.items() if k != "loop"}),
                                 LoopSettings(**mon_yaml.get("loop", {})))
    return {("flows/orchestration/closed_loop.py:closed_loop", "scheduled"): scheduled,
            ("flows/orchestration/closed_loop.py:closed_loop", "manual"): manual,
            ("flows/orchestration/monitor.py:production_monitor", "scheduled"): monitor}


def test_prefect_yaml_states_the_deployments_synthloop_serve_serves(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.orchestration.monitor_settings import MonitorSettings
    from flows.orchestration.settings import LoopSettings

    monkeypatch.chdir(tmp_path)  # the YAML's relative paths: the monitor checks its log exists
    (tmp_path / "runs" / "production" / "log").mkdir(parents=True)
    doc = yaml.safe_load(YAML.read_text(encoding="utf-8"))
    served = _served()
    assert sorted((d["entrypoint"], d["name"]) for d in doc["deployments"]) == sorted(served)
    defaults = {"flows/orchestration/closed_loop.py:closed_loop": LoopSettings().model_dump(mode="json"),
                "flows/orchestration/monitor.py:production_monitor":
                    MonitorSettings.build({"log": "runs/production/log"}).model_dump(mode="json")}
    for d in doc["deployments"]:
        key = (d["entrypoint"], d["name"])
        s = served[key]
        path, func = d["entrypoint"].split(":")
        module = path.removesuffix(".py").replace("/", ".")
        assert s.flow_name == getattr(__import__(module, fromlist=[func]), func).name, key
        assert sorted(d.get("tags") or []) == sorted(s.tags), key
        assert [_yaml_schedule(x) for x in d.get("schedules") or []] == \
            [_schedule(x.schedule) for x in s.schedules or []], key
        # the YAML may spell a default out, but every value it sets beyond the defaults is one the
        # served deployment sets, and the other way round
        base, have = defaults[d["entrypoint"]], d["parameters"]["settings"]
        assert _non_default(have, base) == _non_default(s.parameters["settings"], base), key
        assert {k: v for k, v in s.parameters["settings"].items() if k in have and k != "loop"} == \
            {k: v for k, v in have.items() if k != "loop"}, key
