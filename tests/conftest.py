"""Shared fixtures: every test writes under tmp_path; OpenGL goes through EGL.

Safety net (``pytest_configure``, before any test module imports prefect or mlflow):
``PREFECT_HOME`` and ``MLFLOW_TRACKING_URI`` point into a session temp dir and
``PREFECT_API_URL`` is dropped, so no test writes ``~/.prefect``, ``./mlruns`` or
``./mlflow.db``, or talks to a server the developer has configured.

The tiny real set (``real``, session scope) is built once for every loop test.

Real servers on loopback (see tests/servers.py and docs/testing.md): ``prefect_api`` (a
``prefect server``'s API URL) and ``mlflow_api`` (an ``mlflow server``'s URL: tracking URI and
UI), one each per session; ``browser`` (headless Chromium via playwright), one per test. At the
end of the session nothing that tests/servers.py started may still run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import servers  # tests/servers.py (pytest puts tests/ on sys.path); imports nothing heavy

if TYPE_CHECKING:
    from playwright.sync_api import Browser

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_ISOLATION_ROOT: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point Prefect and MLflow state at a session temp dir (see the module docstring)."""
    global _ISOLATION_ROOT
    _ISOLATION_ROOT = tempfile.mkdtemp(prefix="synthloop-pytest-")
    os.environ["PREFECT_HOME"] = os.path.join(_ISOLATION_ROOT, "prefect")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.join(_ISOLATION_ROOT, "mlflow.db")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _ISOLATION_ROOT:
        shutil.rmtree(_ISOLATION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _no_server_left_behind() -> Iterator[None]:
    """After the session (all other fixtures torn down): no server from tests/servers.py runs."""
    yield
    leftovers = servers.stop_all()
    if leftovers:
        raise AssertionError(f"servers still running at the end of the session (now killed): {leftovers}")


TINY_REAL_SIZES = {"real-train": 20, "real-val": 30, "real-test": 20}  # digits per split


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny real set (``synthloop data real`` at 20/30/20 digits, seed 0), built
    once; tests only read it (one that must change it copies it first)."""
    from generator.real.build import build_real_set

    out = tmp_path_factory.mktemp("tiny-real") / "real"
    build_real_set(out, seed=0, sizes=TINY_REAL_SIZES)
    return out


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API URL (``http://127.0.0.1:<port>/api``) of a real ``prefect server`` shared by the session."""
    with servers.prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_url:
        yield api_url


@pytest.fixture(scope="session")
def mlflow_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (tracking URI and UI) of a real ``mlflow server`` shared by the session."""
    with servers.mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless /usr/bin/chromium (skipped when missing off CI; a failure in CI).

    Per test (~1.3 s to start), not per session: while playwright's sync API is open the main
    thread looks as if it ran an asyncio loop, so ``asyncio.run()`` (and code built on it) in
    any later test of the session would raise.
    """
    with servers.chromium() as b:
        yield b
