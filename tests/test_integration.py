"""The closed loop as a product, end to end, against real servers and real processes.

- ``synthloop serve`` on a real ``prefect server`` registers ``closed-loop/scheduled`` (active
  cron, not paused) and ``closed-loop/manual``; a manual run triggered through Prefect's API
  runs the tiny loop (real pyrender renders in the process-pool workers) and leaves its lineage
  on a real ``mlflow server``: one parent run, a nested run per iteration linked to the
  previous one, shard datasets whose digests are the fingerprints in history.json, the loop
  curve, a model version per iteration with ``champion``, and ``synthloop lineage`` walks it
  back to iteration 0.
- The MLflow UI (headless Chromium) lists the iteration runs and shows their metrics.
- ``synthloop run`` (temporary Prefect server, sqlite MLflow) SIGKILLed in the middle of
  iteration 1 and run again ends exactly where an uninterrupted run of the same settings does
  (the manual deployment's run above): same history, shards, Optuna trials and files, and no
  duplicate MLflow run, model version or logged model.
- The same loop stopped in iteration 1 by Ctrl-C (SIGINT to the group), SIGTERM or SIGINT to the
  main process, or SIGKILL of the main process only, at render, train or evaluate: it exits
  within seconds (130 / 143), leaves nothing running (group and process tree), and resumes to the
  same end as the uninterrupted run.

Screenshots go to tests/artifacts/ (git-ignored). ~8-10 min on 2 busy cores, most of it the
fifteen loop runs (a stopped run and its resume count two; each pays for a Prefect server or
runner and the render workers' start-up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import loopcheck
import pytest
import servers

if TYPE_CHECKING:
    from playwright.sync_api import Browser



def e2e(test: Any) -> Any:
    """Marks of a test that runs the loop against real servers: ``slow`` and ``servers``."""
    return pytest.mark.slow(pytest.mark.servers(test))


ARTIFACTS = Path(__file__).parent / "artifacts"
CRON = "17 3 1 1 *"  # 03:17 UTC on 1 January: no scheduled run fires while the tests run
LOOP_TIMEOUT_S = 420.0
STUDY = "digits-optuna-seed0"  # the tiny loop's Optuna study (LoopConfig.study_name)


@dataclass
class Deployed:
    """What ``synthloop serve`` + a manual run through Prefect left behind."""

    settings: dict[str, Any]  # the manual run's settings
    scheduled: Any  # DeploymentResponse of closed-loop/scheduled
    manual: Any  # DeploymentResponse of closed-loop/manual
    flow_run: Any  # the triggered FlowRun, as run_deployment returned it
    after_stop: Any  # the same flow run read back after the serve process was stopped
    planned: list[Any]  # flow runs the server's scheduler created for closed-loop/scheduled
    serve_log: Path
    left: list[int]  # processes of the serve group or its tree still alive after it was stopped

    @property
    def work(self) -> Path:
        return Path(self.settings["workdir"])

    @property
    def name(self) -> str:
        return str(self.settings["experiment"])


def _read_deployments() -> list[Any] | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return [client.read_deployment_by_name(f"closed-loop/{n}") for n in ("scheduled", "manual")]
        except ObjectNotFound:
            return None


def _planned_runs(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(deployment_filter=only))


@pytest.fixture(scope="module")
def deployed(prefect_api: str, mlflow_api: str, real: Path, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """Serve both deployments from a ``synthloop serve`` process, trigger closed-loop/manual
    with the tiny loop through Prefect's API, wait for the run, stop the serve process group."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("deployed")
    tag = uuid.uuid4().hex[:8]
    served = loopcheck.tiny_settings(root / "scheduled", real, mlflow_api, f"it-scheduled-{tag}")
    manual = loopcheck.tiny_settings(root / "manual", real, mlflow_api, f"it-manual-{tag}")
    env = servers.prefect_env(prefect_api, root / "prefect-home")
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"  # pick the triggered run up within 2 s, not 10
    log = root / "serve.log"
    cmd = [str(loopcheck.SYNTHLOOP), "serve", "--cron", CRON, *loopcheck.set_args(served)]
    proc = loopcheck.start_group(cmd, env=env, cwd=root / "cwd", log=log)
    try:
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            scheduled, dep = loopcheck.wait_for(_read_deployments, "both deployments served", 120, proc=proc,
                                                log=log, every=0.5)
            flow_run: Any = run_deployment(name="closed-loop/manual", parameters={"settings": manual},
                                           timeout=LOOP_TIMEOUT_S, poll_interval=2)
            planned = loopcheck.wait_for(lambda: _planned_runs(scheduled.id), "scheduled runs planned", 60, every=1)
            # the flow run's process and its render workers exit: only `synthloop serve` is left
            loopcheck.wait_for(lambda: servers.group_pids(proc.pid) == [proc.pid], "flow run processes gone", 60,
                               proc=proc, log=log, every=0.5)
    finally:
        servers.stop_group(proc, "synthloop serve")  # SIGTERM (Ctrl-C's cousin), SIGKILL after 15 s
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        after = _read_flow_run(flow_run.id)  # what the server keeps once serve is gone
    # serve's group and anything its runs started elsewhere (a reaper sweeps those)
    return Deployed(manual, scheduled, dep, flow_run, after, planned, log, loopcheck.wait_gone(proc))


def _read_flow_run(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


@e2e
def test_serve_registers_an_active_cron_schedule_and_a_manual_deployment(deployed: Deployed) -> None:
    s = deployed.scheduled
    assert not s.paused
    assert [(x.active, x.schedule.cron) for x in s.schedules] == [(True, CRON)]
    assert s.schedules[0].schedule.timezone in (None, "UTC")  # None: the server reads cron in UTC
    starts = [r.expected_start_time.astimezone(UTC) for r in deployed.planned]  # the server planned them
    assert starts and all((t.month, t.day, t.hour, t.minute) == (1, 1, 3, 17) for t in starts), starts
    assert all(r.state.type.value == "SCHEDULED" for r in deployed.planned)
    assert s.parameters["settings"]["add_iterations"] == 1  # each scheduled run grows the loop by one
    assert s.parameters["settings"]["wait_for_loop_s"] == 3600  # and waits for a run already on it
    assert s.parameters["settings"]["workdir"].endswith("/scheduled")
    assert deployed.manual.schedules == [] and not deployed.manual.paused
    assert deployed.left == [], f"serve left processes {deployed.left} behind"


@e2e
def test_manual_run_through_prefect_completes_the_loop(deployed: Deployed) -> None:
    state = deployed.flow_run.state
    assert state is not None and state.type.value == "COMPLETED", \
        f"flow run {deployed.flow_run.id} ended {state}; serve log:\n{servers.log_tail(deployed.serve_log, 60)}"
    assert deployed.flow_run.deployment_id == deployed.manual.id
    assert deployed.after_stop.state.type.value == "COMPLETED"  # stopping serve afterwards changes nothing
    hist = loopcheck.history(deployed.work)
    assert [e["iteration"] for e in hist] == [0, 1, 2] and [e["images_rendered"] for e in hist] == [4, 8, 12]
    assert all(len(e["render"]["shards"]) == 2 for e in hist)


@e2e
def test_mlflow_server_holds_the_lineage_of_the_triggered_run(deployed: Deployed, mlflow_api: str) -> None:
    work, hist = deployed.work, loopcheck.history(deployed.work)
    t = loopcheck.tracked(mlflow_api, deployed.name, deployed.name)
    assert len(t.parents) == 1 and len(t.runs) == 1 + len(hist), [r.info.run_name for r in t.runs]
    parent, flow_run_id = t.parents[0], str(deployed.flow_run.id)
    assert parent.data.tags["prefect.flow_run_id"] == flow_run_id and parent.info.status == "FINISHED"
    assert sorted(t.children) == [0, 1, 2] and all(len(runs) == 1 for runs in t.children.values())
    children = [t.children[k][0] for k in range(3)]
    for k, (child, entry) in enumerate(zip(children, hist, strict=True)):
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert tags["prefect.flow_run_id"] == flow_run_id
        assert tags.get("synthloop.previous_run_id") == (children[k - 1].info.run_id if k else None)
        inputs = loopcheck.dataset_inputs(child)
        new = [(d["digest"], d["source"]) for d in inputs if d["context"] == "training" and d["new"]]
        assert new == [(s["fingerprint"], str((work / s["path"]).resolve())) for s in entry["render"]["shards"]]
        trained = sorted(d["digest"] for d in inputs if d["context"] == "training")
        assert trained == sorted(fp for fps in loopcheck.fingerprints(work)[:k + 1] for fp in fps)
        assert [d["name"] for d in inputs if d["context"] == "validation"] == ["real-val"]
    _check_parent_curve(mlflow_api, parent.info.run_id, hist)
    assert [v.tags["synthloop.iteration"] for v in t.versions] == ["0", "1", "2"]
    assert [v.run_id for v in t.versions] == [c.info.run_id for c in children]
    assert t.champion is not None and t.champion.version in [v.version for v in t.versions]


def _check_parent_curve(uri: str, parent_id: str, hist: list[dict[str, Any]]) -> None:
    """One point per iteration (step = k) of the loop curve on the parent run."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    for key, value in (("real_val_map50", lambda e: e["evaluate"]["map50"]),
                       ("images_rendered", lambda e: e["images_rendered"])):
        points = sorted((m.step, m.value) for m in c.get_metric_history(parent_id, key))
        assert points == [(k, pytest.approx(float(value(e)))) for k, e in enumerate(hist)], key


def _lineage(ref: str, uri: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[int], str]:
    from flows.cli import main

    capsys.readouterr()
    assert main(["lineage", ref, "--tracking-uri", uri]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("iteration ")], out


@e2e
def test_lineage_cli_walks_from_the_champion_back_to_iteration_0(deployed: Deployed, mlflow_api: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    t = loopcheck.tracked(mlflow_api, deployed.name, deployed.name)
    k = int(t.champion.tags["synthloop.iteration"])
    chain, out = _lineage(f"models:/{deployed.name}@champion", mlflow_api, capsys)
    assert chain == list(range(k, -1, -1)) and f"{deployed.name} v{t.champion.version} [champion]" in out
    chain, out = _lineage(f"models:/{deployed.name}/{t.versions[-1].version}", mlflow_api, capsys)
    assert chain == [2, 1, 0]
    for fp in (fp for fps in loopcheck.fingerprints(deployed.work) for fp in fps):
        assert f"fingerprint {fp}" in out


@e2e
def test_mlflow_ui_shows_the_iteration_runs_and_their_metrics(deployed: Deployed, mlflow_api: str,
                                                              browser: Browser) -> None:
    hist = loopcheck.history(deployed.work)
    t = loopcheck.tracked(mlflow_api, deployed.name, deployed.name)
    first = hist[0]["render"]["shards"][0]
    runs_shot, run_shot = ARTIFACTS / "integration_runs.png", ARTIFACTS / "integration_run_metrics.png"
    for shot in (runs_shot, run_shot):
        shot.unlink(missing_ok=True)
    expect = [f"loop {STUDY}", "iter 0", "iter 1", "iter 2", f"{first['path']} ({first['fingerprint']})"]
    servers.mlflow_ui_shows(browser, mlflow_api, t.experiment_id, expect, runs_shot)
    last = t.children[2][0]
    want = {"images_rendered": hist[2]["images_rendered"], "train_final_loss": hist[2]["train"]["final_loss"],
            "real_val_map50": hist[2]["evaluate"]["map50"]}  # the screenshot shows the last one
    shown = loopcheck.run_page_metrics(browser, mlflow_api, t.experiment_id, last.info.run_id,
                                       list(want), run_shot)
    assert set(shown) == set(want), f"the run page shows {shown}, expected {want} (screenshot {run_shot})"
    for name, value in want.items():
        assert float(shown[name]) == pytest.approx(float(value), rel=1e-4), name
    assert runs_shot.is_file() and run_shot.is_file()


@e2e
def test_sigkill_mid_iteration_then_resume_matches_an_uninterrupted_run(deployed: Deployed, real: Path,
                                                                        tmp_path: Path) -> None:
    work, db = tmp_path / "loop", tmp_path / "mlflow.db"
    s = loopcheck.tiny_settings(work, real, f"sqlite:///{db}", "it-resume")
    cmd = [str(loopcheck.SYNTHLOOP), "run", *loopcheck.run_args(s)]
    env, log = loopcheck.ephemeral_env(tmp_path / "prefect-home"), tmp_path / "run.log"
    with loopcheck.group(cmd, env=env, cwd=tmp_path, log=log) as proc:
        loopcheck.wait_for(lambda: len(loopcheck.history(work)) == 1 and _shards_of(work, 1),
                           "iteration 0 done and a shard of iteration 1 written", LOOP_TIMEOUT_S, proc=proc,
                           log=log, every=0.02)
        assert loopcheck.kill_group(proc) == []  # SIGKILL: the flow, its render workers, its Prefect server
    assert len(loopcheck.history(work)) == 1, "killed too late: raise TINY steps_per_iteration"
    before = _snapshot(work, s)
    assert loopcheck.run_to_end(cmd, env=env, cwd=tmp_path, log=log, timeout=LOOP_TIMEOUT_S) == 0, \
        servers.log_tail(log, 60)
    _check_same_as_uninterrupted(work, deployed.work)
    _check_tracked_once(s, before)


STOPS = {  # how a loop is stopped -> (the signal, sent to the whole group?, the exit status expected)
    "ctrl-c": (signal.SIGINT, True, 130),  # SIGINT to the foreground process group, as a terminal does
    "sigterm-main": (signal.SIGTERM, False, 143),
    "sigint-main": (signal.SIGINT, False, 130),
    "sigkill-main": (signal.SIGKILL, False, -signal.SIGKILL),  # the main process only, as the OOM killer
}
STAGES = {  # where in iteration 1 (after iteration 0 is recorded) -> the file that marks it
    "render": "params.yaml",  # the policy's params written: the render workers start
    "train": "shard-0/manifest.json",  # a shard finished: rendering ends, training starts
    "evaluate": "model/model.json",  # the model written: evaluation, policy and tracking follow
}


@e2e
@pytest.mark.parametrize("how, stage", [("ctrl-c", "render"), ("ctrl-c", "train"), ("sigterm-main", "train"),
                                        ("sigint-main", "evaluate"), ("sigkill-main", "render"),
                                        ("sigkill-main", "evaluate")])
def test_a_stopped_loop_leaves_nothing_running_and_resumes_like_an_uninterrupted_one(
        deployed: Deployed, real: Path, tmp_path: Path, how: str, stage: str) -> None:
    """Stopped in iteration 1, the command exits within seconds with 128 + signal; its render
    workers, its Prefect server (in a session of its own) and its reaper are all gone; run
    again, the loop ends exactly where an uninterrupted one does."""
    sig, to_group, status = STOPS[how]
    work, db = tmp_path / "loop", tmp_path / "mlflow.db"
    s = loopcheck.tiny_settings(work, real, f"sqlite:///{db}", "it-stop")
    cmd = [str(loopcheck.SYNTHLOOP), "run", *loopcheck.run_args(s)]
    env, log = loopcheck.ephemeral_env(tmp_path / "prefect-home"), tmp_path / "run.log"
    with loopcheck.group(cmd, env=env, cwd=tmp_path, log=log) as proc:
        mark = work / "iter_1" / STAGES[stage]
        loopcheck.wait_for(lambda: len(loopcheck.history(work)) == 1 and mark.exists(),
                           f"iteration 0 done and iteration 1 at {stage}", LOOP_TIMEOUT_S, proc=proc, log=log,
                           every=0.02)
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        try:
            code = proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{how}: still running after {STOP_S:.0f} s; {log} ends with:\n"
                                 f"{servers.log_tail(log)}") from None
        assert code == status, servers.log_tail(log)
        left = loopcheck.wait_gone(proc, timeout=15.0)  # the reaper's SIGTERM -> SIGKILL takes <= 5 s
        assert left == [], f"{how}: {left} still running ({[servers.cmdline(p) for p in left]})"
    assert len(loopcheck.history(work)) == 1, "stopped too late: raise TINY steps_per_iteration"
    before = _snapshot(work, s, parent="RUNNING" if sig == signal.SIGKILL else "FAILED")
    assert loopcheck.run_to_end(cmd, env=env, cwd=tmp_path, log=log, timeout=LOOP_TIMEOUT_S) == 0, \
        servers.log_tail(log, 60)
    _check_same_as_uninterrupted(work, deployed.work)
    _check_tracked_once(s, before)


STOP_S = 60.0  # a Ctrl-C'd or SIGTERMed loop must be gone within this (it hung for 10+ minutes; ~5 s on a
# quiet machine, but two test workers beside other jobs have pushed it past 30 s)


def _shards_of(work: Path, k: int) -> dict[Path, int]:
    """Finished shards of iteration ``k`` (their manifest's mtime)."""
    return {p: p.stat().st_mtime_ns for p in work.glob(f"iter_{k}/shard-*/manifest.json")}


def _snapshot(work: Path, s: dict[str, Any], parent: str = "RUNNING") -> dict[str, Any]:
    """After the stop: iteration 0's entry, the finished shards; the parent run left ``parent``
    (RUNNING after a SIGKILL; FAILED when the loop could say so)."""
    t = loopcheck.tracked(s["tracking_uri"], s["experiment"], s["model_name"])
    assert [p.info.status for p in t.parents] == [parent] and len(t.versions) == 1
    return {"entry": loopcheck.history(work)[0], "shards": {**_shards_of(work, 0), **_shards_of(work, 1)}}


def _check_same_as_uninterrupted(work: Path, reference: Path) -> None:
    assert len(loopcheck.history(work)) == len(loopcheck.history(reference)) == 3
    assert loopcheck.fingerprints(work) == loopcheck.fingerprints(reference)
    resumed, ref = (loopcheck.without_timings(loopcheck.history(w)) for w in (work, reference))
    assert resumed == ref  # same params, shards, training data and results, decisions
    assert loopcheck.tree(work) == loopcheck.tree(reference)  # same files: no duplicate shard or model
    trials = loopcheck.optuna_trials(work, STUDY)
    assert trials == loopcheck.optuna_trials(reference, STUDY)
    proposals = [it for _, state, it, _ in trials if it is not None]
    assert len(proposals) == len(set(proposals)), f"an iteration asked Optuna twice: {trials}"


def _check_tracked_once(s: dict[str, Any], before: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    work = Path(s["workdir"])
    assert loopcheck.history(work)[0] == before["entry"]  # iteration 0 was not redone
    shards = before["shards"]  # iteration 0's and iteration 1's finished ones: reused, not re-rendered
    assert {p: p.stat().st_mtime_ns for p in shards} == shards
    t = loopcheck.tracked(s["tracking_uri"], s["experiment"], s["model_name"])
    assert len(t.parents) == 1 and t.parents[0].info.status == "FINISHED"
    assert {k: [r.info.status for r in runs] for k, runs in t.children.items()} == \
        {k: ["FINISHED"] for k in range(3)}
    assert len(t.runs) == 4  # 1 parent + 3 children, nothing stray
    assert [v.tags["synthloop.iteration"] for v in t.versions] == ["0", "1", "2"]
    models = MlflowClient(tracking_uri=s["tracking_uri"]).search_logged_models([t.experiment_id])
    assert sorted(str(m.tags.get("synthloop.iteration")) for m in models) == ["0", "1", "2"]
