"""The closed-loop Prefect flow (flows/orchestration/closed_loop.py) on a temporary Prefect server with a
local SQLite MLflow store: fake renderer, 64² images, a couple of training steps.

What a user relies on: a run leaves the loop's files, its MLflow lineage and its Prefect
artifacts; running it again duplicates nothing (no re-render, no second MLflow run or model
version); `add_iterations` grows a finished loop; bad settings fail before anything is written.
The real-server, browser and SIGKILL tests live in tests/test_integration.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tinyloop import tiny_settings

from flows.loop.state import LoopHistory
from flows.orchestration.settings import LoopSettings
from generator.errors import ConfigError

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: str(home)}), prefect_test_harness(server_startup_timeout=120):
        yield


def settings(work: Path, real: Path, **kw: Any) -> LoopSettings:
    return tiny_settings(work, real, **{"images_per_iteration": 6, "render_shards": 2, "experiment": "flow-test",
                                        "model_name": "flow-test", **kw})


def mlflow_state(s: LoopSettings) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=s.tracking_uri)
    exp = client.get_experiment_by_name(s.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100) if exp else []
    versions = client.search_model_versions(f"name='{s.model_name}'")
    return {"runs": sorted((r.info.run_id, r.data.tags.get("synthloop.iteration")) for r in runs),
            "versions": sorted(int(v.version) for v in versions)}


@pytest.fixture(scope="module")
def loop_run(prefect: None, real: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from flows.orchestration.closed_loop import closed_loop

    work = tmp_path_factory.mktemp("flow")
    s = settings(work, real)
    rows = closed_loop(s)
    return {"settings": s, "rows": rows, "state": mlflow_state(s),
            "history": json.loads((Path(s.workdir) / "history.json").read_text())}


def test_flow_runs_every_step_and_tracks_the_lineage(loop_run: dict[str, Any]) -> None:
    s, rows, state = loop_run["settings"], loop_run["rows"], loop_run["state"]
    assert [r["iteration"] for r in rows] == [0, 1] and [r["images_rendered"] for r in rows] == [6, 12]
    work = Path(s.workdir)
    for k in (0, 1):
        for rel in ("params.yaml", "shard-0/manifest.json", "shard-1/manifest.json", "model/model.json",
                    "report/report.json", "decision.json"):
            assert (work / f"iter_{k}" / rel).is_file(), rel
    iterations = sorted(it for _, it in state["runs"] if it is not None)
    assert iterations == ["0", "1"] and len(state["runs"]) == 3  # parent + one child per iteration
    assert state["versions"] == [1, 2]


def test_flow_publishes_prefect_artifacts(loop_run: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.orchestration.publish import artifact_key

    cfg = loop_run["settings"].loop_config()
    keys = [artifact_key(cfg, s) for s in ("iter-0", "iter-1", "iter-1-changes", "progress")]
    with get_client(sync_client=True) as client:
        wanted = ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        found = {a.key: a for a in client.read_artifacts(artifact_filter=wanted)}
    assert set(found) == set(keys)
    md = str(found[keys[1]].data)
    assert "iteration 1" in md and "real-val" in md and "MLflow run" in md
    assert float(found[keys[3]].data) == pytest.approx(100.0)


def test_running_the_same_loop_again_duplicates_nothing(loop_run: dict[str, Any]) -> None:
    from flows.orchestration.closed_loop import closed_loop

    s = loop_run["settings"]
    manifest = Path(s.workdir) / "iter_1" / "shard-1" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    rows = closed_loop(s)
    assert rows == loop_run["rows"]
    assert json.loads((Path(s.workdir) / "history.json").read_text()) == loop_run["history"]
    assert mlflow_state(s) == loop_run["state"]
    assert manifest.stat().st_mtime_ns == before


def test_a_busy_loop_is_refused_by_the_flow_and_left_alone(loop_run: dict[str, Any]) -> None:
    import subprocess
    import sys

    from flows.orchestration.closed_loop import closed_loop
    from generator.errors import BusyError

    s = loop_run["settings"]
    hold = "import sys, time; from flows.loop.lock import hold\nwith hold(sys.argv[1]):\n" \
           "    print('held', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", hold, s.workdir], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=f"in use by pid {proc.pid}"):
            closed_loop(s.model_copy(update={"add_iterations": 1}))  # would grow the loop if it ran
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((Path(s.workdir) / "history.json").read_text()) == loop_run["history"]
    assert mlflow_state(s) == loop_run["state"]


def test_add_iterations_grows_a_finished_loop(loop_run: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from flows.orchestration.closed_loop import closed_loop

    s = loop_run["settings"]
    work = tmp_path / "copy"
    shutil.copytree(Path(s.workdir), work / "loop")
    shutil.copy(Path(s.tracking_uri.removeprefix("sqlite:///")), work / "mlflow.db")
    grown = settings(work, Path(s.real_dir), add_iterations=1)
    rows = closed_loop(grown)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert len(LoopHistory.open(grown.loop_config()).entries) == 3
    assert mlflow_state(grown)["versions"] == [1, 2, 3]


@pytest.mark.parametrize("change, field", [({"iterations": 0}, "loop.iterations"),
                                           ({"render_shards": 0}, "loop.render_shards"),
                                           ({"add_iterations": -1}, "loop.add_iterations"),
                                           ({"policy": "greedy"}, "--policy")])
def test_bad_settings_fail_before_anything_is_written(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    from flows.cli import main

    args = ["run", "--workdir", str(tmp_path / "loop"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    tiny = {"backend": "fake", "images_per_iteration": 2, "steps_per_iteration": 1, "width": 64, "height": 64}
    args += [f"--set={k}={v}" for k, v in {**tiny, **change}.items()]  # tiny: a missed error must not run long
    with pytest.raises(ConfigError) as exc:
        LoopSettings.build({"workdir": str(tmp_path / "loop"), **change}).loop_config()
    assert str(exc.value).startswith(field) and "\n" not in str(exc.value)
    assert main(args) == 2
    assert not (tmp_path / "loop").exists() and not (tmp_path / "m.db").exists()


def test_resume_repairs_a_corrupted_finished_shard_in_the_flow(loop_run: dict[str, Any], tmp_path: Path) -> None:
    """A byte flipped in a finished iteration's shard: the flow's next run re-renders it (in its
    process pool) from its recipe before anything trains or is tracked, with the same bytes, and
    tracks nothing twice."""
    import shutil

    from flows.orchestration.closed_loop import closed_loop
    from generator.shard import Shard

    s = loop_run["settings"]
    work = tmp_path / "copy"
    shutil.copytree(Path(s.workdir), work / "loop")
    shutil.copy(Path(s.tracking_uri.removeprefix("sqlite:///")), work / "mlflow.db")
    copy = settings(work, Path(s.real_dir))
    shard = work / "loop" / "iter_0" / "shard-1"
    ann = (shard / "annotations.json").read_bytes()
    data = bytearray((shard / "annotations.json").read_bytes())
    data[10] ^= 0x01
    (shard / "annotations.json").write_bytes(bytes(data))
    assert closed_loop(copy) == loop_run["rows"]
    Shard(shard).verify()
    assert (shard / "annotations.json").read_bytes() == ann
    entry = json.loads((work / "loop" / "history.json").read_text())["iterations"][0]
    assert [r["shard"] for r in entry["render"]["repairs"]] == ["iter_0/shard-1"]
    assert mlflow_state(copy) == {**loop_run["state"], "runs": mlflow_state(copy)["runs"]}
    assert len(mlflow_state(copy)["runs"]) == len(loop_run["state"]["runs"])


def test_resume_inside_an_iteration_rerenders_a_corrupt_cached_shard_in_the_flow(
        loop_run: dict[str, Any], tmp_path: Path) -> None:
    """Killed before iteration 1's history entry, its shard then damaged: Prefect's cache on the
    shard fingerprint must not stand in for the shard; it is re-rendered (same bytes) and noted."""
    import shutil

    from flows.orchestration.closed_loop import closed_loop

    s = loop_run["settings"]
    work = tmp_path / "copy"
    shutil.copytree(Path(s.workdir), work / "loop")
    shutil.copy(Path(s.tracking_uri.removeprefix("sqlite:///")), work / "mlflow.db")
    data = json.loads((work / "loop" / "history.json").read_text())
    (work / "loop" / "history.json").write_text(json.dumps({**data, "iterations": data["iterations"][:1]}))
    shard = work / "loop" / "iter_1" / "shard-0"
    ann = (shard / "annotations.json").read_bytes()
    image = shard / "images" / "000001.png"
    image.write_bytes(image.read_bytes()[:-7])  # truncated
    assert [r["iteration"] for r in closed_loop(settings(work, Path(s.real_dir)))] == [0, 1]
    entry = json.loads((work / "loop" / "history.json").read_text())["iterations"][1]
    first, second = entry["render"]["shards"]
    assert "images/000001.png" in first["repaired"] and not first["reused"] and "repaired" not in second
    assert (shard / "annotations.json").read_bytes() == ann
    assert entry["render"]["fingerprint"] == loop_run["history"]["iterations"][1]["render"]["fingerprint"]


def test_a_failed_disk_write_marks_the_parent_run_failed_and_the_loop_resumes_once_fixed(
        prefect: None, real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #15, item 10: iteration 1's checkpoint write fails as on a full disk (torch's zip
    writer error); the flow raises the OSError, the loop's MLflow parent run is FAILED (not left
    RUNNING), and once the disk is fixed the same loop finishes from iteration 1."""
    import torch
    from mlflow import MlflowClient

    from flows.orchestration.closed_loop import closed_loop
    from flows.tracking.runs import TAG_KIND

    s = settings(tmp_path, real, experiment="flow-full-disk", model_name="flow-full-disk")
    save = torch.save

    def full_disk_in_iteration_1(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        if "iter_1" in str(f):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk_in_iteration_1)
    with pytest.raises(OSError, match="writing the checkpoint failed"):
        closed_loop(s)
    client = MlflowClient(tracking_uri=s.tracking_uri)
    exp = client.get_experiment_by_name(s.experiment)

    def parents() -> list[str]:
        runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'loop'")
        return [r.info.status for r in runs]

    assert parents() == ["FAILED"]
    assert len(LoopHistory.open(s.loop_config()).entries) == 1  # iteration 0 kept
    monkeypatch.setattr(torch, "save", save)  # space freed
    rows = closed_loop(s)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert parents() == ["FINISHED"]  # the same parent, reopened and finished
