"""Warm start (flows/loop/warm_start.py): a loop that improves an existing model.

The init model is iteration 0's model of a tiny cold loop (fake renderer, 64² images, 2 training
steps), so its training shard is on disk and gives the policy its synthetic conditions. What a
user relies on: a bad init model is one line before anything is written; a warm loop evaluates
the init model on real-val before it renders, iteration 0 renders the decision on that report
and trains from the init model; a SIGKILL anywhere in the pre-step or iteration 0 resumes to the
same history and fingerprints; a resume with other init weights is refused; MLflow holds an
"init" run whose model is the champion's first bar, and lineage walks back to it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from loopcheck import without_timings
from tinyloop import tiny_config

from flows.loop import run as driver
from flows.loop import state
from flows.loop import steps as loop
from flows.loop.state import LoopConfig, LoopHistory
from generator.errors import ConfigError
from generator.params import Distribution, GenerationParams
from policy.decision import Decision

REPO = Path(__file__).resolve().parents[1]
UNIFORM = {"scenario": "digits", "uniform_share": 0.0, "distributions": {}}


tiny = tiny_config


@pytest.fixture(scope="module")
def init_model(tmp_path_factory: pytest.TempPathFactory, real: Path) -> Path:
    """Iteration 0's model of a 1-iteration cold loop (its shard stays on disk)."""
    work = tmp_path_factory.mktemp("cold") / "w"
    driver.run_loop(tiny(work, real, iterations=1))
    return work / "iter_0" / "model"


def weights_sha(model: Path) -> str:
    return str(json.loads((model / "model.json").read_text())["weights_sha256"])


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory, real: Path, init_model: Path) -> LoopConfig:
    """An uninterrupted warm-started loop (the Optuna policy): the reference of the resume tests."""
    cfg = tiny(tmp_path_factory.mktemp("warm") / "w", real, init_model=str(init_model))
    driver.run_loop(cfg)
    return cfg


# ------------------------------------------------------------------ checks up front


def _copy_model(src: Path, dst: Path, **meta: Any) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / "model.json").read_text())
    (dst / "model.json").write_text(json.dumps({**data, **meta}))
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("missing", r"does not load \(model: directory .* does not exist"),
    ("empty", r"does not load \(model: .* lacks model.json or model.pt"),
    ("scenario", r"must be a model of the loop's scenario 'digits', but got .*scenario 'other'"),
    ("classes", r"must have the scenario's classes \['0', '1', .*, but got .*classes \['a', '1'"),
    ("weights", r"model.pt has sha256 .*, but its model.json records"),
])
def test_a_bad_init_model_is_one_line_and_nothing_is_written(tmp_path: Path, real: Path, init_model: Path,
                                                             case: str, message: str) -> None:
    from flows.orchestration.settings import LoopSettings

    path = tmp_path / "m"
    if case == "empty":
        path.mkdir()
    elif case == "scenario":
        _copy_model(init_model, path, scenario="other")
    elif case == "classes":
        classes = json.loads((init_model / "model.json").read_text())["classes"]
        _copy_model(init_model, path, classes=["a", *classes[1:]])
    elif case == "weights":
        _copy_model(init_model, path, weights_sha256="0" * 64)
    work = tmp_path / "w"
    with pytest.raises(ConfigError, match=rf"^loop\.init_model: .*{message}") as exc:
        driver.run_loop(tiny(work, real, init_model=str(path)))
    assert "\n" not in str(exc.value) and not work.exists()
    with pytest.raises(ConfigError, match=r"^loop\.init_model: "):
        LoopSettings.build({"workdir": str(work), "init_model": str(path)}).loop_config()


def test_run_cli_takes_init_and_refuses_a_missing_model_before_writing(tmp_path: Path) -> None:
    from loopcheck import SYNTHLOOP

    from flows.cli import build_parser

    for flag in ("--init", "--init-model"):
        assert build_parser().parse_args(["run", flag, "m"]).init_model == "m"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # a real process: `synthloop run` imports Prefect, whose log handler must not bind to pytest's capture
    for args in (["--init", "nope"], ["--set", "init_model=nope"]):
        proc = subprocess.run([str(SYNTHLOOP), "run", *args, "--workdir", "w"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and err.startswith("error: loop.init_model: 'nope' does not load"), err
        assert "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_another_init_model_or_changed_weights(tmp_path: Path, real: Path) -> None:
    cfg = tiny(tmp_path / "w", real, init_model=str(tmp_path / "m"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt").write_bytes(b"weights")
    h = LoopHistory.open(cfg)
    h.set_init({"model": str(tmp_path / "m"), "weights_sha256": "0" * 64})
    assert json.loads(h.path.read_text())["init"]["weights_sha256"] == "0" * 64
    with pytest.raises(ConfigError, match=r"^loop\.init_model: the work directory .* started from weights sha256 "
                                          r"000000000000…, but .* now has [0-9a-f]{12}…; restore that model"):
        LoopHistory.open(cfg)
    with pytest.raises(ConfigError, match=r"^loop\.init_model: the work directory .* holds a loop with "
                                          r"init_model='.*/m', but got None"):
        LoopHistory.open(tiny(tmp_path / "w", real))
    h.entries.append(state.IterationRecord(0, {}, "p", 4, {}, {}, {}, {}))
    with pytest.raises(ConfigError, match="the init pre-step must come before iteration 0"):
        h.set_init({})


# ------------------------------------------------------------------ the pre-step


class SteeringPolicy:
    """Deterministic stand-in: always moves light.intensity (centre from the conditions' mean
    brightness), so params_0 of a warm loop visibly differs from uniform; records its inputs."""

    name = "steering"

    def __init__(self, seen: list[dict[str, Any]]) -> None:
        self.seen = seen

    def propose(self, inputs: Any) -> Decision:
        rows = 0 if inputs.conditions is None else len(inputs.conditions)
        self.seen.append({"report": inputs.reports[0], "rows": rows, "current": inputs.current.to_dict()})
        mean = float(inputs.conditions["stat.brightness"].mean()) if rows else 128.0
        centre = round(0.3 + 7.7 * float(np.clip(mean / 255.0, 0, 1)), 6)
        params = GenerationParams(scenario="digits", uniform_share=0.25, distributions={
            "light.intensity": Distribution(kind="truncnormal", center=centre, width=1.0)})
        return Decision(policy=self.name, scenario="digits", params=params.to_dict(), uniform_share=[0.0, 0.25])


@pytest.mark.slow
def test_warm_loop_evaluates_first_and_continues_from_the_init_model(
        tmp_path: Path, real: Path, init_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(loop, "make_loop_policy", lambda cfg: SteeringPolicy(seen))
    real_render = loop.render_step
    cfg = tiny(tmp_path / "w", real, init_model=str(init_model))
    at_first_render: list[bool] = []

    def spy(c: LoopConfig, k: int, params: GenerationParams, part: int = 0) -> loop.RenderStep:
        if not at_first_render:
            at_first_render.append((cfg.work / "init/report/report.json").is_file()
                                   and (cfg.work / "init/decision.json").is_file())
        return real_render(c, k, params, part)

    monkeypatch.setattr(loop, "render_step", spy)
    driver.run_loop(cfg)
    assert at_first_render == [True]  # evaluated and decided before anything was rendered
    data = json.loads((cfg.work / "history.json").read_text())
    init = data["init"]
    assert init["model"] == str(init_model.resolve()) and init["weights_sha256"] == weights_sha(init_model)
    assert init["evaluate"]["path"] == "init/report" and init["evaluate"]["split"] == "real-val"
    assert init["decision"]["path"] == "init/decision.json" and init["decision"]["policy"] == "steering"
    report = json.loads((cfg.work / "init/report/report.json").read_text())
    assert report["data"]["split"] == "real-val" and not report["final_report"]
    assert init["evaluate"]["map50"] == report["overall"]["map50"]
    # the policy's first input is the init report, with the init model's training conditions
    assert seen[0]["report"] == report and seen[0]["rows"] > 0 and seen[0]["current"] == UNIFORM
    assert init["conditions_from"] == [str((init_model.parent / "shard-0").resolve())]
    params0 = yaml.safe_load((cfg.work / "iter_0/params.yaml").read_text())
    assert params0 == json.loads((cfg.work / "init/decision.json").read_text())["params"] != UNIFORM
    e0, e1 = data["iterations"]
    assert e0["train"]["init"] == str(init_model.resolve()) and e1["train"]["init"] == "iter_0/model"
    m0 = json.loads((cfg.work / "iter_0/model/model.json").read_text())
    assert m0["init"] == {"path": str(init_model.resolve()), "weights_sha256": weights_sha(init_model),
                          "fingerprint": json.loads((init_model / "model.json").read_text())["fingerprint"]}
    assert len(seen) == 3 and seen[1]["report"]["data"]["split"] == "real-val"
    cold = json.loads((init_model.parent.parent / "history.json").read_text())
    assert "init" not in cold and cold["config"]["init_model"] is None  # a cold loop: as before


@pytest.mark.slow
def test_without_its_training_shards_the_init_model_gets_a_probe_shard(
        tmp_path: Path, real: Path, init_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.loop import warm_start
    from generator.shard import Shard

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(loop, "make_loop_policy", lambda cfg: SteeringPolicy(seen))
    data = json.loads((init_model / "model.json").read_text())["data"]
    model = _copy_model(init_model, tmp_path / "m", data=[{**d, "path": str(tmp_path / "gone")} for d in data])
    cfg = tiny(tmp_path / "w", real, iterations=1, init_model=str(model))
    driver.run_loop(cfg)
    history = json.loads((cfg.work / "history.json").read_text())
    assert history["init"]["conditions_from"] == ["init/probe"]
    probe = Shard(cfg.work / "init/probe")
    assert probe.fingerprint == warm_start.probe_job(cfg).fingerprint() and len(probe.coco["images"]) == 4
    assert seen[0]["rows"] == len(probe.conditions()) > 0
    assert history["iterations"][0]["train"]["data"] == ["iter_0/shard-0:1.0"]  # the probe is not trained on
    assert yaml.safe_load((cfg.work / "iter_0/params.yaml").read_text()) != UNIFORM


KILL = r"""
import json, os, signal, sys
from flows.loop import run as driver
from flows.loop import state
from flows.loop import steps as loop
from flows.loop import warm_start
from flows.loop.state import LoopConfig

cfg, point = LoopConfig(**json.loads(sys.argv[1])), sys.argv[2]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "evaluated":      # init/report written, no decision yet
    warm_start.decide_init = die
elif point == "decided":      # init/decision.json (and its Optuna trial) written, history.json not yet
    warm_start.init_record = die
elif point == "rendered":     # pre-step recorded, iteration 0's shard rendered, not trained
    loop.train_step = die
driver.run_loop(cfg, on_iteration=die if point == "iteration-0" else None)
"""


def _comparable(work: Path) -> dict[str, Any]:
    data = json.loads((work / "history.json").read_text())
    strip = lambda v: json.loads(json.dumps(without_timings(v)).replace(str(work), "WORK"))  # noqa: E731
    init = strip(data["init"])
    init["decision"].pop("replayed")  # a resumed pre-step replays the Optuna proposal it made
    return {"init": init, "iterations": [strip(e) for e in data["iterations"]]}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["evaluated", "decided", "rendered", "iteration-0"])
def test_sigkill_in_the_pre_step_or_iteration_0_resumes_to_the_same_history(
        tmp_path: Path, warm: LoopConfig, point: str) -> None:
    cfg = LoopConfig(**{**asdict(warm), "workdir": str(tmp_path / "w")})
    proc = subprocess.run([sys.executable, "-c", KILL, json.dumps(asdict(cfg)), point], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = json.loads((cfg.work / "history.json").read_text()) if (cfg.work / "history.json").is_file() else {}
    assert ("init" in left) == (point in ("rendered", "iteration-0"))
    assert len(left.get("iterations", [])) == (1 if point == "iteration-0" else 0)
    driver.run_loop(cfg)
    assert _comparable(cfg.work) == _comparable(warm.work)
    for k in (0, 1):
        assert (cfg.iter_dir(k) / "params.yaml").read_text() == (warm.iter_dir(k) / "params.yaml").read_text()
        assert weights_sha(cfg.iter_dir(k) / "model") == weights_sha(warm.iter_dir(k) / "model")
    assert not list(cfg.work.rglob(".tmp-*"))


# ------------------------------------------------------------------ MLflow lineage and the Prefect flow


@pytest.mark.slow
def test_init_run_is_the_champion_bar_and_lineage_walks_back_to_it(tmp_path: Path, warm: LoopConfig,
                                                                   init_model: Path) -> None:
    from flows.tracking.iteration import log_iteration
    from flows.tracking.lineage import format_lineage, lineage
    from flows.tracking.model import log_model
    from flows.tracking.runs import Tracking, client, close_run, open_iteration_run, open_loop_run, sqlite_uri
    from flows.tracking.warm_start import log_init_input, track_init

    data = json.loads((warm.work / "history.json").read_text())
    init = {**data["init"], "evaluate": {**data["init"]["evaluate"], "map50": 0.6}}  # planted: the bar
    t = Tracking(sqlite_uri(tmp_path / "mlflow.db"), "warm-test", "synthloop-warm-test")
    parent = open_loop_run(t, "warm", data["config"])
    init_run = track_init(t, parent, warm.work, init)
    assert track_init(t, parent, warm.work, init) == init_run  # found again, nothing logged twice
    runs, champions, previous = [], [], init_run
    for rec, metric in zip(data["iterations"], (0.5, 0.7), strict=True):  # planted: below the bar, above it
        run_id, _ = open_iteration_run(t, parent, rec["iteration"], previous)
        for _ in range(2 if rec["iteration"] == 0 else 0):
            log_init_input(t, run_id, init_run, init)
        log_iteration(t, run_id, parent, warm.work, rec, data["config"])
        champions.append(log_model(t, run_id, warm.work / rec["train"]["path"], rec["iteration"], metric)["champion"])
        close_run(t, run_id)
        runs.append(run_id)
        previous = run_id
    c = client(t.uri)
    run = c.get_run(init_run)
    assert run.data.tags["synthloop.kind"] == "init" and run.data.tags["synthloop.iteration"] == "-1"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.info.status == "FINISHED"
    assert run.data.params["init.weights_sha256"] == weights_sha(init_model)
    assert run.data.params["init.path"] == str(init_model.resolve())
    assert [(m.step, m.value) for m in c.get_metric_history(init_run, "real_val_map50")] == \
        [(-1, data["init"]["evaluate"]["map50"])]
    assert sorted(m.step for m in c.get_metric_history(parent, "real_val_map50")) == [-1, 0, 1]
    arts = {f.path for d in (None, "report") for f in c.list_artifacts(init_run, d)}
    assert {"report/report.json", "report/report.md", "decision.json"} <= arts
    versions = sorted(c.search_model_versions(f"name = '{t.model_name}'"), key=lambda v: int(v.version))
    assert [(v.run_id, v.tags["synthloop.iteration"]) for v in versions] == \
        [(init_run, "-1"), (runs[0], "0"), (runs[1], "1")]
    assert champions == [False, True]  # 0.5 does not beat the init model's 0.6; 0.7 does
    assert c.get_model_version_by_alias(t.model_name, "champion").version == versions[2].version
    it0 = c.get_run(runs[0])
    assert it0.data.tags["synthloop.previous_run_id"] == init_run == it0.data.tags["synthloop.init_run_id"]
    assert it0.data.params["init.weights_sha256"] == weights_sha(init_model)
    assert it0.data.params["train.init"] == str(init_model.resolve())
    assert it0.data.params["gen.trial_source"] == (data["init"]["decision"]["trial_source"] or "init model's decision")
    assert [m.model_id for m in it0.inputs.model_inputs] == [versions[0].tags["synthloop.model_id"]]
    chain = lineage(t.uri, f"models:/{t.model_name}@champion")
    assert [e["iteration"] for e in chain] == [1, 0, -1] and chain[-1]["run_id"] == init_run
    assert chain[1]["driven_by"] == chain[2]["report"] and chain[1]["previous_model"]["version"] == "1"
    assert chain[-1]["init"] == {"path": str(init_model.resolve()), "weights_sha256": weights_sha(init_model)}
    text = format_lineage(chain)
    assert f"init model  run {init_run}" in text and "← failure report of the init model: file://" in text
    assert f"checkpoint       {init_model.resolve()} (weights sha256 {weights_sha(init_model)})" in text


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: str(home)}), prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_flow_runs_the_pre_step_as_tasks_and_tracks_it_once(prefect: None, tmp_path: Path, real: Path,
                                                            init_model: Path) -> None:
    # no capsys here: Prefect's console log handler would keep its stream, closed after the test
    from mlflow import MlflowClient

    from flows.commands.run import print_table, verdict
    from flows.orchestration.closed_loop import closed_loop
    from flows.orchestration.settings import LoopSettings

    data = json.loads((init_model / "model.json").read_text())["data"]  # its shard gone: the flow renders a probe
    model = _copy_model(init_model, tmp_path / "m", data=[{**d, "path": str(tmp_path / "gone")} for d in data])
    s = LoopSettings.build({**asdict(tiny(tmp_path / "loop", real, iterations=1, init_model=str(model))),
                            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "warm-flow",
                            "model_name": "warm-flow"})
    rows = closed_loop(s)
    assert [r["iteration"] for r in rows] == ["init", 0]  # the init model first: the bar of the final table
    init_map50 = json.loads((Path(s.workdir) / "history.json").read_text())["init"]["evaluate"]["map50"]
    assert rows[0]["real_val_map50"] == init_map50
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_table(rows)
    assert "| init | 0 |" in out.getvalue()
    assert "(the init model)" in verdict([rows[0], {**rows[1], "real_val_map50": 2.0}])
    assert "did NOT improve: 1.000 at the init model" in verdict([{**rows[0], "real_val_map50": 1.0}, rows[1]])
    work = Path(s.workdir)
    history = json.loads((work / "history.json").read_text())
    assert history["init"]["weights_sha256"] == weights_sha(init_model)
    assert history["init"]["conditions_from"] == ["init/probe"] and (work / "init/probe/manifest.json").is_file()
    assert (work / "init/report/report.json").is_file() and (work / "init/decision.json").is_file()
    assert yaml.safe_load((work / "iter_0/params.yaml").read_text()) == \
        json.loads((work / "init/decision.json").read_text())["params"]
    c = MlflowClient(tracking_uri=s.tracking_uri)
    exp = c.get_experiment_by_name("warm-flow")

    def state() -> tuple[list[tuple[str, str | None, str | None]], list[tuple[str, str]]]:
        runs = sorted((r.info.run_id, r.data.tags.get("synthloop.kind"), r.data.tags.get("synthloop.previous_run_id"))
                      for r in c.search_runs([exp.experiment_id]))
        return runs, sorted((str(v.version), str(v.run_id)) for v in c.search_model_versions("name='warm-flow'"))

    before = state()
    kinds = {kind: (run_id, prev) for run_id, kind, prev in before[0]}
    assert set(kinds) == {"loop", "init", "iteration"} and kinds["iteration"][1] == kinds["init"][0]
    assert [run for _, run in before[1]] == [kinds["init"][0], kinds["iteration"][0]]  # init model, then iter 0
    closed_loop(s)  # a second run: nothing to do, nothing logged twice
    assert state() == before


FLOW_KILL = r"""
import json, os, signal, sys
from flows.tracking import warm_start as tracking_init
from flows.orchestration.closed_loop import closed_loop
from flows.orchestration.settings import LoopSettings

def die(*a, **k):
    os.killpg(0, signal.SIGKILL)  # the flow and its temporary Prefect server, like a machine loss

tracking_init.log_model = die  # killed inside track-init: the init run exists, RUNNING, no model version
closed_loop(LoopSettings.build(json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_flow_killed_in_the_pre_step_resumes_to_the_library_loops_history(
        prefect: None, tmp_path: Path, warm: LoopConfig, init_model: Path) -> None:
    from mlflow import MlflowClient

    from flows.orchestration.closed_loop import closed_loop
    from flows.orchestration.settings import LoopSettings

    settings = {**asdict(warm), "workdir": str(tmp_path / "loop"), "experiment": "warm-kill", "model_name": "warm-kill",
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", FLOW_KILL, json.dumps(settings)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, start_new_session=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    c = MlflowClient(tracking_uri=settings["tracking_uri"])
    exp = c.get_experiment_by_name("warm-kill")
    killed = {r.data.tags.get("synthloop.kind"): r.info.status for r in c.search_runs([exp.experiment_id])}
    assert killed == {"loop": "RUNNING", "init": "RUNNING"} and not c.search_model_versions("name='warm-kill'")
    closed_loop(LoopSettings.build(settings))
    assert _comparable(Path(settings["workdir"])) == _comparable(warm.work)  # the flow computes what the library does
    runs = c.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("synthloop.kind") != "loop"]
    assert sorted(str(r.data.tags.get("synthloop.iteration")) for r in children) == ["-1", "0", "1"]
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    versions = sorted(c.search_model_versions("name='warm-kill'"), key=lambda v: int(v.version))
    assert [v.tags["synthloop.iteration"] for v in versions] == ["-1", "0", "1"]


def test_run_plan_counts_the_pre_step_until_it_is_done(tmp_path: Path, real: Path) -> None:
    from flows.loop.plan import plan_run

    cold = plan_run(tiny(tmp_path / "w", real), cores=2, load=0.0)
    cfg = tiny(tmp_path / "w", real, init_model=str(tmp_path / "m"))
    warm = plan_run(cfg, cores=2, load=0.0)
    assert warm.warm and not cold.warm and warm.seconds > cold.seconds
    assert "; evaluates the init model on real-val first (warm start)" in warm.lines()[0]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt").write_bytes(b"w")
    LoopHistory.open(cfg).set_init({"model": str(tmp_path / "m"), "weights_sha256": "0"})
    assert not plan_run(cfg, cores=2, load=0.0).warm  # a resume does not redo it


@pytest.mark.parametrize("content, message", [
    (None, r"is not a usable params file of scenario 'digits' \("),
    ("scenario: other\n", r"is not a usable params file of scenario 'digits' \(.*other"),
    ("[1, 2\n", r"is not a usable params file"),
])
def test_a_bad_policy_base_is_one_line_before_anything_is_written(tmp_path: Path, real: Path, content: str | None,
                                                                  message: str) -> None:
    base = tmp_path / "base.yaml"
    if content is not None:
        base.write_text(content)
    work = tmp_path / "w"
    with pytest.raises(ConfigError, match=rf"^loop\.policy_base: .*{message}") as exc:
        driver.run_loop(tiny(work, real, policy="mixture", policy_base=str(base)))
    assert "\n" not in str(exc.value) and not work.exists()
    base.write_text(yaml.safe_dump(UNIFORM))
    tiny(work, real, policy="mixture", policy_base=str(base)).validate()  # a usable base passes
