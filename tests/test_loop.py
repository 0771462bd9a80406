"""The closed loop as library calls (flows/loop/steps.py) and the loop-vs-uniform benchmark's maths.

Loops here use the fake renderer, a few 64² images, a couple of training steps and a tiny real
set built once per module, so they check the plumbing (files, history, resume, seeds, the
real-test rule), not detection quality.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from tinyloop import tiny_config

from flows.loop import run as driver
from flows.loop import steps as loop
from flows.loop.run import run_loop
from flows.loop.state import IterationRecord, LoopConfig, LoopHistory, iteration_seeds
from flows.loop.steps import policy_step
from generator.errors import ConfigError, DataError
from generator.params import Distribution, GenerationParams
from policy.decision import Decision

REPO = Path(__file__).resolve().parents[1]


tiny = tiny_config


def history_json(work: Path) -> dict[str, Any]:
    return json.loads((work / "history.json").read_text())


# ------------------------------------------------------------------ config, seeds, history


@pytest.mark.parametrize("change, field", [
    ({"iterations": 0}, "loop.iterations"), ({"images_per_iteration": -1}, "loop.images_per_iteration"),
    ({"policy": "greedy"}, "--policy"), ({"strategy": "real-only"}, "loop.strategy"),
    ({"backend": "blender"}, "loop.backend"), ({"real_ratio": 0.3}, "loop.real_ratio"),
    ({"lr": float("nan")}, "loop.lr"), ({"seed": True}, "loop.seed"), ({"objective": "loss"}, "loop.objective"),
    ({"replay": ["/nonexistent/shard"]}, "loop.replay[0]"), ({"replay_share": 1.0}, "loop.replay_share"),
])
def test_bad_config_is_one_line_error_and_writes_nothing(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    work = tmp_path / "work"
    with pytest.raises(ConfigError) as exc:
        run_loop(tiny(work, **change))
    assert str(exc.value).startswith(field) and "\n" not in str(exc.value)
    assert not work.exists()


def test_iteration_seeds_are_children_of_the_loop_seed() -> None:
    s = iteration_seeds(7, 2)
    assert s == iteration_seeds(7, 2)
    child = np.random.SeedSequence(7).spawn(3)[2]
    assert list(s.values()) == [int(x) for x in child.generate_state(3)]
    assert len({*s.values(), *iteration_seeds(7, 1).values(), *iteration_seeds(8, 2).values()}) == 9
    assert all(isinstance(v, int) and v >= 0 for v in s.values())


def test_resume_refuses_a_different_loop_but_allows_more_iterations(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "w")
    LoopHistory.open(cfg).save()
    assert LoopHistory.open(tiny(tmp_path / "w", iterations=5, render_workers=2)).entries == []
    with pytest.raises(ConfigError, match=r"^loop\.images_per_iteration: .* holds a loop with "
                                          r"images_per_iteration=4, but got 8"):
        LoopHistory.open(tiny(tmp_path / "w", images_per_iteration=8))


def test_a_loop_written_before_a_setting_existed_resumes_with_its_default(tmp_path: Path) -> None:
    """history.json of an older synthloop lacks settings added since: they read as their defaults
    (what that loop computed); a non-default value is still a different loop."""
    cfg = tiny(tmp_path / "w")
    LoopHistory.open(cfg).save()
    path = tmp_path / "w" / "history.json"
    data = json.loads(path.read_text())
    del data["config"]["replay_share"]  # as if written before the replay buffer existed
    path.write_text(json.dumps(data))
    assert LoopHistory.open(cfg).entries == []
    with pytest.raises(ConfigError, match=r"^loop\.replay_share: .* holds a loop with "
                                          r"replay_share=0.5, but got 0.25"):
        LoopHistory.open(tiny(tmp_path / "w", replay_share=0.25))


def test_workdir_with_foreign_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^loop\.workdir: must be absent, empty or a loop's work directory"):
        run_loop(tiny(tmp_path / "w"))
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["notes.txt"]


def test_history_append_refuses_a_gap(tmp_path: Path) -> None:
    h = LoopHistory.open(tiny(tmp_path / "w"))
    rec = IterationRecord(1, {}, "p", 4, {}, {}, {}, {})
    with pytest.raises(ConfigError, match="iteration 1 cannot follow 0"):
        h.append(rec)


def test_history_readers_that_only_look_share_one_reader(tmp_path: Path) -> None:
    """LoopHistory.peek: the run plan and the production monitor read history.json through it;
    a history that is not a JSON mapping is an error there, not an empty loop."""
    from flows.loop.plan import completed_iterations
    from flows.orchestration.monitor_settings import loop_history
    from flows.orchestration.settings import LoopSettings

    cfg = tiny(tmp_path / "w")
    assert LoopHistory.peek(cfg.work) is None and completed_iterations(cfg) == 0
    h = LoopHistory.open(cfg)
    h.save()
    assert LoopHistory.peek(cfg.work) == json.loads(h.path.read_text()) and h.config["iterations"] == 2
    (cfg.work / "history.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a loop history"):
        LoopHistory.peek(cfg.work)
    assert completed_iterations(cfg) == 0  # the plan only estimates; the run reports the bad history
    with pytest.raises(ConfigError, match=r"^monitor\.loop\.workdir: .* must be a readable loop history"):
        loop_history(LoopSettings(workdir=str(cfg.work)))


@pytest.mark.parametrize("report", [
    {"kind": "synthloop-failure-report", "data": {"split": "real-test"}, "final_report": True, "overall": {}},
    {"kind": "synthloop-failure-report", "data": {"split": "real-val"}, "final_report": True, "overall": {}},
])
def test_policy_step_refuses_real_test_reports(tmp_path: Path, report: dict[str, Any]) -> None:
    cfg = tiny(tmp_path / "w")
    params = GenerationParams(scenario="digits")
    with pytest.raises(DataError, match="never the held-out real-test"):
        policy_step(cfg, 0, [report], params, [tmp_path / "no-shard"])
    assert not (cfg.iter_dir(0) / "decision.json").exists()


# ------------------------------------------------------------------ loops (fake renderer)


class Boom(Exception):
    pass


@dataclass
class Interrupted:
    """A 2-iteration loop stopped twice, then completed: what the resume tests inspect."""

    cfg: LoopConfig
    first: list[dict[str, Any]]  # history entries after the first interruption
    stamp: tuple[int, int]  # inode and mtime of iteration 0's shard manifest back then
    rendered: list[int]  # iterations render_step was called for, over all runs
    history: LoopHistory  # what the completing run returned


def _stamp(path: Path) -> tuple[int, int]:
    return path.stat().st_ino, path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory, real: Path) -> Interrupted:
    import trainer.api

    cfg = tiny(tmp_path_factory.mktemp("loop") / "w", real)
    rendered: list[int] = []
    real_render, real_train = loop.render_step, trainer.api.train

    def spy_render(c: LoopConfig, k: int, params: GenerationParams, part: int = 0) -> loop.RenderStep:
        rendered.append(k)
        return real_render(c, k, params, part)

    def stop(rec: IterationRecord) -> None:
        raise Boom(f"stop after iteration {rec.iteration}")

    def crash_in_iter_1(data: Any, out: Path, **kw: Any) -> Any:
        if "iter_1" in str(out):
            raise Boom("killed while training iteration 1")
        return real_train(data, out, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "render_step", spy_render)
        with pytest.raises(Boom):  # 1) stopped after iteration 0 completed
            run_loop(cfg, on_iteration=stop)
        first = history_json(cfg.work)["iterations"]
        stamp = _stamp(cfg.iter_dir(0) / "shard-0" / "manifest.json")
        mp.setattr(trainer.api, "train", crash_in_iter_1)
        with pytest.raises(Boom):  # 2) killed inside iteration 1, after its shard was rendered
            run_loop(cfg)
        mp.setattr(trainer.api, "train", real_train)
        history = run_loop(cfg)  # 3) completes iteration 1
    return Interrupted(cfg, first, stamp, rendered, history)


@pytest.mark.slow
def test_resume_continues_after_the_last_completed_iteration(interrupted: Interrupted) -> None:
    cfg, first = interrupted.cfg, interrupted.first
    assert [e["iteration"] for e in first] == [0]
    data = history_json(cfg.work)["iterations"]
    assert [e["iteration"] for e in data] == [0, 1] == [e.iteration for e in interrupted.history.entries]
    assert data[0] == first[0]  # iteration 0 was not redone ...
    assert interrupted.rendered == [0, 1, 1]  # ... only the half-done iteration 1 was
    assert _stamp(cfg.iter_dir(0) / "shard-0" / "manifest.json") == interrupted.stamp
    e1 = data[1]
    assert e1["render"]["reused"] and not data[0]["render"]["reused"]  # finished shard kept
    assert not e1["train"]["reused"]  # training had crashed: redone
    assert e1["render"]["fingerprint"] != data[0]["render"]["fingerprint"]
    assert run_loop(cfg).entries == interrupted.history.entries  # complete: nothing to do
    assert interrupted.rendered == [0, 1, 1]


@pytest.mark.slow
def test_loop_writes_the_expected_files_and_history(interrupted: Interrupted) -> None:
    cfg = interrupted.cfg
    e0, e1 = history_json(cfg.work)["iterations"]
    assert [e0["images_rendered"], e1["images_rendered"]] == [4, 8]
    assert e0["train"]["init"] is None and e1["train"]["init"] == "iter_0/model"
    assert e1["train"]["data"] == ["iter_0/shard-0:1.0", "iter_1/shard-0:1.0"]
    m0, m1 = (json.loads((cfg.iter_dir(k) / "model" / "model.json").read_text()) for k in (0, 1))
    assert m1["init"]["weights_sha256"] == m0["weights_sha256"]  # continued from iteration 0's model
    assert [d["fingerprint"] for d in m1["data"]] == [e0["render"]["shards"][0]["fingerprint"],
                                                       e1["render"]["shards"][0]["fingerprint"]]
    assert e0["evaluate"]["split"] == "real-val" and e0["decision"]["policy"] == "optuna"
    for k in (0, 1):
        d = cfg.iter_dir(k)
        for rel in ("params.yaml", "shard-0/manifest.json", "model/model.json", "report/report.json", "decision.json"):
            assert (d / rel).is_file(), rel
        assert not (d / "report-test").exists()  # the loop itself never touches real-test
    assert (cfg.work / "policy.db").is_file()
    params1 = yaml.safe_load((cfg.iter_dir(1) / "params.yaml").read_text())
    assert params1 == json.loads((cfg.iter_dir(0) / "decision.json").read_text())["params"]
    assert json.loads((cfg.iter_dir(0) / "report" / "report.json").read_text())["data"]["split"] == "real-val"


@pytest.mark.slow
def test_crash_before_the_history_entry_reuses_shard_and_model(interrupted: Interrupted, tmp_path: Path) -> None:
    """Killed after iteration 1's decision, before its history entry: the redo reuses the
    finished shard and model and reaches the same decision."""
    shutil.copytree(interrupted.cfg.work, tmp_path / "w")
    cfg = replace(interrupted.cfg, workdir=str(tmp_path / "w"))
    data = history_json(cfg.work)
    e1 = data["iterations"][1]
    decision1 = (cfg.iter_dir(1) / "decision.json").read_text()
    (cfg.work / "history.json").write_text(json.dumps({**data, "iterations": data["iterations"][:1]}))
    again = history_json(run_loop(cfg).workdir)["iterations"][1]
    assert again["render"]["reused"] and again["train"]["reused"]
    assert (again["render"]["fingerprint"], again["evaluate"]["map50"]) == (e1["render"]["fingerprint"],
                                                                           e1["evaluate"]["map50"])
    assert (cfg.iter_dir(1) / "decision.json").read_text() == decision1


@pytest.mark.slow
def test_finished_model_matches_only_the_same_training_inputs(interrupted: Interrupted) -> None:
    cfg = interrupted.cfg
    shards = [cfg.iter_dir(0) / "shard-0", cfg.iter_dir(1) / "shard-0"]
    model, init = cfg.iter_dir(1) / "model", cfg.iter_dir(0) / "model"
    data, options = loop.train_data(cfg, shards), loop._train_options(cfg, 1)
    assert loop.finished_model(model, data, options, init)
    assert not loop.finished_model(model, data, {**options, "steps": 3}, init)
    assert not loop.finished_model(model, data, {**options, "seed": options["seed"] + 1}, init)
    assert not loop.finished_model(model, [data[0], (data[1][0], 2.0)], options, init)
    assert not loop.finished_model(model, data[1:], options, init)
    assert not loop.finished_model(model, data, options, None)
    assert loop.finished_model(model, data, {**options, "num_threads": 2, "device": "auto"}, init)


class RecordingPolicy:
    """Deterministic stand-in: moves light.intensity to a centre computed from its inputs, so
    the params sequence depends on the rendered shard and the report; records every input."""

    name = "recording"

    def __init__(self, seen: list[dict[str, Any]]) -> None:
        self.seen = seen

    def propose(self, inputs: Any) -> Decision:
        self.seen.append({"splits": [r["data"]["split"] for r in inputs.reports],
                          "final": [r["final_report"] for r in inputs.reports],
                          "report": inputs.reports[0], "rows": len(inputs.conditions)})
        centre = 0.3 + 7.7 * float(np.clip(inputs.conditions["stat.brightness"].mean() / 255.0, 0, 1))
        params = GenerationParams(scenario="digits", uniform_share=0.25, distributions={
            "light.intensity": Distribution(kind="truncnormal", center=round(centre, 6), width=1.0)})
        return Decision(policy=self.name, scenario="digits", params=params.to_dict(), uniform_share=[0.0, 0.25])


def _params_sequence(work: Path) -> list[Any]:
    out = []
    for k in range(2):
        out.append(yaml.safe_load((work / f"iter_{k}" / "params.yaml").read_text()))
        out.append(json.loads((work / f"iter_{k}" / "decision.json").read_text())["params"])
    return out


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_params_and_policy_sees_real_val_only(
        tmp_path: Path, real: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(loop, "make_loop_policy", lambda cfg: RecordingPolicy(seen))
    runs = [run_loop(tiny(tmp_path / name, real, seed=3)) for name in ("a", "b")]
    a, b = (_params_sequence(tmp_path / name) for name in ("a", "b"))
    assert a == b
    assert a[0] == {"scenario": "digits", "uniform_share": 0.0, "distributions": {}}  # uniform start
    assert a[1] != a[0] and a[2] == a[1]  # iteration 1 renders what iteration 0 decided
    fps = [[e.render["fingerprint"] for e in h.entries] for h in runs]
    assert fps[0] == fps[1] and len(set(fps[0])) == 2
    assert len(seen) == 4
    assert all(s["splits"] == ["real-val"] and s["final"] == [False] and s["rows"] > 0 for s in seen)
    report0 = json.loads((tmp_path / "a" / "iter_0" / "report" / "report.json").read_text())
    assert seen[0]["report"] == report0


def test_part_sizes_split_the_budget_without_empty_parts() -> None:
    assert loop.part_sizes(10, 3) == [4, 3, 3] and loop.part_sizes(2, 4) == [1, 1] and loop.part_sizes(5, 1) == [5]


@pytest.mark.slow
def test_an_iteration_in_several_shards_trains_and_steers_on_all_of_them(
        tmp_path: Path, real: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(loop, "make_loop_policy", lambda cfg: RecordingPolicy(seen))
    cfg = tiny(tmp_path / "w", real, iterations=1, images_per_iteration=5, render_shards=2)
    rec = run_loop(cfg).entries[0]
    shards = rec.render["shards"]
    assert [s["path"] for s in shards] == ["iter_0/shard-0", "iter_0/shard-1"]
    assert [s["images"] for s in shards] == [3, 2]
    assert len({s["fingerprint"] for s in shards}) == 2 and rec.render["images"] == rec.images_rendered == 5
    assert rec.train["data"] == ["iter_0/shard-0:1.0", "iter_0/shard-1:1.0"]
    assert seen[0]["rows"] == rec.render["annotations"]  # the policy read both shards' conditions
    again = loop.render_step(cfg, 0, driver.iteration_params(cfg, 0), 1)  # a part re-rendered alone is reused
    assert again.reused and again.fingerprint == shards[1]["fingerprint"]


# ------------------------------------------------------------------ benchmark


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("loop_vs_uniform", REPO / "benchmarks" / "loop_vs_uniform.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["loop_vs_uniform"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_images_to_reach_interpolates_from_the_warm_start() -> None:
    b = _bench()
    assert b.images_to_reach([0, 300, 600, 900], [0.1, 0.2, 0.4, 0.5], 0.3) == pytest.approx(450)
    assert b.images_to_reach([0, 300, 600], [0.1, 0.2, 0.4], 0.15) == pytest.approx(150)
    assert b.images_to_reach([0, 300, 600], [0.5, 0.2, 0.4], 0.3) == 0  # the warm start is already there
    assert b.images_to_reach([0, 300, 600], [0.1, 0.2, 0.4], 0.45) is None


def test_paired_differences_and_their_bootstrap_ci() -> None:
    b = _bench()
    d = b.paired([0.5, 0.6, 0.7, None], [0.4, 0.55, 0.6, 0.3])
    assert d["n"] == 3 and d["per_seed"] == [10.0, 5.0, 10.0] and d["mean"] == pytest.approx(25 / 3)
    assert 5.0 - 1e-9 <= d["ci"][0] <= d["mean"] <= d["ci"][1] <= 10.0 + 1e-9
    assert b.paired([None], [0.1])["mean"] is None


def test_worst_slice_ignores_slices_below_min_support() -> None:
    b = _bench()
    report = {"settings": {"min_support": 20}, "slices": [
        {"condition": "blur", "bin": 0, "recall": 0.1, "support_objects": 19},
        {"condition": "blur", "bin": 1, "recall": 0.4, "support_objects": 20},
        {"condition": "slant", "bin": 0, "recall": None, "support_objects": 50},
        {"condition": "slant", "bin": 1, "recall": 0.6, "support_objects": 80}]}
    assert b.worst_slice(report)["recall"] == 0.4 and b.worst_slice(report)["bin"] == 1
    assert b.worst_slice({"slices": []}) is None


def test_benchmark_seed_lists_and_merging_an_earlier_result(tmp_path: Path) -> None:
    b = _bench()
    assert b.parse_args(["--seeds", "3"]).seeds == [0, 1, 2]
    assert b.parse_args(["--seeds", "2,4"]).seeds == [2, 4]
    for bad in ("0", "2,2", "x", "1,"):
        with pytest.raises(SystemExit):
            b.parse_args(["--seeds", bad])
    p = b.PRESETS["smoke"]
    rows = [{"arm": a, "seed": s} for a in "UL" for s in (0, 1)]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"benchmark": "loop_vs_uniform/2", "preset": "smoke", "settings": p, "rows": rows}))
    got = b.merged_rows([old], "smoke", p)
    assert sorted(got) == [("L", 0), ("L", 1), ("U", 0), ("U", 1)]
    assert all(r["merged_from"] == str(old) for r in got.values())
    with pytest.raises(SystemExit, match="settings"):  # other sizes: refused, nothing merged
        b.merged_rows([old], "smoke", {**p, "steps": 3})
    with pytest.raises(SystemExit, match="preset"):
        b.merged_rows([old], "cpu", p)
    # two files (e.g. the 5-seed U/C/L result and a pilot of a new arm): the later file's row wins
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"benchmark": "loop_vs_uniform/2", "preset": "smoke", "settings": p,
                                 "rows": [{"arm": "F", "seed": 0}, {"arm": "U", "seed": 1, "x": 1}]}))
    assert b.parse_args(["--merge", str(old), "--merge", str(extra)]).merge == [str(old), str(extra)]
    both = b.merged_rows([old, extra], "smoke", p)
    assert sorted(both) == [("F", 0), ("L", 0), ("L", 1), ("U", 0), ("U", 1)]
    assert both[("U", 1)]["x"] == 1 and both[("F", 0)]["merged_from"] == str(extra)
    assert both[("U", 0)]["merged_from"] == str(old)


def test_benchmark_holds_every_closed_loop_arm_to_the_targets() -> None:
    """L and F are each judged against U: mean gain, CI above 0, and the median sample efficiency."""
    b = _bench()

    def row(arm: str, seed: int, m: float) -> dict[str, Any]:
        curve = [{"images": 0, "map50": 0.20}, {"images": 100, "map50": (0.20 + m) / 2}, {"images": 200, "map50": m}]
        score = {"real-test": {"map50": m, "worst_recall": m / 2}}
        return {"arm": arm, "seed": seed, "curve": curve, "synthetic": score, "hybrid": score}

    gain = {"U": 0.0, "L": 0.01, "F": 0.08}  # F: +8 points on every seed, L: +1
    rows = [row(a, s, 0.25 + gain[a] + 0.002 * s) for a in "ULF" for s in range(3)]
    cmp = b.compare(rows, [])
    t = cmp["targets"]
    assert t["F-U synthetic map50 >= +3 points, CI above 0"] and t["F-U hybrid map50 >= +3 points, CI above 0"]
    assert not t["L-U synthetic map50 >= +3 points, CI above 0"]
    assert t["F-U worst-slice recall >= +5 points (synthetic)"] is False  # +4 points of recall
    assert cmp["F sample_efficiency_median"] < cmp["sample_efficiency_median"] <= 1.0
    assert t["F sample efficiency <= 0.5 (median over seeds)"]
    assert not t["L sample efficiency <= 0.5 (median over seeds)"]
    only_u = b.compare([r for r in rows if r["arm"] == "U"], [])
    assert only_u["targets"] == {}  # no closed-loop arm ran: nothing to judge


def test_benchmark_ablation_arm_r_is_f_with_misses_counted_once(tmp_path: Path) -> None:
    """R runs F's policy and search seed with failure_weight 1, so F - R isolates the failure weighting."""
    b = _bench()
    args = b.parse_args(["--arms", "U,F,R", "--work", str(tmp_path)])
    args.replay = None  # main() resolves --replay to a shard or None
    from flows.loop.base_model import base_model_path
    from generator.params import uniform_params
    from generator.scenario import load_scenario

    p = b.PRESETS["smoke"]
    calib = tmp_path / "c.yaml"
    uniform_params(load_scenario("digits")).save(calib)
    f, r = (b.loop_config(args, p, arm, 3, base_model_path("digits"), calib) for arm in "FR")
    assert (f.policy, r.policy) == ("refit", "refit") and (f.failure_weight, r.failure_weight) == (2, 1)
    assert (f.seed, f.policy_base, f.refit_trials) == (r.seed, r.policy_base, r.refit_trials)
    assert f.workdir != r.workdir
    rows = [{"arm": a, "seed": s, "curve": [{"images": 0, "map50": 0.2}],
             "synthetic": {"real-test": {"map50": m, "worst_recall": m}},
             "hybrid": {"real-test": {"map50": m, "worst_recall": m}}}
            for a, m in (("U", 0.25), ("F", 0.28), ("R", 0.27)) for s in (0, 1)]
    assert b.compare(rows, [])["F-R synthetic real-test map50"]["mean"] == pytest.approx(1.0)


@pytest.mark.slow
def test_benchmark_smoke_writes_every_column(tmp_path: Path, real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Arms U, C, L from the committed base model, synthetic-only and hybrid, an extra eval set:
    every column of the JSON and the table is there (tiny sizes, fake renderer: numbers mean nothing)."""
    from flows.loop.base_model import base_model_path
    from generator.params import Distribution, GenerationParams

    b = _bench()
    work = tmp_path / "bench"
    shutil.copytree(real, work / "real")
    calib = tmp_path / "calib.yaml"
    GenerationParams(scenario="digits", uniform_share=0.1, distributions={
        "light.intensity": Distribution(kind="truncnormal", center=3.0, width=1.0)}).save(calib)
    from generator.params import uniform_params
    from generator.pipeline import RenderJob, render_shard
    from generator.scenario import load_scenario

    sc = load_scenario("digits")
    replay = render_shard(RenderJob(sc, uniform_params(sc), 8, 99, 64, 64, backend="fake"), tmp_path / "replay").path
    assert b.main(["--preset", "smoke", "--work", str(work), "--plot", str(tmp_path / "p.png"), "--calibration",
                   str(calib), "--eval", f"val={work / 'real' / 'real-val'}", "--replay", str(replay),
                   "--arms", "U,C,L,F"]) == 0
    result = json.loads((work / "loop_vs_uniform.json").read_text())
    assert result["replay"] == str(replay)
    assert {(r["arm"], r["seed"]) for r in result["rows"]} == {(a, s) for a in "UCLF" for s in (0, 1)}
    assert Path(result["base_model"]).resolve() == base_model_path("digits").resolve()  # relative in the repo
    assert result["calibration"] == str(calib)
    for r in result["rows"]:
        assert [c["images"] for c in r["curve"]] == [0, 6, 12]  # warm start, then 2 rounds
        for kind in ("synthetic", "hybrid"):
            assert set(r[kind]) == {"real-test", "val"} and Path(r["models"][kind], "model.json").is_file()
            assert r[kind]["real-test"]["map50"] is not None
        hybrid = json.loads(Path(r["models"]["hybrid"], "model.json").read_text())
        assert hybrid["init"]["path"] == r["models"]["synthetic"]  # fine-tuned from the arm's final model
    first = {arm: (work / arm / "seed0" / "iter_0" / "params.yaml").read_text() for arm in "UCLF"}
    assert "light.intensity" in first["C"] and "light.intensity" not in first["U"]
    assert {m["kind"] for m in result["models"]} == {"synthetic", "hybrid"} and len(result["models"]) == 16
    refit = json.loads((work / "F" / "seed0" / "iter_0" / "decision.json").read_text())
    assert refit["policy"] == "refit" and refit["refit"]["failure_weight"] == 2  # re-fitted to real-val's misses
    assert (work / "F" / "seed0" / "iter_0" / "refit" / "params.yaml").is_file()
    cmp = result["comparisons"]
    for key in ("L-U synthetic real-test map50", "C-U hybrid real-test worst_recall", "L-U hybrid val map50",
                "F-U synthetic real-test map50", "F-C hybrid real-test map50"):
        assert cmp[key]["n"] == 2 and len(cmp[key]["ci"]) == 2
    assert len(cmp["sample_efficiency_per_seed"]) == 2 and len(cmp["targets"]) == 8  # 4 for L, 4 for F
    assert len(cmp["F sample_efficiency_per_seed"]) == 2
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "| L − U |" in out and "| C (calibrated) |" in out and "| F − C |" in out and "Sample efficiency" in out


def test_replay_shards_make_their_share_of_every_iterations_training(tmp_path: Path, real: Path) -> None:
    """A warm-started loop keeps training on its replay buffer (e.g. the init model's data):
    replay shards are weighted so they make ``replay_share`` of the samples as the loop's own
    shards accumulate, and the weights are what the checkpoint records."""
    from generator.params import uniform_params
    from generator.pipeline import RenderJob, render_shard
    from generator.scenario import load_scenario

    sc = load_scenario("digits")
    replay = render_shard(RenderJob(sc, uniform_params(sc), 12, 99, 64, 64, backend="fake"), tmp_path / "replay").path
    cfg = tiny(tmp_path / "work", real, replay=[str(replay)], replay_share=0.25).validate()
    history = run_loop(cfg)
    for k, entry in enumerate(history.entries):
        meta = json.loads((cfg.work / entry.train["path"] / "model.json").read_text())
        weights = {Path(d["path"]).name: d["weight"] for d in meta["data"]}
        own = 4 * (k + 1)  # images of the loop's own shards so far, weight 1 each
        assert weights["replay"] == pytest.approx(0.25 / 0.75 * own / 12, abs=1e-6)
        assert weights["replay"] * 12 / (weights["replay"] * 12 + own) == pytest.approx(0.25, abs=1e-5)


# ------------------------------------------------------------------ damaged shards (issue #15)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, real: Path) -> LoopConfig:
    """A loop with iteration 0 complete (copy its work directory before changing it)."""
    cfg = tiny(tmp_path_factory.mktemp("finished") / "w", real, iterations=1)
    run_loop(cfg)
    return cfg


def _copy(cfg: LoopConfig, tmp_path: Path, **kw: Any) -> LoopConfig:
    shutil.copytree(cfg.work, tmp_path / "w")
    return replace(cfg, workdir=str(tmp_path / "w"), **kw)


def _flip_byte(path: Path, at: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["images/000000.png", "annotations.json", "deleted"])
def test_resume_repairs_a_corrupted_finished_shard(finished: LoopConfig, tmp_path: Path, damage: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A finished iteration's shard that was edited, corrupted or deleted is re-rendered from its
    recipe (the same fingerprint and bytes) before the next iteration trains on it."""
    from generator.shard import Shard

    cfg = _copy(finished, tmp_path, iterations=2)
    shard = cfg.iter_dir(0) / "shard-0"
    before = {rel: (shard / rel).read_bytes() for rel in ("annotations.json", "images/000000.png", "manifest.json")}
    if damage == "deleted":
        shutil.rmtree(shard)
    else:
        _flip_byte(shard / damage)
    capsys.readouterr()
    history = run_loop(cfg)
    assert [e.iteration for e in history.entries] == [0, 1]
    Shard(shard).verify()
    assert {rel: (shard / rel).read_bytes() for rel in before} == before  # same recipe, same bytes
    repairs = history_json(cfg.work)["iterations"][0]["render"]["repairs"]
    assert [r["shard"] for r in repairs] == ["iter_0/shard-0"]
    assert ("missing" if damage == "deleted" else damage) in repairs[0]["problem"]
    err = capsys.readouterr().err
    assert "iter_0/shard-0" in err and "re-rendered (same fingerprint)" in err
    assert not list(cfg.iter_dir(0).glob(".tmp-*"))


def test_resume_inside_an_iteration_rerenders_a_corrupt_reused_shard(
        tmp_path: Path, real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed after iteration 0's shard was rendered: a resume re-renders a shard whose files no
    longer match its manifest instead of reusing it on its fingerprint (and then failing)."""
    import trainer.api

    cfg = tiny(tmp_path / "w", real, iterations=1)

    def crash(*args: Any, **kw: Any) -> Any:
        raise Boom("killed while training")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer.api, "train", crash)
        with pytest.raises(Boom):
            run_loop(cfg)
    shard = cfg.iter_dir(0) / "shard-0"
    ann = (shard / "annotations.json").read_bytes()
    _flip_byte(shard / "images" / "000001.png")
    capsys.readouterr()
    entry = run_loop(cfg).entries[0]
    s = entry.render["shards"][0]
    assert not s["reused"] and "images/000001.png" in s["repaired"]
    assert (shard / "annotations.json").read_bytes() == ann
    assert "iter_0/shard-0 images/000001.png does not match" in capsys.readouterr().err


def test_a_damaged_shard_whose_recipe_changed_is_a_clear_error(finished: LoopConfig, tmp_path: Path) -> None:
    """A re-render must give the recorded fingerprint: otherwise the shard is not repaired."""
    from generator.errors import ShardError

    cfg = _copy(finished, tmp_path, iterations=2)
    _flip_byte(cfg.iter_dir(0) / "shard-0" / "annotations.json")
    params = yaml.safe_load((cfg.iter_dir(0) / "params.yaml").read_text())
    params["uniform_share"] = 0.5
    (cfg.iter_dir(0) / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ShardError, match=r"^iter_0/shard-0: annotations\.json does not match .* would give "
                                         r"fingerprint \w+, but history\.json records \w+; restore") as exc:
        run_loop(cfg)
    assert "\n" not in str(exc.value)
    assert len(history_json(cfg.work)["iterations"]) == 1 and not cfg.iter_dir(1).exists()
