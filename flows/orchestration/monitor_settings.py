"""The production monitor's one parameter: :class:`MonitorSettings` (a pydantic model), and
the trigger rule :func:`decide`.

    settings = MonitorSettings.from_file("monitor.yaml", log="prod/log")   # file + overrides
    settings.check()                                                        # fail fast, one line

Defaults come from the loop the monitor watches (``loop``, a :class:`~flows.orchestration.settings.LoopSettings`
dict): the drift reference is every shard in the loop's ``history.json``, the real-val report
its latest iteration's ``iter_k/report/report.json``, the operating score threshold that
report's. A triggered loop run gets ``{**loop, "production": <window dir>, "add_iterations":
add_iterations}`` as its ``settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from flows.loop.state import HISTORY_FILE, LoopHistory
from flows.orchestration.settings import DATA_DIR, FileSettings, LoopSettings
from generator.errors import ConfigError, field_error

DEFAULT_DEPLOYMENT = "closed-loop/manual"


class MonitorSettings(FileSettings):
    """Everything one monitor run needs (docs/production.md, "The monitor flow")."""

    KIND: ClassVar[str] = "monitor"

    log: str  # the production log directory (*.jsonl, any depth)
    state: str | None = None  # watermark file; default LOG/ingest-state.json
    frames_root: str | None = None  # every record's frame must resolve inside it; default: LOG's parent
    windows_dir: str = str(DATA_DIR / "windows")  # frozen windows go to WINDOWS_DIR/<window id>/
    loop: dict[str, Any] = Field(default_factory=dict)  # LoopSettings of the loop to trigger
    deployment: str = DEFAULT_DEPLOYMENT  # "<flow>/<deployment>" run when a window triggers
    reference: list[str] | None = None  # drift reference shards; default: the loop's shards
    real_val_report: str | None = None  # default: the loop's latest iteration's report
    min_drifted: int = Field(default=1, ge=1)  # trigger when at least this many conditions drift
    drift_conditions: list[str] | None = None  # only these count toward min_drifted (None: all)
    on_failure: bool = True  # also trigger on reviewed recall significantly below real-val's
    trigger: bool = True  # False: measure and log, never trigger
    add_iterations: int = Field(default=1, ge=1)  # iterations the triggered run adds
    score_threshold: float | None = Field(default=None, ge=0.0, lt=1.0)  # default: the report's
    tracking_uri: str | None = None  # default: the loop's (sqlite:///runs/mlflow.db)
    experiment: str | None = None  # default: synthloop/<loop id>/production

    def loop_settings(self) -> LoopSettings:
        """The watched loop's settings (errors name ``loop.<field>``)."""
        return LoopSettings.build(dict(self.loop))

    def check(self) -> MonitorSettings:
        """Everything checkable before any work: the log directory, the loop settings, the
        deployment name, the drift conditions. Returns ``self``."""
        from generator.scenario import load_scenario

        if not Path(self.log).is_dir():
            raise field_error("monitor.log", "must be the production log directory", self.log,
                              "pass the directory the deployed model appends *.jsonl records to")
        if self.frames_root is not None and not Path(self.frames_root).is_dir():
            raise field_error("monitor.frames_root", "must be the directory the log's frames live under",
                              self.frames_root, "pass an existing directory, or drop it to use the log's parent")
        loop = self.loop_settings()
        loop.loop_config()
        flow_name, sep, name = self.deployment.partition("/")
        if not sep or not flow_name or not name or "/" in name:
            raise field_error("monitor.deployment", "must be '<flow name>/<deployment name>'", self.deployment,
                              f"e.g. {DEFAULT_DEPLOYMENT!r}")
        known = set(load_scenario(loop.scenario).spec.conditions)
        unknown = sorted(set(self.drift_conditions or []) - known)
        if unknown:
            raise field_error("monitor.drift_conditions", f"must name conditions of scenario {loop.scenario!r} "
                              f"({', '.join(sorted(known))})", unknown)
        return self

    def default_experiment(self) -> str:
        return self.experiment or f"synthloop/{self.loop_settings().loop_config().study_name}/production"


def loop_history(loop: LoopSettings) -> dict[str, Any] | None:
    """The watched loop's ``history.json`` (None before its first iteration)."""
    path = Path(loop.workdir) / HISTORY_FILE
    try:
        data = LoopHistory.peek(Path(loop.workdir))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"monitor.loop.workdir: {str(path)!r} must be a readable loop history ({exc}); "
                          "point `loop.workdir` at the loop's work directory") from exc
    return data if data and data.get("iterations") else None


def default_reference(settings: MonitorSettings) -> list[str]:
    """``settings.reference``, else every shard of the loop's completed iterations."""
    if settings.reference:
        return list(settings.reference)
    loop = settings.loop_settings()
    history = loop_history(loop)
    if history is None:
        raise field_error("monitor.reference", "must name the drift reference shards when the loop has no "
                          "completed iteration", f"{loop.workdir}/history.json absent",
                          "run the loop once, or set `reference` (the deployed model's training shards)")
    work = Path(loop.workdir)
    return [str(work / s["path"]) for e in history["iterations"] for s in e["render"]["shards"]]


def default_val_report(settings: MonitorSettings) -> Path | None:
    """``settings.real_val_report``, else the loop's latest real-val report (None: no loop yet)."""
    if settings.real_val_report:
        return Path(settings.real_val_report)
    loop = settings.loop_settings()
    history = loop_history(loop)
    if history is None:
        return None
    return Path(loop.workdir) / history["iterations"][-1]["evaluate"]["path"] / "report.json"


def _failure(signals: dict[str, Any], merged: dict[str, Any] | None) -> list[str]:
    """Why the window's reviewed labels say the model fails more than on real-val (or []).
    The real-val recall is the merged report's (a copy of the real-val report's ``overall``)."""
    from evaluator.stats import significantly_below

    reasons = []
    rev = (signals.get("overall") or {}).get("reviewed")
    val_recall = ((merged or {}).get("overall") or {}).get("recall")
    if (rev and rev.get("support") and isinstance(val_recall, int | float)
            and significantly_below(int(rev["detected"]), int(rev["support"]), float(val_recall))):
        reasons.append(f"reviewed recall {rev['recall']:.3f} on {rev['support']} objects is significantly "
                       f"below the real-val recall {val_recall:.3f}")
    n = int(((merged or {}).get("production") or {}).get("reviewed_weak_slices") or 0)
    if n:
        reasons.append(f"{n} reviewed production slice(s) significantly below the real-val recall")
    return reasons


def decide(signals: dict[str, Any], merged: dict[str, Any] | None, settings: MonitorSettings) -> dict[str, Any]:
    """Whether a window triggers the loop: ``min_drifted`` conditions (of ``drift_conditions``)
    drift, or, with ``on_failure`` and a merged report, the reviewed labels show a recall
    significantly below real-val's (overall, or in a slice). Uses only the window's files, so a
    rerun of a frozen window decides the same."""
    if signals.get("status") != "ok":
        return {"drifted": [], "drift": False, "failure": [], "triggered": False,
                "reason": f"no data: {signals.get('reason')}"}
    wanted = settings.drift_conditions
    drifted = [c for c in signals.get("drifted") or [] if wanted is None or c in wanted]
    drift = len(drifted) >= settings.min_drifted
    failure = _failure(signals, merged) if settings.on_failure else []
    fired = drift or bool(failure)
    reasons = ([f"{len(drifted)} drifted condition(s) >= min_drifted {settings.min_drifted}: "
                f"{', '.join(drifted)}"] if drift else []) + failure
    if not fired:
        reasons = [f"{len(drifted)} drifted condition(s) < min_drifted {settings.min_drifted}; no significant "
                   "reviewed failure"]
    elif not settings.trigger:
        reasons.append("trigger is off: measured and logged only")
    return {"drifted": drifted, "drift": drift, "failure": failure, "triggered": fired and settings.trigger,
            "reason": "; ".join(reasons)}
