"""Real servers and a real browser for tests, on loopback only (a helper module, not tests).

The end-to-end tests run against the same components a user runs: a ``prefect server``, an
``mlflow server`` and headless Chromium (Debian's ``chromium`` driven by PyPI ``playwright``;
never ``playwright install``, which downloads a browser). pytest puts ``tests/`` on
``sys.path``, so a test module writes ``from servers import mlflow_server``; the session
fixtures in ``conftest.py`` (``prefect_api``, ``mlflow_api``, ``browser``) share one of each.

How a server lives and dies (:func:`serve_process`):

* it runs in a new process group (``start_new_session``) with its output in a log file;
* start-up waits, bounded, for its ``/health`` URL; a process that exits or never answers
  raises :class:`ServerError` with the log's last lines in the message;
* teardown sends SIGTERM to the whole group (the mlflow CLI forks a uvicorn worker), then
  SIGKILL after a timeout, and waits until no process of the group is left.

Importing this module is cheap: prefect, mlflow and playwright are imported where used.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

BIN_DIR = Path(sys.executable).parent  # the venv's console scripts (prefect, mlflow)
CHROMIUM = Path("/usr/bin/chromium")  # Debian package `chromium` (`make sysdeps`)
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-proxy-server",  # loopback only: never route through a proxy from the environment
)
START_TIMEOUT_S = 90.0  # prefect ~10-20 s, mlflow ~10 s on 2 busy cores
STOP_TIMEOUT_S = 15.0  # SIGTERM -> SIGKILL
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

_LIVE: dict[int, str] = {}  # process-group id -> what runs there, while started by this module


class ServerError(RuntimeError):
    """A test server did not come up (the message ends with its log's tail) or did not go away."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET ``url`` answers 2xx (no proxy, whatever the environment says)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 300
    except (OSError, ValueError):
        return False


def group_pids(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that still run (zombies excluded; reads Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def live_servers() -> dict[int, str]:
    """Process groups started by this module and not stopped yet: pgid -> description."""
    return dict(_LIVE)


def cmdline(pid: int) -> str:
    """A process's command line ("" once it has gone)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return ""


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not linger as a zombie
        if not group_pids(proc.pid):
            return True
        time.sleep(0.1)
    return not group_pids(proc.pid)


def stop_group(proc: subprocess.Popen[bytes], what: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``timeout`` s; wait until empty."""
    _signal_group(proc.pid, signal.SIGTERM)
    if not _wait_group_gone(proc, timeout):
        _signal_group(proc.pid, signal.SIGKILL)
        if not _wait_group_gone(proc, 10.0):
            raise ServerError(f"{what}: processes {group_pids(proc.pid)} survive SIGKILL of group {proc.pid}")
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1.0)
    _LIVE.pop(proc.pid, None)


def stop_all() -> dict[int, str]:
    """Stop every server this module started and has not stopped; returns what was still running."""
    leftovers = live_servers()
    for pgid in leftovers:
        _signal_group(pgid, signal.SIGKILL)
        _LIVE.pop(pgid, None)
    return leftovers


atexit.register(stop_all)  # a crashed or interrupted session still leaves nothing behind


def _wait_healthy(proc: subprocess.Popen[bytes], health_url: str, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise ServerError(f"{what} exited with code {code} before {health_url} answered; "
                              f"{log} ends with:\n{log_tail(log)}")
        if http_ok(health_url):
            return
        time.sleep(0.25)
    raise ServerError(f"{what} did not answer {health_url} within {timeout:.0f} s; {log} ends with:\n{log_tail(log)}")


@contextlib.contextmanager
def serve_process(cmd: Sequence[str], *, env: Mapping[str, str], log: Path, health_url: str, what: str,
                  start_timeout: float = START_TIMEOUT_S,
                  stop_timeout: float = STOP_TIMEOUT_S) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group until ``health_url`` answers; stop the group on exit.

    Output (stdout and stderr) is appended to ``log``. A failed start stops what is left of the
    group, then raises :class:`ServerError` with the log's tail.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(list(cmd), env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _LIVE[proc.pid] = f"{what} (pid {proc.pid})"
    try:
        _wait_healthy(proc, health_url, log, what, start_timeout)
        yield proc
    finally:
        stop_group(proc, what, stop_timeout)


def _child_env(drop_prefix: str) -> dict[str, str]:
    """This process's environment without ``drop_prefix*`` settings, loopback exempt from proxies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefix)}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env.update(NO_PROXY=no_proxy, no_proxy=no_proxy)
    return env


@contextlib.contextmanager
def prefect_server(home: Path, *, ui: bool = False, start_timeout: float = START_TIMEOUT_S,
                   database: str | None = None) -> Iterator[str]:
    """A real ``prefect server start`` on 127.0.0.1 with its SQLite database under ``home``
    (or ``database``: a ``postgresql+asyncpg://`` URL, set as ``PREFECT_SERVER_DATABASE_CONNECTION_URL``).

    Yields the API URL (``http://127.0.0.1:<port>/api``). The server sees no inherited
    ``PREFECT_*`` setting (no ``PREFECT_API_URL``; ``PREFECT_HOME=home``; analytics off), logs
    to ``home/server.log``. ``ui=False`` skips the dashboard (faster start; the API is the same).
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _child_env("PREFECT_")
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="true" if ui else "false")
    if database is not None:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database
    cmd = [str(BIN_DIR / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with serve_process(cmd, env=env, log=home / "server.log", health_url=f"{api_url}/health",
                       what=f"prefect server on port {port}", start_timeout=start_timeout):
        yield api_url


@contextlib.contextmanager
def mlflow_server(root: Path, *, start_timeout: float = START_TIMEOUT_S,
                  backend_store: str | None = None) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1: SQLite at ``root/mlflow.db`` (or ``backend_store``,
    e.g. a ``postgresql+psycopg://`` URL), artifacts under ``root/artifacts``.

    Yields its URL (``http://127.0.0.1:<port>``), which is both the tracking URI and the UI.
    Artifacts go through the server's proxy (run artifact URIs are ``mlflow-artifacts:/…``).
    One uvicorn worker; telemetry and the job-execution workers are off; logs to ``root/server.log``.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _child_env("MLFLOW_")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [str(BIN_DIR / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri",
           backend_store or f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")]
    with serve_process(cmd, env=env, log=root / "server.log", health_url=f"{url}/health",
                       what=f"mlflow server on port {port}", start_timeout=start_timeout):
        yield url


# ---- PostgreSQL on 127.0.0.1:5432 (`make sysdeps`): databases a test session creates and drops --------

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"  # trust authentication on loopback (make sysdeps)


def require_postgres() -> None:
    """Skip when nothing answers on 127.0.0.1:5432 on a developer machine; fail in CI (``CI`` set)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        if sock.connect_ex(("127.0.0.1", 5432)) == 0:
            return
    problem = "no PostgreSQL on 127.0.0.1:5432 (`make sysdeps` installs and starts Debian's)"
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI must provide it", pytrace=False)
    pytest.skip(problem)


def existing_databases(prefix: str) -> list[str]:
    """Names of the databases on 127.0.0.1:5432 that start with ``prefix``."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"{POSTGRES}/postgres", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                                {"p": prefix})
            return sorted(r[0] for r in rows)
    finally:
        engine.dispose()


@contextlib.contextmanager
def postgres_databases(*names: str) -> Iterator[dict[str, str]]:
    """``CREATE DATABASE`` each of ``names`` (``[a-z0-9_]``) on 127.0.0.1:5432 as ``postgres``; yield
    name -> ``postgresql+psycopg://`` URL; on exit (failure included) drop them, closing whatever
    connection a server left open (``WITH (FORCE)``)."""
    import re

    require_postgres()
    for name in names:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            raise ValueError(f"postgres_databases: {name!r} is not a plain lower-case database name")
    made: list[str] = []
    try:
        from flows.orchestration.stores import create_database

        for name in names:
            create_database("test database", f"{POSTGRES}/{name}")
            made.append(name)
        yield {name: f"{POSTGRES}/{name}" for name in names}
    finally:
        for name in made:
            drop_database(name)


def drop_database(name: str) -> None:
    """Drop database ``name`` on 127.0.0.1:5432 if it exists, closing any connection left to it."""
    from flows.orchestration.stores import drop_database

    drop_database("test database", f"{POSTGRES}/{name}")


def prefect_env(api_url: str, home: Path | None = None) -> dict[str, str]:
    """Environment for a child process (a flow, the CLI) that talks to the server at ``api_url``.

    ``home`` is the child's ``PREFECT_HOME`` (local result storage); default: this process's
    ``PREFECT_HOME``, which conftest points at a session temp dir. Without either: ValueError.
    """
    env = dict(os.environ)
    chosen = str(home) if home is not None else env.get("PREFECT_HOME")
    if not chosen:
        raise ValueError("prefect_env: PREFECT_HOME is not set; pass home=<a temp dir> so the child "
                         "does not write under ~/.prefect")
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=chosen, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _require_chromium() -> None:
    """Skip when the browser is missing on a developer machine; fail in CI (env ``CI`` set)."""
    problem = None
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problem = f"{CHROMIUM} is missing (Debian package `chromium`; `make sysdeps` installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "PyPI `playwright` is not installed (pip install -e '.[dev]')"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI must provide it", pytrace=False)
    pytest.skip(problem)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium from ``/usr/bin/chromium`` (never a downloaded browser), closed on exit."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            yield browser
        finally:
            browser.close()


# ---- the MLflow 3.17 UI ---------------------------------------------------------------------
# The UI opens in a "GenAI" view (experiment overview, traces); runs live in the "Model training"
# view, reachable directly as #/experiments/<id>/runs?workflowType=machine_learning. The runs table
# is an ag-grid: rows are [role=row][row-id=<run id>]; child runs stay collapsed under their parent
# until the button in the parent's "Run Name" cell is clicked. The UI polls for ever, so we wait
# for `load` plus a selector, never for network idle.
RUN_ROW = '[role="row"][row-id]'
RUN_NAME_EXPANDER = '[role="gridcell"][col-id*="Run Name"] button'
_ROW_IDS_JS = "buttons => buttons.map(b => b.closest('[row-id]')?.getAttribute('row-id'))"


def mlflow_runs_url(url: str, experiment_id: str) -> str:
    """The UI page listing an experiment's runs (the "Model training" view)."""
    return f"{url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _expand_parent_runs(page: Page, limit: int = 50) -> None:
    """Click each collapsed parent's expander once (children that are parents too, in turn)."""
    clicked: set[str] = set()
    for _ in range(limit):
        ids = page.eval_on_selector_all(RUN_NAME_EXPANDER, _ROW_IDS_JS)
        todo = [i for i in ids if i and i not in clicked]
        if not todo:
            return
        page.locator(f'[row-id="{todo[0]}"] {RUN_NAME_EXPANDER}').first.click()
        clicked.add(todo[0])


def _missing_texts(page: Page, expect: Sequence[str], deadline: float) -> list[str]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    missing = []
    for text in expect:
        wait_ms = max(500.0, (deadline - time.monotonic()) * 1000)
        try:
            page.get_by_text(text, exact=True).first.wait_for(state="visible", timeout=wait_ms)
        except PlaywrightTimeout:
            missing.append(text)
    return missing


def _block_non_loopback(blocked: list[str]) -> Callable[[Route], None]:
    def handle(route: Route) -> None:
        blocked.append(route.request.url)
        route.abort()

    return handle


def _is_remote(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname not in LOOPBACK


def mlflow_ui_shows(browser: Browser, url: str, experiment_id: str, expect: Sequence[str], screenshot: Path,
                    *, timeout_s: float = 30.0) -> None:
    """Open the experiment's runs page in the MLflow UI and check each of ``expect`` is visible.

    A string counts when some element's whole text equals it (e.g. a run name). Parent runs are
    expanded first, so nested (child) runs are listed. A screenshot is saved to ``screenshot``
    either way; anything missing raises AssertionError naming it, with the page's visible text.
    Requests to anything but loopback are aborted (and named in the error).
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout_s
    blocked: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        context.route(_is_remote, _block_non_loopback(blocked))
        page = context.new_page()
        page.goto(mlflow_runs_url(url, experiment_id), wait_until="load", timeout=timeout_s * 1000)
        with contextlib.suppress(PlaywrightTimeout):  # no rows at all: reported below as missing text
            page.locator(RUN_ROW).first.wait_for(state="visible", timeout=timeout_s * 1000)
            _expand_parent_runs(page)
        missing = _missing_texts(page, expect, deadline)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        if missing:
            visible = " | ".join(page.inner_text("body").split("\n"))[:3000]
            raise AssertionError(f"MLflow UI at {page.url} does not show {missing} (screenshot {screenshot}); "
                                 f"blocked requests: {blocked or 'none'}; visible text: {visible}")
    finally:
        context.close()
