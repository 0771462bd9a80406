"""Production data closes the loop: the monitor flow (flows/orchestration/monitor.py), frozen windows
(evaluator/production/frozen.py), the loop merging a window (flows/loop/steps.py), `synthloop monitor`
and the monitor's deployment.

A tiny fake-renderer loop (one iteration, 32 images of 64², 2 training steps) is built once per
module. Production windows are written as real logs of that loop's own frames: unchanged (a
stationary window: no drift by construction) or darkened ×0.35 (the planted drift), with oracle
predictions and reviewed labels on every other frame. The trigger tests run against a real
`prefect server` (tests/conftest.py `prefect_api`) where the loop deployment is registered but
not served, so a triggered flow run stays Scheduled and can be counted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import flows.orchestration.monitor as monitor
from flows.cli import main
from flows.loop import run as driver
from flows.loop import steps as loop
from flows.loop.state import IterationRecord, LoopConfig, LoopHistory
from flows.orchestration.monitor_settings import MonitorSettings, decide
from generator.errors import ConfigError
from generator.params import GenerationParams
from generator.shard import Shard
from policy.decision import Decision

CLASSES = [str(i) for i in range(10)]


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory, real: Path) -> dict[str, Any]:
    """The watched loop: one completed iteration (its shard is the drift reference)."""
    root = tmp_path_factory.mktemp("watched")
    settings = {"workdir": str(root / "loop"), "real_dir": str(real), "iterations": 1,
                "images_per_iteration": 32, "steps_per_iteration": 2, "batch_size": 2, "width": 64, "height": 64,
                "backend": "fake", "eval_resamples": 0, "num_threads": 1, "device": "cpu", "policy": "uniform",
                "render_shards": 1, "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}
    cfg = LoopConfig(**{k: v for k, v in settings.items() if k != "tracking_uri"})
    driver.run_loop(cfg)
    return {"root": root, "settings": settings, "cfg": cfg, "shard": cfg.iter_dir(0) / "shard-0"}


def write_log(root: Path, shard: Path, gain: float, tag: str, minute: int = 0) -> Path:
    """A production log of the shard's frames × ``gain``: oracle predictions, every other
    frame reviewed. Records are appended to ``root/log/<tag>.jsonl``; returns the log dir."""
    sh = Shard(shard)
    (root / "frames").mkdir(parents=True, exist_ok=True)
    (root / "log").mkdir(exist_ok=True)
    truth_of = sh.annotations_by_image()
    lines = []
    for k, img in enumerate(sh.coco["images"]):
        iid = int(img["id"])
        pixels = np.clip(sh.load_image(img).astype(float) * gain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "frames" / f"{tag}-{iid}.png")
        truth = [{"bbox": a["bbox"], "class": sh.classes[a["category_id"] - 1]} for a in truth_of.get(iid, [])]
        t = minute + k
        rec: dict[str, Any] = {"id": f"{tag}-{iid}", "timestamp": f"2024-01-01T{t // 60:02d}:{t % 60:02d}:00Z",
                               "image": f"../frames/{tag}-{iid}.png", "model_version": "m1",
                               "predictions": [{**a, "score": 0.9} for a in truth]}
        if k % 2 == 0:
            rec["labels"] = truth
        lines.append(json.dumps(rec) + "\n")
    with (root / "log" / f"{tag}.jsonl").open("a") as fh:
        fh.write("".join(lines))
    return root / "log"


def monitor_settings(watched: dict[str, Any], root: Path, **kw: Any) -> MonitorSettings:
    return MonitorSettings.build({"log": str(root / "log"), "windows_dir": str(root / "windows"),
                                  "loop": watched["settings"], **kw})


class RecordingPolicy:
    """Stand-in policy that records the reports it is given and keeps the params."""

    name = "recording"

    def __init__(self, seen: list[dict[str, Any]]) -> None:
        self.seen = seen

    def propose(self, inputs: Any) -> Decision:
        self.seen.append(inputs.reports[0])
        params = GenerationParams(scenario="digits")
        return Decision(policy=self.name, scenario="digits", params=params.to_dict(), uniform_share=[0.0, 0.0])


def plant_weak_slice(report: dict[str, Any]) -> dict[str, Any]:
    """The real-val report with 'brightness low' as its weak slice (a 2-step model has recall 0
    everywhere, so no slice is significantly weak on its own)."""
    from evaluator.slices import weak_slices
    from generator.scenario import load_scenario

    s = next(x for x in report["slices"] if x["condition"] == "brightness" and x["bin"] == 0)
    weak = weak_slices([{**s, "significant": True, "gap": 0.2, "score": 1.0}], load_scenario("digits"), 0.2)
    return {**report, "weak_slices": weak}


# ------------------------------------------------------------------ settings, decision, CLI


def _signals(drifted: list[str], reviewed: tuple[int, int] | None = None) -> dict[str, Any]:
    rev = None if reviewed is None else {"detected": reviewed[0], "support": reviewed[1],
                                         "recall": reviewed[0] / reviewed[1]}
    return {"status": "ok", "drifted": drifted, "overall": {"reviewed": rev}}


def test_decide_applies_the_drift_and_failure_thresholds(tmp_path: Path) -> None:
    s = MonitorSettings(log=str(tmp_path))
    assert decide(_signals([]), None, s)["triggered"] is False
    assert decide(_signals(["brightness"]), None, s)["triggered"] is True
    two = s.model_copy(update={"min_drifted": 2})
    assert decide(_signals(["brightness"]), None, two)["triggered"] is False
    only = s.model_copy(update={"drift_conditions": ["object_size"]})
    assert decide(_signals(["brightness", "blur"]), None, only)["drifted"] == []
    merged = {"overall": {"recall": 0.8}, "production": {"reviewed_weak_slices": 0}}
    low = decide(_signals([], reviewed=(10, 60)), merged, s)  # recall 0.17, Wilson upper << 0.8
    assert low["triggered"] and "significantly below the real-val recall 0.800" in low["reason"]
    assert not decide(_signals([], reviewed=(47, 60)), merged, s)["triggered"]  # 0.78: not significant
    assert not decide(_signals([], reviewed=(10, 60)), merged, s.model_copy(update={"on_failure": False}))["triggered"]
    off = decide(_signals(["brightness"]), None, s.model_copy(update={"trigger": False}))
    assert not off["triggered"] and "trigger is off" in off["reason"]
    assert not decide({"status": "no_data", "reason": "nothing new"}, None, s)["triggered"]


@pytest.mark.parametrize("args, message", [
    ([], "monitor.log: is required"),
    (["--log", "{tmp}/absent"], "monitor.log: must be the production log directory"),
    (["--log", "{tmp}", "--set", "min_drifted=0"], "monitor.min_drifted: input should be greater than or equal to 1"),
    (["--log", "{tmp}", "--set", "deployment=closed-loop"], "monitor.deployment: must be '<flow name>/<deployment"),
    (["--log", "{tmp}", "--set", "lookback=3"], "monitor.lookback: extra inputs are not permitted"),
    (["--log", "{tmp}", "--set", "drift_conditions=[sunshine]"], "monitor.drift_conditions: must name conditions"),
    (["--log", "{tmp}", "--set", "loop.images_per_iteration=0"], "loop.images_per_iteration: must be an integer >= 1"),
    (["--log", "{tmp}", "--set", "loop.production={tmp}"], "loop.production: must be a frozen production window"),
])
def test_monitor_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             args: list[str], message: str) -> None:
    argv = ["monitor", *(a.replace("{tmp}", str(tmp_path)) for a in args),
            "--set", f"windows_dir={tmp_path / 'windows'}", "--set", f"tracking_uri=sqlite:///{tmp_path / 'm.db'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no windows, state or MLflow store


def test_monitor_deployment_is_scheduled_and_watches_the_served_loop(tmp_path: Path) -> None:
    from flows.orchestration.deploy import monitor_deployment
    from flows.orchestration.settings import LoopSettings

    served = LoopSettings.build({"workdir": str(tmp_path / "loop"), "images_per_iteration": 50})
    dep = monitor_deployment(MonitorSettings(log=str(tmp_path)), served, minutes=15)
    assert (dep.flow_name, dep.name) == ("production-monitor", "scheduled")
    assert dep.schedules[0].schedule.interval.total_seconds() == 900
    settings = dep.parameters["settings"]
    assert settings["loop"]["workdir"] == str(tmp_path / "loop") and settings["loop"]["images_per_iteration"] == 50
    assert settings["deployment"] == "closed-loop/manual"
    with pytest.raises(ConfigError, match=r"^--monitor-minutes: must be a number of minutes > 0"):
        monitor_deployment(MonitorSettings(log=str(tmp_path)), served, minutes=0)


def test_old_history_entries_without_production_still_load() -> None:
    rec = IterationRecord(0, {}, "p", 4, {}, {}, {}, {}).to_dict()
    rec.pop("production")
    assert IterationRecord.from_dict(rec).production is None


# ------------------------------------------------------------------ frozen windows and the loop


def freeze(watched: dict[str, Any], root: Path, gain: float, tag: str) -> Path:
    """Freeze a window of the watched loop's frames × ``gain`` as the monitor does (no Prefect)."""
    from evaluator.production import read_window
    from evaluator.production.frozen import freeze_window

    settings = monitor_settings(watched, root)
    result = read_window(write_log(root, watched["shard"], gain, tag), classes=CLASSES)
    signals, merged = monitor.measure.fn(settings, result)
    return freeze_window(result, settings.windows_dir, signals, merged)


@pytest.mark.slow
def test_a_frozen_window_holds_its_records_and_frames_and_replays_as_the_same_window(
        watched: dict[str, Any], tmp_path: Path) -> None:
    from evaluator.production import read_window
    from evaluator.production.frozen import freeze_window, load_window, read_info

    path = freeze(watched, tmp_path, 0.35, "dark")
    info = read_info(path)
    original = read_window(tmp_path / "log", classes=CLASSES)  # nothing committed: the same window again
    assert path.name == info["id"] == original.window_id and info["frames"] == 32 == len(original.records)
    assert info["reviewed_frames"] == 16 and info["counts"]["new"] == 32
    assert sorted(p.name for p in path.iterdir()) == ["frames", "records.jsonl", "report.json", "report.md",
                                                      "signals.json", "signals.md", "window.json"]
    shutil.rmtree(tmp_path / "frames")  # the log's frames go away: the window does not need them
    replayed = load_window(path, CLASSES)
    assert replayed.window_id == original.window_id
    assert [r.record.model_dump(exclude={"image"}) for r in replayed.records] == \
           [r.record.model_dump(exclude={"image"}) for r in original.records]
    assert all(r.image_path.is_file() and r.image_path.parent == path / "frames" for r in replayed.records)
    stamp = (path / "window.json").stat().st_mtime_ns
    assert freeze_window(original, path.parent, {}, None) == path  # already frozen: kept as it is
    assert (path / "window.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_the_loop_merges_a_window_and_the_policy_reads_the_merged_report(
        watched: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    window = freeze(watched, tmp_path / "prod", 0.35, "dark")
    work = tmp_path / "loop"
    shutil.copytree(watched["cfg"].work, work)
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(loop, "make_loop_policy", lambda cfg: RecordingPolicy(seen))
    real_eval = loop.evaluate_step

    def planted(*args: Any, **kw: Any) -> loop.EvalStep:
        e = real_eval(*args, **kw)
        return replace(e, report=plant_weak_slice(e.report))

    monkeypatch.setattr(loop, "evaluate_step", planted)
    cfg = replace(watched["cfg"], workdir=str(work), iterations=2, production=str(window))
    history = driver.run_loop(cfg)  # resumes the 1-iteration loop with a window: `production` is resumable
    e0, e1 = history.entries
    assert e0.production is None
    assert e1.production == {"window": window.name, "path": str(window.resolve()), "report": "iter_1/report-production",
                             "status": "ok", "merged": True, "drifted": e1.production["drifted"],
                             "weighting": "prevalence", "calibration": None}  # uniform: no base to move
    assert "brightness" in e1.production["drifted"]
    out = work / "iter_1" / "report-production"
    merged = json.loads((out / "report.json").read_text())
    assert merged["data"]["split"] == "real-val" and merged["production"]["window"]["id"] == window.name
    by_source = {(w["condition"], w["side"], w["source"]): w for w in merged["weak_slices"]}
    assert ("brightness", "low", "production-drift") in by_source  # the darkness itself is a target
    w = by_source["brightness", "low", "real-val"]
    assert w["production"]["weight"] > 1  # dark frames: far more common in production than in real-val
    assert w["score"] == pytest.approx(w["real_val_score"] * w["production"]["weight"], rel=1e-5)
    assert seen == [merged]  # iteration 1's policy decided on the merged report
    assert json.loads((out / "signals.json").read_text())["window"]["id"] == window.name
    _check_tracked_window(work, history, window)


@pytest.mark.slow
def test_a_drifted_window_recalibrates_the_mixture_base_to_its_frames(watched: dict[str, Any], tmp_path: Path) -> None:
    """A mixture loop given a drifted (dark) window re-fits its base to the window's frames before
    deciding (issue #11: drift enters as a calibration target, not only as a weak slice): once per
    window, recorded in the history, read back on a rerun; the fitted base is darker, as the frames."""
    from flows.loop import drift as drift_calibration
    from generator.params import load_params, uniform_params
    from generator.scenario import load_scenario

    window = freeze(watched, tmp_path / "prod", 0.35, "dark")
    assert "brightness" in drift_calibration.drifted(window)
    cfg = replace(watched["cfg"], workdir=str(tmp_path / "loop"), policy="mixture", production=str(window),
                  drift_calibration_trials=8, drift_calibration_images=8)
    history = driver.run_loop(cfg)
    out = tmp_path / "loop" / "calibration" / f"production-{window.name}"
    calib = history.entries[0].production["calibration"]
    assert calib["path"] == str(out.relative_to(tmp_path / "loop")) and "brightness" in calib["conditions"]
    report = json.loads((out / "report.json").read_text())
    bright = report["conditions"]["brightness"]
    # the renders moved toward the dark frames: the fitted base renders darker than uniform did
    real_mean = bright["real"]["mean"]
    assert abs(bright["after"]["mean"] - real_mean) < abs(bright["before"]["mean"] - real_mean)
    sc = load_scenario(cfg.scenario)
    fitted = load_params(out / "params.yaml", sc)
    assert fitted.distributions != uniform_params(sc).distributions
    params0 = load_params(cfg.iter_dir(0) / "params.yaml", sc)  # iteration 0: the fitted base + a uniform share
    assert params0.distributions == fitted.distributions and params0.uniform_share > 0
    stamp = (out / "params.yaml").stat().st_mtime_ns
    driver.run_loop(replace(cfg, iterations=2))  # a resume reads it back: fitted once per window
    assert (out / "params.yaml").stat().st_mtime_ns == stamp
    off = replace(cfg, workdir=str(tmp_path / "off"), drift_calibration_trials=0)
    assert driver.run_loop(off).entries[0].production["calibration"] is None
    assert not (tmp_path / "off" / "calibration").exists()


def _check_tracked_window(work: Path, history: LoopHistory, window: Path) -> None:
    """What the flow's track task logs for an iteration that merged a window."""
    from flows.tracking import iteration, runs

    t = runs.Tracking(f"sqlite:///{work.parent / 'track.db'}", "monitor-test", "monitor-test")
    parent = runs.open_loop_run(t, "monitor-test", history.config)
    run_id, _ = runs.open_iteration_run(t, parent, 1, None)
    record = history.entries[1].to_dict()
    iteration.log_iteration(t, run_id, parent, work, record, history.config,
                           production=work / record["production"]["path"])
    run = runs.client(t.uri).get_run(run_id)
    prod = [d.dataset for d in run.inputs.dataset_inputs if iteration._context(d) == "production"]
    assert [(d.name, d.digest) for d in prod] == [(window.name, window.name)]
    assert run.data.tags[runs.TAG_WINDOW] == window.name
    files = {f.path for f in runs.client(t.uri).list_artifacts(run_id, "report-production")}
    assert {"report-production/report.json", "report-production/signals.json"} <= files


def test_production_step_keeps_the_real_test_rule(tmp_path: Path) -> None:
    from generator.errors import DataError

    cfg = LoopConfig(workdir=str(tmp_path / "w"))
    object.__setattr__(cfg, "production", str(tmp_path))  # (validate would refuse a non-window first)
    with pytest.raises(DataError, match="never the held-out real-test"):
        loop.production_step(cfg, 0, {"data": {"split": "real-test"}, "final_report": True}, [])
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------ the monitor on a real Prefect server


@pytest.fixture(scope="module")
def deployment(prefect_api: str) -> Iterator[str]:
    """The loop deployment registered (not served) on the session's server; yields its id.
    Flow logs stay local: Prefect's API log worker runs in its own thread, which does not see
    temporary settings, and would start a temporary server of its own to send them to."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from flows.orchestration.closed_loop import closed_loop

    with temporary_settings({PREFECT_API_URL: prefect_api, PREFECT_LOGGING_TO_API_ENABLED: False}):
        yield str(closed_loop.to_deployment(name="manual").apply())


def loop_runs(deployment_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def runs_for(deployment_id: str, window: Path) -> list[Any]:
    return [r for r in loop_runs(deployment_id)
            if r.parameters["settings"].get("production") == str(window.resolve())]


def window_run(settings: MonitorSettings, window_id: str) -> Any:
    from flows.tracking.runs import TAG_WINDOW, client

    c = client(settings.loop_settings().tracking_uri)
    exp = c.get_experiment_by_name(settings.default_experiment())
    runs = c.search_runs([exp.experiment_id], f"tags.`{TAG_WINDOW}` = '{window_id}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


class Boom(Exception):
    pass


@pytest.mark.slow
@pytest.mark.servers
def test_a_drifted_window_triggers_the_loop_once_and_an_empty_poll_does_not(
        watched: dict[str, Any], deployment: str, tmp_path: Path) -> None:
    settings = monitor_settings(watched, tmp_path)
    write_log(tmp_path, watched["shard"], 0.35, "dark")
    before = len(loop_runs(deployment))
    first = monitor.production_monitor(settings)
    window = Path(first["window_dir"])
    assert first["status"] == "ok" and first["triggered"] and "brightness" in first["drifted"]
    runs = runs_for(deployment, window)
    assert len(runs) == 1 and len(loop_runs(deployment)) == before + 1
    assert str(runs[0].id) == first["flow_run_id"] == json.loads((window / "trigger.json").read_text())["flow_run_id"]
    params = runs[0].parameters["settings"]
    assert params["add_iterations"] == 1 and params["workdir"] == watched["settings"]["workdir"]
    assert params["wait_for_loop_s"] == 3600  # a busy loop (the nightly run) is waited for, not raced
    mlflow_run = window_run(settings, first["window"])
    assert mlflow_run.data.tags["synthloop.window.status"] == "ok" and mlflow_run.data.metrics["psi.brightness"] > 0.2
    assert mlflow_run.data.tags["synthloop.trigger.flow_run_id"] == first["flow_run_id"]

    again = monitor.production_monitor(settings)  # no new records
    assert again["status"] == "no_data" and not again["triggered"] and again["window"] != first["window"]
    assert len(loop_runs(deployment)) == before + 1
    assert window_run(settings, again["window"]).data.tags["synthloop.window.status"] == "no_data"
    state = json.loads((tmp_path / "log" / "ingest-state.json").read_text())
    assert [w["id"] for w in state["windows"]] == [first["window"]] and state["totals"]["new"] == 32


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.parametrize("crash_in", ["commit", "write_trigger"])
def test_a_crash_after_the_trigger_reruns_the_window_without_a_second_loop_run(
        watched: dict[str, Any], deployment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        crash_in: str) -> None:
    """Killed after run_deployment, before the watermark commit (or before trigger.json)."""
    settings = monitor_settings(watched, tmp_path)
    write_log(tmp_path, watched["shard"], 0.35, f"crash-{crash_in}")
    before = len(loop_runs(deployment))

    def boom(*args: Any) -> None:
        raise Boom(f"killed in {crash_in}")

    with monkeypatch.context() as m:
        m.setattr(monitor, crash_in, boom)
        with pytest.raises(Boom):
            monitor.production_monitor(settings)
    assert not (tmp_path / "log" / "ingest-state.json").exists()  # nothing committed
    assert len(loop_runs(deployment)) == before + 1  # the loop run was created before the crash
    rerun = monitor.production_monitor(settings)
    window = Path(rerun["window_dir"])
    assert rerun["triggered"] and rerun["already_triggered"] == (crash_in == "commit")
    assert len(loop_runs(deployment)) == before + 1 and len(runs_for(deployment, window)) == 1
    assert json.loads((window / "trigger.json").read_text())["flow_run_id"] == rerun["flow_run_id"]
    assert json.loads((tmp_path / "log" / "ingest-state.json").read_text())["windows"][0]["id"] == rerun["window"]


@pytest.mark.slow
@pytest.mark.servers
def test_a_stationary_window_triggers_nothing(watched: dict[str, Any], deployment: str, tmp_path: Path) -> None:
    settings = monitor_settings(watched, tmp_path)
    write_log(tmp_path, watched["shard"], 1.0, "flat")
    before = len(loop_runs(deployment))
    summary = monitor.production_monitor(settings)
    assert summary["status"] == "ok" and summary["drifted"] == [] and not summary["triggered"]
    assert summary["flow_run_id"] is None and not (Path(summary["window_dir"]) / "trigger.json").exists()
    assert len(loop_runs(deployment)) == before
    assert window_run(settings, summary["window"]).data.tags["synthloop.triggered"] == "false"


@pytest.mark.slow
@pytest.mark.servers
def test_the_triggered_run_grows_the_loop_with_the_window(watched: dict[str, Any], deployment: str, prefect_api: str,
                                                          tmp_path: Path) -> None:
    """What closed-loop/manual runs with the parameters the monitor gave it: here `synthloop run`
    with them, in a child process reporting to the same server (docs/testing.md)."""
    import subprocess
    import sys

    import servers
    import yaml
    from mlflow import MlflowClient

    from flows.tracking.runs import TAG_WINDOW

    shutil.copytree(watched["cfg"].work, tmp_path / "loop")
    watched_copy = {**watched, "settings": {**watched["settings"], "workdir": str(tmp_path / "loop"),
                                            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    write_log(tmp_path / "prod", watched["shard"], 0.35, "grow")
    summary = monitor.production_monitor(monitor_settings(watched_copy, tmp_path / "prod"))
    (run,) = runs_for(deployment, Path(summary["window_dir"]))
    (tmp_path / "triggered.yaml").write_text(yaml.safe_dump(run.parameters["settings"]))
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", str(tmp_path / "triggered.yaml")],
                          env=servers.prefect_env(prefect_api, tmp_path / "home"), cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads((tmp_path / "loop" / "history.json").read_text())["iterations"][1]
    assert entry["production"]["window"] == summary["window"] and entry["production"]["merged"]
    assert (tmp_path / "loop" / "iter_1" / "report-production" / "report.json").is_file()
    client = MlflowClient(tracking_uri=watched_copy["settings"]["tracking_uri"])
    (child,) = client.search_runs([client.get_experiment_by_name("synthloop/digits-uniform-seed0").experiment_id],
                                  "tags.`synthloop.iteration` = '1'")
    assert child.data.tags[TAG_WINDOW] == summary["window"]
    assert (summary["window"], summary["window"]) in {(d.dataset.name, d.dataset.digest)
                                                      for d in child.inputs.dataset_inputs}


# ------------------------------------------------------------------ the before/after benchmark


@pytest.mark.slow
def test_production_reaction_benchmark_smoke(watched: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "production_reaction.py"
    spec = importlib.util.spec_from_file_location("production_reaction", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["production_reaction"] = bench
    spec.loader.exec_module(bench)
    champion = tmp_path / "champion"
    shutil.copytree(watched["cfg"].work, champion)
    work = tmp_path / "bench"
    assert bench.main(["--preset", "smoke", "--work", str(work), "--loop", str(champion)]) == 0
    result = json.loads((work / "production_reaction.json").read_text())
    assert json.loads(capsys.readouterr().out) == result
    wid = result["window"]["id"]
    assert result["with_window"]["production"] == [None, wid, wid]
    assert result["without_window"]["production"] == [None, None, None]
    assert result["with_window_tilt_only"]["production"] == [None, wid, wid]
    for key in ("before", "with_window", "without_window", "with_window_tilt_only"):  # the same held-out slice
        assert result[key]["slice_objects"] == result["before"]["slice_objects"] > 0
    entries = json.loads((work / "with" / "history.json").read_text())["iterations"]
    assert entries[1]["render"]["reused"] and entries[1]["train"]["reused"]  # shared iteration: computed once
    assert (work / "with" / "iter_2" / "report-production" / "signals.json").is_file()
    assert not (work / "without" / "iter_2" / "report-production").exists()
    for key in ("before", "with_window", "without_window", "with_window_tilt_only"):  # no machine prefix
        assert not Path(result[key]["model"]).is_absolute() and (work / result[key]["model"]).is_dir()
    capsys.readouterr()
    runs = str(work / "production_reaction.json")
    assert bench.main(["--combine", runs, runs, "--work", str(tmp_path / "all")]) == 0  # e.g. one file per seed
    combined = json.loads((tmp_path / "all" / "production_reaction.json").read_text())
    assert combined["runs"] == [result, result]
    diff = result["with_window"]["slice_recall"] - result["without_window"]["slice_recall"]
    assert combined["summary"]["with_minus_without"] == {"mean": round(diff, 4), "sd": 0.0,
                                                         "values": [round(diff, 4)] * 2}
