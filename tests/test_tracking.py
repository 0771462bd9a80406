"""MLflow lineage of the loop (flows/tracking/: runs, iteration, model, artifacts).

A tiny fake-renderer loop (2 iterations, 64² images, 2 training steps) is built once per
session and logged into a temporary sqlite store the way the Prefect flow will: parent run,
one child per iteration, log_iteration, log_model (planted metrics), close_run.
:func:`tracked` caches it so test_lineage.py reuses the same store.
"""

from __future__ import annotations

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tinyloop import tiny_config

from generator.errors import ConfigError

SMALL = {"real-train": 20, "real-val": 30, "real-test": 20}
LOOP_ID = "digits-test"
METRICS = (0.3, 0.5)  # planted real-val metrics passed to log_model: iteration 1 improves


@dataclass
class Tracked:
    work: Path
    history: dict[str, Any]
    t: Any  # flows.tracking.runs.Tracking
    parent: str
    runs: list[str]
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self.history["iterations"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.history["config"])


_CACHE: dict[str, Tracked] = {}


def log_loop(t: Any, work: Path, history: dict[str, Any], metrics: tuple[float | None, ...],
             flow_run_id: str = "flow-1") -> Tracked:
    """What the flow does after each iteration."""
    from flows.tracking.iteration import log_iteration
    from flows.tracking.model import log_model
    from flows.tracking.runs import close_run, open_iteration_run, open_loop_run

    parent = open_loop_run(t, LOOP_ID, history["config"], flow_run_id)
    out = Tracked(work, history, t, parent, [])
    previous = None
    for record, metric in zip(history["iterations"], metrics, strict=True):
        k = record["iteration"]
        run_id, done = open_iteration_run(t, parent, k, previous, flow_run_id)
        assert not done
        log_iteration(t, run_id, parent, work, record, history["config"])
        out.models.append(log_model(t, run_id, work / record["train"]["path"], k, metric))
        close_run(t, run_id)
        out.runs.append(run_id)
        previous = run_id
    return out


def tracked(base: Path) -> Tracked:
    """The session's tracked tiny loop (built on first use)."""
    if "loop" not in _CACHE:
        from flows.loop.run import run_loop
        from flows.tracking.runs import Tracking, default_tracking_uri
        from generator.real.build import build_real_set

        real, work = base / "real", base / "work"
        build_real_set(real, seed=0, sizes=SMALL)
        run_loop(tiny_config(work, real, render_shards=2))
        history = json.loads((work / "history.json").read_text())
        t = Tracking.for_loop(default_tracking_uri(base / "store"), "loop-test", "digits")
        _CACHE["loop"] = log_loop(t, work, history, METRICS)
    return _CACHE["loop"]


@pytest.fixture(scope="session")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    return tracked(tmp_path_factory.getbasetemp() / "tracked-loop")


def snapshot(c: Any, run_id: str) -> dict[str, Any]:
    run = c.get_run(run_id)
    return {"inputs": sorted((d.dataset.name, d.dataset.digest, [(t.key, t.value) for t in d.tags])
                             for d in inputs(c, run_id)),
            "artifacts": sorted(f.path for d in (None, "report", "images") for f in c.list_artifacts(run_id, d)),
            "params": run.data.params,
            "metrics": {k: [(m.step, m.value) for m in c.get_metric_history(run_id, k)] for k in run.data.metrics}}


def inputs(c: Any, run_id: str) -> list[Any]:
    run = c.get_run(run_id)
    return list(run.inputs.dataset_inputs) if run.inputs else []


def experiment_runs(c: Any, t: Any) -> list[Any]:
    return list(c.search_runs([c.get_experiment_by_name(t.experiment).experiment_id]))


# ------------------------------------------------------------------ structure


@pytest.mark.slow
def test_parent_and_children_are_nested_and_tagged(loop: Tracked) -> None:
    from flows.tracking.runs import client, iteration_runs

    c = client(loop.t.uri)
    parent = c.get_run(loop.parent)
    assert parent.data.tags["synthloop.loop_id"] == LOOP_ID and parent.data.tags["synthloop.kind"] == "loop"
    assert parent.data.params["seed"] == "0" and parent.data.params["policy"] == "optuna"
    assert "workdir" not in parent.data.params  # a resume may move it: a tag, not a param
    assert parent.data.tags["synthloop.config.workdir"] == str(loop.work)
    assert iteration_runs(loop.t, loop.parent) == dict(enumerate(loop.runs))
    for k, run_id in enumerate(loop.runs):
        tags = c.get_run(run_id).data.tags
        assert tags["mlflow.parentRunId"] == loop.parent and tags["synthloop.iteration"] == str(k)
        assert tags["prefect.flow_run_id"] == "flow-1" and c.get_run(run_id).info.status == "FINISHED"
        assert tags.get("synthloop.previous_run_id") == (loop.runs[k - 1] if k else None)
    assert len(experiment_runs(c, loop.t)) == 1 + len(loop.runs)


@pytest.mark.slow
def test_datasets_carry_fingerprints_as_digests_and_shard_paths_as_sources(loop: Tracked) -> None:
    from flows.tracking.runs import client
    from generator.shard import Shard

    found = inputs(client(loop.t.uri), loop.runs[1])
    got = {(d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"]):
           (d.dataset.digest, json.loads(d.dataset.source)["uri"]) for d in found}
    shards = [s["path"] for rec in loop.records for s in rec["render"]["shards"]]
    assert len(shards) == 4  # LoopConfig's default: 2 shards per iteration
    want = {(p, "training"): loop.work / p for p in shards}
    want[("real-val", "validation")] = loop.work.parent / "real" / "real-val"
    assert set(got) == set(want)
    for key, path in want.items():
        assert got[key] == (Shard(path).fingerprint, str(path.resolve()))
    new = {d.dataset.name for d in found if any(t.key == "synthloop.new" and t.value == "true"
                                                                    for t in d.tags)}
    assert new == {s["path"] for s in loop.records[1]["render"]["shards"]} == {"iter_1/shard-0", "iter_1/shard-1"}


@pytest.mark.slow
def test_metrics_on_child_and_one_point_per_iteration_on_parent(loop: Tracked) -> None:
    from flows.tracking.runs import client

    c = client(loop.t.uri)
    child = c.get_run(loop.runs[1]).data.metrics
    rec = loop.records[1]
    assert child["images_rendered"] == rec["images_rendered"] == 8
    assert child["real_val_map50"] == rec["evaluate"]["map50"]
    assert child["train_final_loss"] == pytest.approx(rec["train"]["final_loss"])
    report = json.loads((loop.work / rec["evaluate"]["path"] / "report.json").read_text())
    s = report["slices"][0]
    assert child[f"slice.{s['condition']}.{s['bin']}.recall"] == s["recall"]
    assert all(m.step == 1 for m in c.get_metric_history(loop.runs[1], "real_val_map50"))
    for key in ("real_val_map50", "real_val_recall", "images_rendered"):
        points = c.get_metric_history(loop.parent, key)
        assert sorted(m.step for m in points) == [0, 1], key
    assert [m.value for m in sorted(c.get_metric_history(loop.parent, "images_rendered"), key=lambda m: m.step)] \
        == [4, 8]


@pytest.mark.slow
def test_artifacts_report_params_decision_table_and_images(loop: Tracked) -> None:
    from flows.tracking.runs import client

    c = client(loop.t.uri)
    arts = snapshot(c, loop.runs[1])["artifacts"]
    for name in ("report/report.json", "report/report.md", "report/slices.csv", "report/gallery.png",
                 "report/slices_table.json", "params.yaml", "decision.json", "param_evolution.png"):
        assert name in arts
    for key in ("gallery", "shard_samples"):
        assert any(a.startswith(f"images/{key}+step+1+") and a.endswith(".png") for a in arts), key
    parent = snapshot(c, loop.parent)["artifacts"]
    assert sorted(a.split("+")[2] for a in parent if a.startswith("images/param_evolution+") and a.endswith(".png")) \
        == ["0", "1"]
    table = json.loads(Path(c.download_artifacts(loop.runs[1], "report/slices_table.json", str(loop.work.parent)))
                       .read_text())
    assert len(table["data"]) == len(json.loads((loop.work / "iter_1/report/report.json").read_text())["slices"])


# ------------------------------------------------------------------ resume


@pytest.mark.slow
def test_resume_creates_no_second_run_version_input_artifact_or_point(loop: Tracked) -> None:
    from flows.tracking.iteration import log_iteration
    from flows.tracking.model import log_model
    from flows.tracking.runs import client, close_run, open_iteration_run, open_loop_run

    c = client(loop.t.uri)
    before = {r: snapshot(c, r) for r in (loop.parent, *loop.runs)}
    config = {**loop.config, "iterations": 5}  # a resumable setting may change
    assert open_loop_run(loop.t, LOOP_ID, config, "flow-2") == loop.parent
    assert open_iteration_run(loop.t, loop.parent, 0, None, "flow-2") == (loop.runs[0], True)
    c.update_run(loop.runs[1], status="RUNNING")  # the process was killed while logging iteration 1
    assert open_iteration_run(loop.t, loop.parent, 1, loop.runs[0], "flow-2") == (loop.runs[1], False)
    for _ in range(2):
        log_iteration(loop.t, loop.runs[1], loop.parent, loop.work, loop.records[1], config)
        again = log_model(loop.t, loop.runs[1], loop.work / "iter_1/model", 1, METRICS[1])
    close_run(loop.t, loop.runs[1])
    assert again == loop.models[1]
    assert {r: snapshot(c, r) for r in (loop.parent, *loop.runs)} == before
    assert len(experiment_runs(c, loop.t)) == 3
    assert len(c.search_model_versions(f"name = '{loop.t.model_name}'")) == 2
    assert c.get_run(loop.runs[1]).data.tags["prefect.flow_run_id"] == "flow-2"
    assert c.get_run(loop.parent).data.tags["synthloop.config.iterations"] == "5"


@pytest.mark.slow
def test_resume_with_a_different_loop_setting_is_one_line_error(loop: Tracked) -> None:
    from flows.tracking.runs import open_loop_run

    with pytest.raises(ConfigError) as exc:
        open_loop_run(loop.t, LOOP_ID, {**loop.config, "seed": 1})
    msg = str(exc.value)
    assert "seed='0'" in msg and "'1'" in msg and "\n" not in msg


# ------------------------------------------------------------------ models


@pytest.mark.slow
def test_loop_models_are_versions_and_champion_follows_improvement(loop: Tracked) -> None:
    from flows.tracking.runs import client

    c = client(loop.t.uri)
    assert [m["version"] for m in loop.models] == ["1", "2"]
    assert [m["champion"] for m in loop.models] == [True, True]  # 0.3, then 0.5 > 0.3
    champion = c.get_model_version_by_alias(loop.t.model_name, "champion")
    assert str(champion.version) == "2" and champion.run_id == loop.runs[1]
    assert champion.tags["synthloop.iteration"] == "1" and float(champion.tags["synthloop.metric"]) == 0.5
    model = c.get_logged_model(loop.models[1]["model_id"])
    assert model.source_run_id == loop.runs[1] and str(model.status).endswith("READY")


@pytest.mark.slow
def test_champion_moves_only_on_a_strict_improvement(loop: Tracked, tmp_path: Path) -> None:
    from flows.tracking.model import log_model
    from flows.tracking.runs import Tracking, client, close_run, open_iteration_run, open_loop_run

    t = Tracking(loop.t.uri, "champion-test", "synthloop-champion-test")
    parent = open_loop_run(t, "champion", {"seed": 0})
    got = []
    for k, metric in enumerate((0.5, 0.3, math.nan, None, 0.5, 0.7)):  # planted: worse, NaN, none, equal, better
        run_id, _ = open_iteration_run(t, parent, k, None)
        info = log_model(t, run_id, loop.work / "iter_0/model", k, metric)
        close_run(t, run_id)
        got.append((info["version"], info["champion"]))
        champion = str(client(t.uri).get_model_version_by_alias(t.model_name, "champion").version)
        assert champion == ("6" if k == 5 else "1"), (k, metric)
    assert got == [("1", True), ("2", False), ("3", False), ("4", False), ("5", False), ("6", True)]


@pytest.mark.slow
def test_logged_model_loads_as_pyfunc_and_predicts(loop: Tracked) -> None:
    import mlflow.pyfunc
    import numpy as np

    from flows.tracking.runs import client

    mv = client(loop.t.uri).get_model_version(loop.t.model_name, "1")
    model = mlflow.pyfunc.load_model(mv.source)
    out = model.predict([np.zeros((64, 64, 3), np.uint8), np.full((40, 50, 3), 200, np.uint8)])
    assert isinstance(out, list) and len(out) == 2
    local = Path(str(mv.source).removeprefix("file://"))
    reqs = (local / "requirements.txt").read_text()
    assert "torch==" in reqs and "mlflow==" in reqs
    assert "loader_module: flows.tracking.model" in (local / "MLmodel").read_text()


@pytest.mark.slow
def test_a_version_registered_under_the_old_loader_module_still_loads(loop: Tracked, tmp_path: Path) -> None:
    """Versions registered before flows/ got its wings name ``flows.tracking_model`` in MLmodel."""
    import mlflow.pyfunc
    import numpy as np

    from flows.tracking.runs import client

    mv = client(loop.t.uri).get_model_version(loop.t.model_name, "1")
    old = tmp_path / "old-version"
    shutil.copytree(Path(str(mv.source).removeprefix("file://")), old)
    mlmodel = old / "MLmodel"
    text = mlmodel.read_text()
    assert "loader_module: flows.tracking.model" in text
    mlmodel.write_text(text.replace("loader_module: flows.tracking.model", "loader_module: flows.tracking_model"))
    out = mlflow.pyfunc.load_model(str(old)).predict([np.zeros((64, 64, 3), np.uint8)])
    assert isinstance(out, list) and len(out) == 1


# ------------------------------------------------------------------ threads, global state


@pytest.mark.slow
def test_logging_from_a_worker_thread_makes_no_stray_run_nor_global_state(loop: Tracked, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from flows.tracking.iteration import log_iteration
    from flows.tracking.model import log_model
    from flows.tracking.runs import Tracking, client, open_iteration_run, open_loop_run

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    sentinel = tmp_path / "global.db"  # what MlflowClient() without a URI would open
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{sentinel}")
    global_uri = mlflow.get_tracking_uri()
    t = Tracking(loop.t.uri, "threads", "synthloop-threads")
    parent = open_loop_run(t, "threads", loop.config)
    run_id, _ = open_iteration_run(t, parent, 0, None)
    record = loop.records[0]

    def work() -> dict[str, Any]:
        log_iteration(t, run_id, parent, loop.work, record, loop.config)
        return log_model(t, run_id, loop.work / "iter_0/model", 0, 0.1)

    with ThreadPoolExecutor(max_workers=2) as pool:
        info = pool.submit(work).result()
    c = client(t.uri)
    assert {r.info.run_id for r in experiment_runs(c, t)} == {parent, run_id}
    assert list(c.search_runs(["0"])) == []  # nothing in the Default experiment
    assert mlflow.active_run() is None and mlflow.get_tracking_uri() == global_uri
    assert list(cwd.iterdir()) == [] and not sentinel.exists()  # no ./mlruns, ./mlartifacts, global store
    assert info["version"] == "1" and info["champion"]
    assert len(inputs(c, run_id)) == len(record["render"]["shards"]) + 1


# ------------------------------------------------------------------ pure helpers


def test_dataset_items_cover_mixed_real_train_and_production(tmp_path: Path) -> None:
    from flows.tracking.iteration import dataset_items

    work = tmp_path / "w"
    record = {"render": {"shards": [{"path": "iter_1/shard-0"}]},
              "train": {"data": ["iter_0/shard-0:1.0", "iter_1/shard-0:2.0", f"{tmp_path}/real/real-train:1.0"]}}
    items = dataset_items(work, record, {"real_dir": str(tmp_path / "real"), "strategy": "mixed"},
                          production=tmp_path / "prod")
    got = [(str(p), ctx, tags.get("synthloop.new"), tags.get("synthloop.weight")) for p, ctx, tags in items]
    assert got == [(str(work / "iter_0/shard-0"), "training", "false", "1.0"),
                   (str(work / "iter_1/shard-0"), "training", "true", "2.0"),
                   (str(tmp_path / "real/real-train"), "training", "false", "1.0"),
                   (str(tmp_path / "real/real-val"), "validation", None, None),
                   (str(tmp_path / "prod"), "production", None, None)]


def test_flatten_is_deterministic_and_capped() -> None:
    from flows.tracking.runs import MAX_PARAM_CHARS, flatten

    flat = flatten({"a": {"kind": "categorical", "weights": {"y": 2, "x": 1}}, "b": None, "c": "x" * 7000, "d": 0.5})
    assert flat == {"a.kind": "categorical", "a.weights": '{"x": 1, "y": 2}', "b": "null",
                    "c": "x" * (MAX_PARAM_CHARS - 1) + "…", "d": "0.5"}


def test_param_evolution_series_and_panels() -> None:
    from flows.tracking.artifacts import choice_weights, evolution_image, moved_parameters, numeric_summary

    history: list[tuple[str, dict[str, Any]]] = [
        ("0", {"scenario": "digits"}),
        ("1", {"scenario": "digits", "uniform_share": 0.3,
               "distributions": {"camera.distance": {"kind": "truncnormal", "center": 8.0, "width": 1.5}}}),
        ("2?", {"scenario": "digits", "uniform_share": 0.3,
                "distributions": {"digit.font": {"kind": "categorical", "weights": {"stix": 3, "cm-sans": 1}}}})]
    assert moved_parameters(history) == ["uniform_share", "camera.distance", "digit.font"]
    assert moved_parameters(history[:1]) == []
    assert numeric_summary(3.0, 10.0, None) == pytest.approx((6.5, 7 / math.sqrt(12)))
    assert numeric_summary(3.0, 10.0, {"kind": "truncnormal", "center": 8.0, "width": 1.5}) == (8.0, 1.5)
    assert numeric_summary(3.0, 10.0, {"kind": "fixed", "value": 4}) == (4.0, 0.0)
    assert choice_weights(["a", "b"], {"kind": "categorical", "weights": {"a": 3}}) == {"a": 1.0, "b": 0.0}
    assert choice_weights(["a", "b"], None) == {"a": 0.5, "b": 0.5}
    assert evolution_image(history, "digits").height > 2 * evolution_image(history[:1], "digits").height


def test_bad_tracking_inputs_are_one_line_errors() -> None:
    from flows.tracking.runs import Tracking, close_run

    with pytest.raises(ConfigError, match=r"^tracking.experiment: must be a non-empty string"):
        Tracking("sqlite:////tmp/x.db", "", "m")
    with pytest.raises(ConfigError, match=r"^close_run.status: must be one of"):
        close_run(Tracking("sqlite:////nonexistent/x.db", "e", "m"), "0" * 32, "DONE")


@pytest.mark.slow
def test_same_calls_work_against_an_mlflow_server(loop: Tracked, mlflow_api: str) -> None:
    from flows.tracking.iteration import log_iteration
    from flows.tracking.lineage import lineage
    from flows.tracking.model import log_model
    from flows.tracking.runs import Tracking, client, open_iteration_run, open_loop_run, run_link

    t = Tracking(mlflow_api, "synthloop/server-test", "synthloop-server-test")
    parent = open_loop_run(t, "server/test", loop.config)
    run_id, _ = open_iteration_run(t, parent, 0, None)
    for _ in range(2):
        log_iteration(t, run_id, parent, loop.work, loop.records[0], loop.config)
        info = log_model(t, run_id, loop.work / "iter_0/model", 0, 0.2)
    c = client(t.uri)
    assert info["version"] == "1" and info["champion"]
    assert len(c.search_model_versions(f"name = '{t.model_name}'")) == 1
    digests = {d.dataset.name: d.dataset.digest for d in inputs(c, run_id)}
    assert digests["iter_0/shard-0"] == loop.records[0]["render"]["shards"][0]["fingerprint"]
    assert [e["run_id"] for e in lineage(t.uri, f"models:/{t.model_name}@champion")] == [run_id]
    assert run_link(t, run_id) == f"{mlflow_api}/#/experiments/{c.get_run(run_id).info.experiment_id}/runs/{run_id}"


# ------------------------------------------------------------------ concurrent first use (issue #15)


def _race_first_use(db_dir: str, rounds: int, barrier: Any, worker: int) -> None:
    """One of several processes: per round, wait for the others, then open the same fresh
    sqlite store and create the experiment and a run (spawned: module-level)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    from flows.tracking.runs import Tracking, client, experiment_id, sqlite_uri

    for r in range(rounds):
        t = Tracking(sqlite_uri(Path(db_dir) / f"round{r}.db"), "race", "race-model")
        barrier.wait(timeout=30)  # a crashed worker breaks it: the others fail fast
        client(t.uri).create_run(experiment_id(t), run_name=f"worker {worker}")


def test_concurrent_first_use_of_a_sqlite_store_creates_it_once(tmp_path: Path) -> None:
    """Loops (or a loop and a monitor) started at once in an empty directory: every process
    opens the new store and logs, none crashes on `table ... already exists` or a half-done
    migration, and there is one experiment."""
    import multiprocessing as mp

    from mlflow import MlflowClient

    n, rounds = 3, 3
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_race_first_use, args=(str(tmp_path), rounds, barrier, i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=50)
    assert [p.exitcode for p in procs] == [0] * n
    for r in range(rounds):
        c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / f'round{r}.db'}")
        exps = [e for e in c.search_experiments() if e.name == "race"]
        assert len(exps) == 1
        assert len(c.search_runs([exps[0].experiment_id])) == n


# ------------------------------------------------------------------ a loop's identity (issue #15)


def _loop_config(work: Path, seed: int = 0) -> dict[str, Any]:
    return {"workdir": str(work), "scenario": "digits", "seed": seed, "iterations": 2, "policy": "optuna"}


def test_a_second_workdir_with_the_same_settings_is_a_second_loop_in_mlflow(tmp_path: Path) -> None:
    """Two work directories, same settings (so the same loop id and experiment): two parent
    runs, each keeping its own work directory; each resumes its own; a moved work directory
    (same history.json identity) is still its loop."""
    from flows.loop.state import LoopConfig, LoopHistory
    from flows.tracking.runs import Tracking, client, close_run, default_tracking_uri, open_loop_run

    t = Tracking.for_loop(default_tracking_uri(tmp_path / "store"), "identity", "digits")
    c = client(t.uri)
    histories = {name: LoopHistory.open(LoopConfig(workdir=str(tmp_path / name))) for name in ("a", "b")}
    uids = {name: h.identity() for name, h in histories.items()}
    assert uids["a"] != uids["b"]
    parents = {name: open_loop_run(t, "same-loop", _loop_config(tmp_path / name), uid=uids[name]) for name in "ab"}
    assert parents["a"] != parents["b"]
    for name in "ab":
        tags = c.get_run(parents[name]).data.tags
        assert tags["synthloop.workdir"] == str((tmp_path / name).resolve())
        assert tags["synthloop.config.workdir"] == str(tmp_path / name)
        close_run(t, parents[name])
    reopened = LoopHistory.open(LoopConfig(workdir=str(tmp_path / "a")))
    assert reopened.identity() == uids["a"]  # saved in history.json
    assert open_loop_run(t, "same-loop", _loop_config(tmp_path / "a"), uid=reopened.identity()) == parents["a"]
    moved = open_loop_run(t, "same-loop", _loop_config(tmp_path / "a-moved"), uid=uids["a"])
    assert moved == parents["a"]
    assert c.get_run(parents["b"]).data.tags["synthloop.workdir"] == str((tmp_path / "b").resolve())
    assert c.get_run(parents["b"]).info.status == "FINISHED"


def test_a_refused_run_with_clashing_settings_changes_nothing_in_mlflow(tmp_path: Path) -> None:
    """Clashing settings are refused before any run is touched: the finished parent stays
    FINISHED with its tags, params and no new run."""
    from flows.tracking.runs import Tracking, client, close_run, default_tracking_uri, open_loop_run

    t = Tracking.for_loop(default_tracking_uri(tmp_path / "store"), "refused", "digits")
    c = client(t.uri)
    parent = open_loop_run(t, "loop", _loop_config(tmp_path / "w"), "flow-1")
    close_run(t, parent)
    before = c.get_run(parent)
    with pytest.raises(ConfigError, match=r"^tracking: run \w+ already has param seed='0', but got '1'"):
        open_loop_run(t, "loop", {**_loop_config(tmp_path / "w", seed=1), "iterations": 5}, "flow-2")
    after = c.get_run(parent)
    assert after.info.status == "FINISHED" and after.info.end_time == before.info.end_time
    assert after.data.tags == before.data.tags and after.data.params == before.data.params
    assert len(c.search_runs([after.info.experiment_id])) == 1


# ------------------------------------------------------------------ a kill during model upload (issue #15)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no FAILED status either)."""


@pytest.mark.slow
def test_resume_after_a_kill_during_model_upload_finishes_the_pending_model(
        loop: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed while uploading iteration 0's model: the logged model stays PENDING. The resume
    fills and finalizes that one (exactly one detector-iter0, READY, one version), no duplicate."""
    from mlflow import MlflowClient

    from flows.tracking.model import log_model
    from flows.tracking.runs import Tracking, client, default_tracking_uri, open_iteration_run, open_loop_run

    t = Tracking.for_loop(default_tracking_uri(tmp_path / "store"), "pending", "digits")
    c = client(t.uri)
    parent = open_loop_run(t, "pending", loop.config)
    run_id, _ = open_iteration_run(t, parent, 0, None)

    def killed(*args: Any, **kw: Any) -> None:
        raise _Killed("SIGKILL during the upload")

    with monkeypatch.context() as mp:
        mp.setattr(MlflowClient, "log_model_artifacts", killed)
        mp.setattr(MlflowClient, "finalize_logged_model", killed)  # the process is gone: nothing finalizes
        with pytest.raises(_Killed):
            log_model(t, run_id, loop.work / "iter_0" / "model", 0, 0.3)
    eid = c.get_run(run_id).info.experiment_id
    [pending] = c.search_logged_models([eid])
    assert "PENDING" in str(pending.status) and pending.name == "detector-iter0"
    out = log_model(t, run_id, loop.work / "iter_0" / "model", 0, 0.3)
    models = c.search_logged_models([eid])
    assert [(m.name, str(m.status).rsplit(".", 1)[-1]) for m in models] == [("detector-iter0", "READY")]
    assert out["model_id"] == pending.model_id
    assert [str(v.version) for v in c.search_model_versions(f"name = '{t.model_name}'")] == ["1"]
    run = c.get_run(run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [pending.model_id]
    assert log_model(t, run_id, loop.work / "iter_0" / "model", 0, 0.3) == out
