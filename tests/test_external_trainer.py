"""Your own detector in the loop (flows/loop/external.py): an external train and predict command.

The detector is tests/external_detector/ (GridNet, a tiny grid box regressor sharing no code
with trainer/), driven through its command-line contract; the loop runs on the fake renderer,
64² images and a few training steps, so these check the plumbing (requests, atomic model
directories, content hashes, evaluation through evaluate_predictions, failures and resume).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from tinyloop import tiny_config

from flows.loop import external
from flows.loop.run import run_loop
from flows.loop.state import LoopConfig
from flows.loop.steps import evaluate_step
from generator.errors import ConfigError
from generator.real.build import build_real_set
from generator.shard import sha256_file

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "external_detector"
TRAIN = [sys.executable, str(EXAMPLE / "train.py")]
PREDICT = f"{shlex.quote(sys.executable)} {shlex.quote(str(EXAMPLE / 'predict.py'))}"  # the string form
SMALL = {"real-train": 12, "real-val": 16, "real-test": 8}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ext-real") / "real"
    build_real_set(out, seed=0, sizes=SMALL)
    return out


def tiny(work: Path, real: Path, **kw: Any) -> LoopConfig:
    return tiny_config(work, real, **{"images_per_iteration": 6, "steps_per_iteration": 3, "batch_size": 4,
                                      "external_train": TRAIN, "external_predict": PREDICT, **kw})


def history(work: Path) -> dict[str, Any]:
    return dict(json.loads((work / "history.json").read_text()))


def test_two_iterations_with_an_external_detector(tmp_path: Path, real: Path) -> None:
    work = tmp_path / "work"
    h = run_loop(tiny(work, real))
    assert len(h.entries) == 2
    data = history(work)
    assert data["config"]["external_train"] == TRAIN and data["config"]["external_predict"] == PREDICT
    hashes = []
    for k, e in enumerate(data["iterations"]):
        model = work / e["train"]["path"]
        assert sorted(p.name for p in model.iterdir()) == ["gridnet.json", "gridnet.pt"]  # GridNet's own files
        assert e["train"]["external"] is True and e["train"]["sha256"] == external.dir_sha256(model)
        hashes.append(e["train"]["sha256"])
        assert e["train"]["final_loss"] is None and e["train"]["seconds"] > 0 and e["train"]["reused"] is False
        # the train request: every shard so far with its weight, the previous model as init
        req = json.loads((work / f"iter_{k}" / "external" / "train.request.json").read_text())
        assert req["format"] == external.TRAIN_FORMAT and len(req["shards"]) == k + 1
        assert req["init"] == (None if k == 0 else str((work / "iter_0" / "model").resolve()))
        assert req["steps"] == 3 and req["batch_size"] == 4 and req["seed"] == e["seeds"]["train"]
        # evaluated by the evaluator from the predict command's detections
        dets = work / f"iter_{k}" / "external" / "predict-real-val.json"
        report = json.loads((work / e["evaluate"]["path"] / "report.json").read_text())
        assert report["model"]["predictions"] == str(dets)
        assert report["model"]["sha256"] == sha256_file(dets)
        assert report["model"]["detections"] == len(json.loads(dets.read_text())) > 0
        assert report["data"]["split"] == "real-val" and e["evaluate"]["map50"] == report["overall"]["map50"]
        assert (work / f"iter_{k}" / "decision.json").is_file()
        assert not list((work / f"iter_{k}").glob(".tmp-*"))
    assert hashes[0] != hashes[1]  # iteration 1 trained further
    assert not (work / "iter_0" / "model" / "model.pt").exists()  # the built-in trainer never ran
    # reporting code's held-out evaluation goes through the same commands and evaluator
    cfg = tiny(work, real)
    test = evaluate_step(cfg, 1, work / "iter_1" / "model", "real-test")
    assert test.path == work / "iter_1" / "report-test" and test.report["final_report"] is True
    assert (work / "iter_1" / "external" / "predict-real-test.json").is_file()
    # the flow's Prefect markdown names an external model by its hash
    from flows.orchestration.publish import iteration_markdown

    md = iteration_markdown(cfg, h.entries[1], "run-link", {"model_id": None, "version": None, "champion": False,
                                                           "sha256": hashes[1], "model_uri": "runs:/r/external_model"})
    assert f"- model (external): `runs:/r/external_model` sha256 `{hashes[1]}`" in md


def test_a_failing_train_command_is_one_line_and_the_loop_resumes(tmp_path: Path, real: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    cfg = tiny(work, real)
    monkeypatch.setenv("EXTDET_FAIL_AT_ITERATION", "1")
    with pytest.raises(external.ExternalCommandError) as exc:
        run_loop(cfg)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("loop.external_train: command ")
    assert str(EXAMPLE / "train.py") in msg and "exited with code 3" in msg
    assert "CUDA out of memory (simulated)" in msg and "gridnet: loading batch 11" in msg
    assert "gridnet: loading batch 2 |" not in msg and msg.count("loading batch") == 9  # the last 10 lines
    log = work / "iter_1" / "external" / "train.log"
    assert str(log) in msg and "gridnet: loading batch 0" in log.read_text()
    # nothing partial published: no model for iteration 1, no temporary directory left, one entry
    assert not (work / "iter_1" / "model").exists() and not list((work / "iter_1").glob(".tmp-*"))
    assert len(history(work)["iterations"]) == 1
    first = history(work)["iterations"][0]["train"]["sha256"]
    monkeypatch.delenv("EXTDET_FAIL_AT_ITERATION")
    h = run_loop(cfg)
    assert [e.iteration for e in h.entries] == [0, 1]
    data = history(work)["iterations"]
    assert data[0]["train"]["sha256"] == first  # iteration 0 untouched by the resume
    assert data[1]["train"]["sha256"] == external.dir_sha256(work / "iter_1" / "model")
    assert not (work / "iter_1" / "model" / "partial.bin").exists()


@pytest.mark.parametrize("change, start", [
    ({"external_train": ["no-such-detector-train", "--fast"]}, "loop.external_train: must name an executable "
                                                                "program, but 'no-such-detector-train'"),
    ({"external_predict": "/nonexistent/predict.sh"}, "loop.external_predict: must name an executable program"),
    ({"external_predict": None}, "loop.external_predict: is required with external_train"),
    ({"external_train": None}, "loop.external_train: is required with external_predict"),
    ({"external_train": "python -m 'unclosed"}, "loop.external_train: must be a command line"),
    ({"external_train": 3}, "loop.external_train: must be a command"),
    ({"external_train": []}, "loop.external_train: must name a command"),
])
def test_a_missing_command_is_refused_before_anything_is_written(tmp_path: Path, real: Path,
                                                                 change: dict[str, Any], start: str) -> None:
    work = tmp_path / "work"
    with pytest.raises(ConfigError) as exc:
        run_loop(tiny(work, real, **change))
    assert str(exc.value).startswith(start), str(exc.value)
    assert "\n" not in str(exc.value)
    assert not work.exists()


def test_a_command_that_writes_nothing_publishes_nothing(tmp_path: Path, real: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(external.ExternalCommandError) as exc:
        run_loop(tiny(work, real, iterations=1, external_train=[sys.executable, "-c", "print('trained!')"]))
    assert "exited 0 but wrote no file" in str(exc.value) and "trained!" in str(exc.value)
    assert not (work / "iter_0" / "model").exists() and not list((work / "iter_0").glob(".tmp-*"))


def test_dir_sha256_is_the_sorted_files_content(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "w.bin").write_bytes(b"1")
    (a / "sub" / "x.txt").write_text("x")
    sha = external.dir_sha256(a)
    assert sha == external.dir_sha256(a) and len(sha) == 64
    (a / "w.bin").write_bytes(b"2")
    assert external.dir_sha256(a) != sha
    (a / "w.bin").write_bytes(b"1")
    assert external.dir_sha256(a) == sha
    (a / "sub" / "x.txt").rename(a / "sub" / "y.txt")
    assert external.dir_sha256(a) != sha  # names count too


def test_default_loop_has_no_external_settings() -> None:
    cfg = LoopConfig(workdir="w")
    assert cfg.external_train is None and cfg.external_predict is None and not cfg.external


def test_mlflow_logs_an_external_model_as_artifacts_with_its_hash(tmp_path: Path) -> None:
    """What the Prefect flow's track task logs for an external model (flows.tracking.model.log_model
    with external_sha256): the directory's files as run artifacts and its hash as a tag."""
    from flows.tracking.model import EXTERNAL_ARTIFACTS, TAG_MODEL_SHA256, log_model
    from flows.tracking.runs import Tracking, client, default_tracking_uri, open_iteration_run, open_loop_run

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00\x01")
    (model / "meta.json").write_text("{}")
    sha = external.dir_sha256(model)
    t = Tracking.for_loop(default_tracking_uri(tmp_path / "store"), "ext-test", "digits")
    parent = open_loop_run(t, "ext-loop", {"external_train": "x"}, None)
    run_id, _ = open_iteration_run(t, parent, 0, None, None)
    for _ in range(2):  # idempotent
        got = log_model(t, run_id, model, 0, 0.5, external_sha256=sha)
        assert got == {"model_id": None, "version": None, "champion": False, "sha256": sha,
                       "model_uri": f"runs:/{run_id}/{EXTERNAL_ARTIFACTS}"}
    c = client(t.uri)
    assert c.get_run(run_id).data.tags[TAG_MODEL_SHA256] == sha
    names = sorted(f.path for f in c.list_artifacts(run_id, EXTERNAL_ARTIFACTS))
    assert names == [f"{EXTERNAL_ARTIFACTS}/meta.json", f"{EXTERNAL_ARTIFACTS}/weights.bin"]
    assert c.search_registered_models() == [] or all(
        not c.search_model_versions(f"name='{m.name}'") for m in c.search_registered_models())


def test_warm_start_from_an_external_model(tmp_path: Path, real: Path) -> None:
    """init_model with external commands: evaluated with the predict command before iteration 0,
    recorded by content hash; a resume refuses it once its files changed."""
    first = tmp_path / "first"
    run_loop(tiny(first, real, iterations=1))
    init = tmp_path / "init-model"
    import shutil

    shutil.copytree(first / "iter_0" / "model", init)
    work = tmp_path / "work"
    cfg = tiny(work, real, iterations=1, init_model=str(init))
    run_loop(cfg)
    data = history(work)
    assert data["init"]["external"] is True and data["init"]["weights_sha256"] == external.dir_sha256(init)
    assert (work / "init" / "report" / "report.json").is_file()
    assert (work / "init" / "external" / "predict-real-val.json").is_file()
    req = json.loads((work / "iter_0" / "external" / "train.request.json").read_text())
    assert req["init"] == str(init.resolve())
    (init / "gridnet.json").write_text('{"changed": true}')
    with pytest.raises(ConfigError, match=r"loop\.init_model: the work directory"):
        run_loop(tiny(work, real, iterations=2, init_model=str(init)))
    with pytest.raises(ConfigError, match=r"loop\.init_model: must be a directory holding"):
        run_loop(tiny(tmp_path / "other", real, init_model=str(tmp_path / "empty")))


@pytest.mark.slow
def test_the_prefect_flow_drives_the_external_detector(tmp_path: Path, real: Path) -> None:
    """The flow's train/evaluate tasks are the library steps: the same external commands, the
    history's hashes, and each iteration's MLflow run holds the model files and hash (no
    registered version)."""
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.orchestration.closed_loop import closed_loop
    from flows.orchestration.settings import LoopSettings
    from flows.tracking.model import EXTERNAL_ARTIFACTS, TAG_MODEL_SHA256

    s = LoopSettings.build({
        "workdir": str(tmp_path / "loop"), "real_dir": str(real), "iterations": 2, "images_per_iteration": 6,
        "render_shards": 1, "steps_per_iteration": 2, "batch_size": 2, "width": 64, "height": 64,
        "backend": "fake", "eval_resamples": 0, "num_threads": 1, "device": "cpu",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "ext-flow", "model_name": "ext-flow",
        "external_train": TRAIN, "external_predict": PREDICT})
    with temporary_settings({PREFECT_HOME: str(tmp_path / "prefect-home")}), \
            prefect_test_harness(server_startup_timeout=120):
        rows = closed_loop(s)
    assert [r["iteration"] for r in rows] == [0, 1]
    entries = history(Path(s.workdir))["iterations"]
    shas = [e["train"]["sha256"] for e in entries]
    assert shas == [external.dir_sha256(Path(s.workdir) / e["train"]["path"]) for e in entries]
    c = MlflowClient(tracking_uri=s.tracking_uri)
    exp = c.get_experiment_by_name("ext-flow")
    assert exp is not None
    tagged = {r.data.tags.get("synthloop.iteration"): r for r in c.search_runs([exp.experiment_id])
              if TAG_MODEL_SHA256 in r.data.tags}
    assert [tagged[str(k)].data.tags[TAG_MODEL_SHA256] for k in (0, 1)] == shas
    files = {f.path for f in c.list_artifacts(tagged["1"].info.run_id, EXTERNAL_ARTIFACTS)}
    assert files == {f"{EXTERNAL_ARTIFACTS}/gridnet.json", f"{EXTERNAL_ARTIFACTS}/gridnet.pt"}
    assert c.search_model_versions("name='ext-flow'") == []
