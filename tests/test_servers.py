"""The real-server harness (tests/servers.py) works: servers start, answer, and leave nothing behind.

Fast tests drive :func:`servers.serve_process` with tiny fake servers (a failed start, SIGKILL
escalation, a grandchild in the process group). Slow tests use the session's real
``prefect server`` and ``mlflow server`` (conftest fixtures) and headless Chromium on the
MLflow UI; the UI screenshot is kept at ``tests/artifacts/mlflow_runs.png`` (git-ignored).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import servers

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.servers

ARTIFACTS = Path(__file__).parent / "artifacts"

# A fake server: answers GET with 200, optionally ignores SIGTERM, optionally forks a sleeper
# into its process group (like `mlflow server` forks uvicorn).
FAKE_SERVER = r"""
import http.server, signal, subprocess, sys
port, mode = int(sys.argv[1]), sys.argv[2]
if "ignore-term" in mode:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "child" in mode:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
print("fake server up", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def _fake(tmp_path: Path, mode: str, **kwargs: Any) -> Any:
    port = servers.free_port()
    return servers.serve_process([sys.executable, "-c", FAKE_SERVER, str(port), mode], env={},
                                 log=tmp_path / "fake.log", health_url=f"http://127.0.0.1:{port}/health",
                                 what="fake server", **kwargs)


def test_a_server_that_exits_raises_with_its_log_tail(tmp_path: Path) -> None:
    before = servers.live_servers()  # session servers of earlier tests may be up
    cmd = [sys.executable, "-c", "import sys; print('cannot bind: port taken', flush=True); sys.exit(3)"]
    with pytest.raises(servers.ServerError, match=r"(?s)exited with code 3.*cannot bind: port taken"), \
            servers.serve_process(cmd, env={}, log=tmp_path / "s.log", what="broken server",
                                  health_url=f"http://127.0.0.1:{servers.free_port()}/health"):
        pytest.fail("the body must not run when the server never answered")
    assert servers.live_servers() == before


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    before = servers.live_servers()  # session servers of earlier tests may be up
    cmd = [sys.executable, "-c", "print('starting', flush=True); import time; time.sleep(600)"]
    with pytest.raises(servers.ServerError, match=r"(?s)did not answer .* within 1 s.*starting"), \
            servers.serve_process(cmd, env={}, log=tmp_path / "s.log", what="mute server", start_timeout=1.0,
                                  health_url=f"http://127.0.0.1:{servers.free_port()}/health"):
        pass
    assert servers.live_servers() == before


def test_stop_kills_the_whole_group_and_escalates_to_sigkill(tmp_path: Path) -> None:
    with _fake(tmp_path, "ignore-term+child", stop_timeout=1.0) as proc:
        pids = servers.group_pids(proc.pid)
        assert len(pids) == 2, f"expected the server and its child in group {proc.pid}, got {pids}"
        started = time.monotonic()
    assert time.monotonic() - started >= 1.0  # SIGTERM was ignored: SIGKILL came after the timeout
    assert servers.group_pids(proc.pid) == []
    assert proc.returncode == -9
    assert "fake server up" in (tmp_path / "fake.log").read_text()


@pytest.mark.slow
def test_prefect_server_runs_a_flow_visible_through_the_client(prefect_api: str, tmp_path: Path) -> None:
    assert servers.http_ok(f"{prefect_api}/health")
    script = ("from prefect import flow\n"
              "@flow(name='servers-smoke')\n"
              "def smoke(x: int) -> int:\n    return x + 1\n"
              "state = smoke(41, return_state=True)\n"
              "print('RESULT', state.type.value, state.result(), state.state_details.flow_run_id)\n")
    done = subprocess.run([sys.executable, "-c", script], env=servers.prefect_env(prefect_api, tmp_path / "home"),
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    _, state, result, run_id = line.split()
    assert (state, result) == ("COMPLETED", "42")

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        runs = {str(r.id): r for r in client.read_flow_runs()}
        assert run_id in runs, f"flow run {run_id} not on the server; it has {list(runs)}"
        state_now = runs[run_id].state
        assert state_now is not None and state_now.type.value == "COMPLETED"
        assert client.read_flow(runs[run_id].flow_id).name == "servers-smoke"


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def run_tree(mlflow_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """On the session's mlflow server: an experiment, a parent run, two child runs, a PNG artifact."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = MlflowClient(tracking_uri=mlflow_api)
    experiment_id = client.create_experiment(f"servers-{uuid.uuid4().hex[:8]}")
    parent = client.create_run(experiment_id, run_name="loop-parent").info.run_id
    for k in range(2):
        child = client.create_run(experiment_id, run_name=f"iteration-{k}",
                                  tags={MLFLOW_PARENT_RUN_ID: parent}).info.run_id
        for step in (0, 1):
            client.log_metric(child, "map50", 0.25 * (k + 1) + 0.1 * step, step=step)
        client.set_terminated(child)
    png = tmp_path_factory.mktemp("png") / "gallery.png"
    png.write_bytes(_png_bytes())
    client.log_artifact(parent, str(png), artifact_path="gallery")
    client.set_terminated(parent)
    return {"experiment_id": experiment_id, "parent": parent, "png": png.read_bytes()}


@pytest.mark.slow
def test_mlflow_server_keeps_nested_runs_metrics_and_proxied_artifacts(
        mlflow_api: str, run_tree: dict[str, Any], tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_api)
    children = client.search_runs([run_tree["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_tree['parent']}'")
    assert sorted(r.info.run_name for r in children) == ["iteration-0", "iteration-1"]
    for run in children:
        k = int(run.info.run_name.rsplit("-", 1)[1])
        history = sorted(client.get_metric_history(run.info.run_id, "map50"), key=lambda m: m.step)
        assert [(m.step, round(m.value, 6)) for m in history] == [(0, 0.25 * (k + 1)), (1, 0.25 * (k + 1) + 0.1)]
    parent = client.get_run(run_tree["parent"])
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")  # stored through the server's proxy
    assert [a.path for a in client.list_artifacts(run_tree["parent"], "gallery")] == ["gallery/gallery.png"]
    local = client.download_artifacts(run_tree["parent"], "gallery/gallery.png", str(tmp_path))
    assert Path(local).read_bytes() == run_tree["png"]


@pytest.mark.slow
def test_mlflow_ui_shows_the_child_runs(browser: Browser, mlflow_api: str, run_tree: dict[str, Any]) -> None:
    shot = ARTIFACTS / "mlflow_runs.png"
    shot.unlink(missing_ok=True)
    servers.mlflow_ui_shows(browser, mlflow_api, run_tree["experiment_id"],
                            ["loop-parent", "iteration-0", "iteration-1"], shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and the check can fail: a run that does not exist is reported with what the page showed
    with pytest.raises(AssertionError, match=r"does not show \['iteration-7'\].*iteration-1"):
        servers.mlflow_ui_shows(browser, mlflow_api, run_tree["experiment_id"], ["iteration-7"],
                                ARTIFACTS / "mlflow_runs_missing.png", timeout_s=4.0)


@pytest.mark.slow
def test_a_real_server_leaves_no_process_behind(tmp_path: Path) -> None:
    before = set(servers.live_servers())
    with servers.mlflow_server(tmp_path / "mlflow") as url:
        (pgid,) = set(servers.live_servers()) - before
        pids = servers.group_pids(pgid)
        assert len(pids) >= 2, f"expected the mlflow CLI and its uvicorn worker, got {pids}"
        assert servers.http_ok(f"{url}/health")
    assert servers.group_pids(pgid) == []
    assert not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in pids)
    assert pgid not in servers.live_servers()
    assert not servers.http_ok(f"{url}/health", timeout=1.0)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
