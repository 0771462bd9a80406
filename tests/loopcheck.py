"""Helpers for the end-to-end loop tests (tests/test_integration.py): a tiny loop's settings,
the loop's processes in their own process groups, and what a finished loop left behind
(history.json, shard fingerprints, the Optuna study, the MLflow runs and model versions, the
MLflow UI's run page). A helper module, not tests; cheap to import (prefect, mlflow, optuna
and playwright are imported where used).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import servers

if TYPE_CHECKING:
    from mlflow.entities import Run
    from playwright.sync_api import Browser

SYNTHLOOP = servers.BIN_DIR / "synthloop"  # the venv's console script, as a user runs it

# 3 iterations of 2 shards x 2 images at 64², 30 training steps: ~6 s an iteration once warm
# (the first render pays for the worker processes' start-up); training + evaluation + policy
# take ~2-3 s after an iteration's shards are written: the window to SIGKILL the loop in.
TINY: dict[str, Any] = {
    "iterations": 3, "images_per_iteration": 4, "render_shards": 2, "steps_per_iteration": 30,
    "batch_size": 2, "width": 64, "height": 64, "backend": "pyrender", "eval_resamples": 0,
    "num_threads": 1, "device": "cpu", "policy": "optuna"}
TIMING_KEYS = frozenset({"seconds", "images_per_s", "reused"})  # may differ between equal runs


def tiny_settings(workdir: Path, real: Path, tracking_uri: str, name: str, **kw: Any) -> dict[str, Any]:
    """JSON settings of the tiny loop (a ``LoopSettings`` mapping): experiment and model ``name``."""
    return {**TINY, "workdir": str(Path(workdir).resolve()), "real_dir": str(Path(real).resolve()),
            "tracking_uri": tracking_uri, "experiment": name, "model_name": name, **kw}


def set_args(settings: Mapping[str, Any]) -> list[str]:
    """``--set key=value`` options for ``synthloop serve`` (values as YAML reads them back)."""
    out = []
    for key, value in settings.items():
        out += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return out


def run_args(settings: Mapping[str, Any]) -> list[str]:
    """``synthloop run`` arguments: its named options (``--workdir W``...) where it has one, else ``--set``."""
    from flows.commands.run import OPTIONS

    named = {name for name, _, _ in OPTIONS}
    out = []
    for key, value in settings.items():
        if key in named:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out + set_args({k: v for k, v in settings.items() if k not in named})


def ephemeral_env(home: Path) -> dict[str, str]:
    """Environment of a ``synthloop run`` that starts its own temporary Prefect server."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


# ---- processes ---------------------------------------------------------------------------------


_TOKENS: dict[int, str] = {}  # pid of a started command -> the process-tree token its descendants carry


def start_group(cmd: list[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new process group (stdout + stderr appended to ``log``), tagged with a
    process-tree token (:mod:`flows.loop.process_guard`) so that :func:`left_running` also finds what
    it started outside its group (the temporary Prefect server runs in a session of its own)."""
    from flows.loop.process_guard import TREE_ENV

    cwd.mkdir(parents=True, exist_ok=True)
    token = f"test-{uuid.uuid4().hex[:12]}"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**env, TREE_ENV: token}, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _TOKENS[proc.pid] = token
    return proc


def left_running(proc: subprocess.Popen[bytes]) -> list[int]:
    """Live processes of ``proc``'s group or of its process tree (wherever they moved to)."""
    from flows.loop.process_guard import tree_pids

    return sorted(set(servers.group_pids(proc.pid)) | set(tree_pids(_TOKENS[proc.pid])))


def wait_gone(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> list[int]:
    """Wait up to ``timeout`` s for everything ``proc`` started to end; what is left (want [])."""
    deadline = time.monotonic() + timeout
    while left_running(proc) and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1.0)
    return left_running(proc)


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> list[int]:
    """SIGKILL ``proc``'s whole process group; the pids of its group or tree still alive after
    ``timeout`` (want []: what runs outside the group is stopped by the command's reaper)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return wait_gone(proc, timeout)


@contextlib.contextmanager
def group(cmd: list[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_group`, and on exit (normal or not) nothing of the group is left running."""
    proc = start_group(cmd, env=env, cwd=cwd, log=log)
    try:
        yield proc
    finally:
        left = kill_group(proc)
        if left:
            raise AssertionError(f"{cmd[:3]}: processes {left} survive SIGKILL of group {proc.pid}")


def wait_for(check: Callable[[], Any], what: str, timeout: float, *, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None, every: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` s, or at once
    when ``proc`` exits first (with ``log``'s tail in the message)."""
    deadline = time.monotonic() + timeout
    tail = (lambda: f"; {log} ends with:\n{servers.log_tail(log)}") if log else (lambda: "")
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with code {proc.returncode} first{tail()}")
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s{tail()}")


def run_to_end(cmd: list[str], *, env: Mapping[str, str], cwd: Path, log: Path, timeout: float) -> int:
    """Run ``cmd`` in its own process group to the end (killed at ``timeout``); its exit code."""
    with group(cmd, env=env, cwd=cwd, log=log) as proc:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{cmd[:3]} did not finish within {timeout:.0f} s; {log} ends with:\n"
                                 f"{servers.log_tail(log)}") from None


# ---- what a loop left in its work directory -----------------------------------------------------


def history(work: Path) -> list[dict[str, Any]]:
    """``WORK/history.json``'s iterations ([] while there is none)."""
    try:
        return list(json.loads((Path(work) / "history.json").read_text(encoding="utf-8"))["iterations"])
    except (OSError, ValueError, KeyError):
        return []


def fingerprints(work: Path) -> list[list[str]]:
    """Per iteration, its shards' fingerprints (from history.json)."""
    return [[s["fingerprint"] for s in e["render"]["shards"]] for e in history(work)]


def without_timings(value: Any) -> Any:
    """A history entry without what may differ between two equal runs (seconds, reuse flags)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def tree(work: Path) -> list[str]:
    """Every file and directory under ``work`` (relative), ``.tmp-*`` build leftovers aside."""
    return sorted(str(p.relative_to(work)) for p in Path(work).rglob("*")
                  if not any(part.startswith(".tmp-") for part in p.relative_to(work).parts))


def leftovers(work: Path) -> list[str]:
    """``.tmp-*`` directories and files an interrupted atomic write left under ``work``."""
    return sorted(str(p.relative_to(work)) for p in Path(work).rglob(".tmp-*"))


def optuna_trials(work: Path, study_name: str) -> list[tuple[int, str, Any, Any]]:
    """``(number, state, iteration, source)`` of every trial of the loop's study in WORK/policy.db."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{Path(work) / 'policy.db'}")
    return [(t.number, t.state.name, t.user_attrs.get("iteration"), t.user_attrs.get("source"))
            for t in study.get_trials(deepcopy=False)]


# ---- what a loop left in MLflow -----------------------------------------------------------------


@dataclass
class Tracked:
    """One loop's experiment: every run in it, the parent(s), the children by iteration, versions."""

    experiment_id: str
    runs: list[Run]
    parents: list[Run]
    children: dict[int, list[Run]]
    versions: list[Any]  # ModelVersion, oldest first
    champion: Any  # the ModelVersion with alias champion, or None


def tracked(uri: str, experiment: str, model_name: str) -> Tracked:
    """Read a loop's runs and registered versions through ``MlflowClient(uri)``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = list(c.search_runs([exp.experiment_id], max_results=1000))
    parents = [r for r in runs if r.data.tags.get("synthloop.kind") == "loop"]
    children: dict[int, list[Run]] = {}
    for r in runs:
        if "synthloop.iteration" in r.data.tags:
            children.setdefault(int(r.data.tags["synthloop.iteration"]), []).append(r)
    versions = sorted(c.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version))
    try:
        champion = c.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        champion = None
    return Tracked(str(exp.experiment_id), runs, parents, children, versions, champion)


def dataset_inputs(run: Run) -> list[dict[str, Any]]:
    """A run's dataset inputs: name, source path, digest, context and the ``synthloop.new`` tag."""
    out = []
    for d in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in d.tags}
        out.append({"name": d.dataset.name, "source": json.loads(d.dataset.source or "{}").get("uri"),
                    "digest": d.dataset.digest, "context": tags.get("mlflow.data.context"),
                    "new": tags.get("synthloop.new") == "true"})
    return out


# ---- the MLflow UI's run page -----------------------------------------------------------------

_METRICS_SEARCH = "Search metrics"  # the run page's metric filter (3.17 "Overview" tab)


def _remote(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname not in servers.LOOPBACK


def run_page_metrics(browser: Browser, url: str, experiment_id: str, run_id: str, names: list[str],
                     screenshot: Path, *, timeout_s: float = 30.0) -> dict[str, str]:
    """Open a run's page in the MLflow UI, filter its metrics table to each of ``names`` and
    return the value text shown next to each (missing: absent from the result). Requests to
    anything but loopback are aborted. The view filtered to the last name is saved to
    ``screenshot``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    shown: dict[str, str] = {}
    try:
        context.route(_remote, lambda route: route.abort())
        page = context.new_page()
        page.goto(f"{url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}", wait_until="load",
                  timeout=timeout_s * 1000)
        search = page.get_by_placeholder(_METRICS_SEARCH)
        search.wait_for(state="visible", timeout=timeout_s * 1000)
        for name in names:
            search.fill(name)
            row = page.locator('[role="row"]').filter(has=page.get_by_text(name, exact=True)).first
            with contextlib.suppress(PlaywrightTimeout):
                row.wait_for(state="visible", timeout=5000)
                row.scroll_into_view_if_needed()
                key, _, value = row.inner_text().partition("\n")
                if key.strip() == name:
                    shown[name] = value.strip()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    finally:
        context.close()
    return shown
