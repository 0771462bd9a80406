"""The Optuna policy as a loop: ask/tell across calls, determinism, resume after a crash,
and no made-up objective value when the signal is unusable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from policysupport import digits, make_report, toy_conditions, weak_slice

from generator.errors import DataError
from generator.params import GenerationParams, uniform_params, validate_params
from policy import PolicyInputs, make_policy
from policy.optuna_policy import OptunaConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def sc():
    return digits()


@pytest.fixture(scope="module")
def shard(sc):
    return toy_conditions(sc, n_images=200, seed=1)


def _report(sc, map50, tag, **kw):
    weak = [weak_slice(sc, "object_size", 2.0, 5.0), weak_slice(sc, "brightness", 0.0, 60.0, rank=2,
                                                              score=3.0)]
    return make_report(sc, kw.pop("weak", weak), map50=map50, tag=tag, **kw)


def _propose(db, sc, report, shard, seed=0, current=None, objective="map50"):
    policy = make_policy("optuna", study=db, loop_id="loop",
                         config=OptunaConfig(seed=seed, objective=objective))
    return policy.propose(PolicyInputs(sc, [report], current, shard))


def _trials(db):
    return optuna.load_study(study_name="loop", storage=f"sqlite:///{db}").get_trials()


def test_tells_the_measured_gain_and_asks_one_trial_per_iteration(tmp_path, sc, shard):
    db = tmp_path / "p.db"
    d0 = _propose(db, sc, _report(sc, 0.40, "a"), shard)
    assert (d0.trial, d0.trial_source, d0.iteration, d0.told) == (0, "heuristic", 0, [])
    validate_params(GenerationParams.model_validate(d0.params), sc)
    d1 = _propose(db, sc, _report(sc, 0.46, "b"), shard)
    assert (d1.trial, d1.trial_source, d1.iteration) == (1, "sampler", 1)  # same slices: TPE explores
    assert len(d1.told) == 1 and d1.told[0]["state"] == "COMPLETE"
    trials = _trials(db)
    assert trials[0].value == pytest.approx(0.06)  # 0.46 after − 0.40 before
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    d2 = _propose(db, sc, _report(sc, 0.50, "c", weak=[weak_slice(sc, "clutter", 14.0, 30.0)]), shard)
    assert d2.trial_source == "heuristic"  # a new failure mode: learn from it first
    assert [h["value"] for h in d2.history][:2] == [pytest.approx(0.06), pytest.approx(0.04)]
    md = d2.to_markdown()
    assert "trial 2" in md and "background.kind" in md and "COMPLETE" in md


@pytest.mark.slow
def test_same_inputs_and_seed_same_decisions(tmp_path, sc, shard):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        db = tmp_path / f"{name}.db"
        runs.append([_propose(db, sc, _report(sc, 0.4 + 0.05 * i, str(i)), shard, seed=seed).to_dict()
                     for i in range(2)])
    assert runs[0] == runs[1]
    assert runs[0][0]["params"] == runs[2][0]["params"]  # the heuristic does not depend on the seed
    assert runs[0][1]["knobs"] != runs[2][1]["knobs"]  # the sampler does
    assert runs[0][1]["params"] != runs[2][1]["params"]


def test_rerun_of_an_iteration_replays_it_and_an_old_report_is_refused(tmp_path, sc, shard):
    db = tmp_path / "p.db"
    a, b = _report(sc, 0.40, "a"), _report(sc, 0.45, "b")
    _propose(db, sc, a, shard)
    first = _propose(db, sc, b, shard)
    again = _propose(db, sc, b, shard)
    assert again.replayed and {**again.to_dict(), "replayed": False} == first.to_dict()
    assert len(_trials(db)) == 2
    with pytest.raises(DataError, match="already drove iteration 0"):
        _propose(db, sc, a, shard)


def test_unusable_signals_never_tell_a_value(tmp_path, sc, shard):
    db = tmp_path / "p.db"
    _propose(db, sc, _report(sc, 0.40, "a"), shard)
    d1 = _propose(db, sc, _report(sc, float("nan"), "nan"), shard)  # NaN metric
    assert d1.told[0]["state"] == "FAIL" and "map50" in d1.told[0]["reason"]
    empty = make_report(sc, [], map50=None, recall=None, objects=0, tag="empty")
    d2 = _propose(db, sc, empty, shard)  # no objects, no weak slices: nothing to act on
    assert d2.trial is None and d2.params == d1.params
    assert "no baseline" in d2.told[0]["reason"] or "no usable" in d2.told[0]["reason"]
    trials = _trials(db)
    assert len(trials) == 2 and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.value is None for t in trials)
    assert [t.user_attrs["fail_reason"] for t in trials]


def test_params_other_than_the_proposal_fail_the_pending_trial(tmp_path, sc, shard):
    db = tmp_path / "p.db"
    _propose(db, sc, _report(sc, 0.40, "a"), shard)
    d = _propose(db, sc, _report(sc, 0.50, "b"), shard, current=uniform_params(sc))
    assert d.told[0]["state"] == "FAIL" and "not this trial's proposal" in d.told[0]["reason"]


def test_slice_recall_objective(tmp_path, sc, shard):
    db = tmp_path / "p.db"

    def rep(detected, tag):
        slices = [{"condition": "object_size", "range": [0.0, 6.0], "support_objects": 50,
                   "detected": detected}, {"condition": "object_size", "range": [6.0, 90.0],
                                           "support_objects": 50, "detected": 45}]
        return _report(sc, 0.5, tag, weak=[weak_slice(sc, "object_size", 2.0, 5.0)], slices=slices)

    d0 = _propose(db, sc, rep(10, "a"), shard, objective="slice_recall")
    assert d0.baseline == pytest.approx(0.2)
    d1 = _propose(db, sc, rep(30, "b"), shard, objective="slice_recall")
    assert d1.told[0]["value"] == pytest.approx(0.4)


def test_enqueued_but_never_asked_trials_are_failed(tmp_path, sc, shard):
    db = tmp_path / "p.db"
    _propose(db, sc, _report(sc, 0.40, "a"), shard)
    study = optuna.load_study(study_name="loop", storage=f"sqlite:///{db}")
    study.enqueue_trial({"step": 0.5})  # a run that died between enqueue and ask
    d = _propose(db, sc, _report(sc, 0.45, "b"), shard)
    states = [t.state for t in _trials(db)]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING]
    assert d.trial == 2 and any("enqueued" in t["reason"] for t in d.told)


KILL_SCRIPT = """
import json, os, signal, sys
import pandas as pd
from optuna.study import Study
from generator.scenario import load_scenario
from policy import PolicyInputs, make_policy

ask = Study.ask
def ask_then_die(self, *args, **kwargs):
    ask(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
Study.ask = ask_then_die
db, report, parquet = sys.argv[1:4]
inputs = PolicyInputs(load_scenario("digits"), [json.load(open(report))], None, pd.read_parquet(parquet))
make_policy("optuna", study=db, loop_id="loop").propose(inputs)
"""


@pytest.mark.slow
def test_resume_after_sigkill_mid_iteration(tmp_path, sc, shard):
    db, parquet, report = tmp_path / "p.db", tmp_path / "c.parquet", tmp_path / "b.json"
    _propose(db, sc, _report(sc, 0.40, "a"), shard)
    shard.to_parquet(parquet)
    b = _report(sc, 0.45, "b")
    report.write_text(json.dumps(b))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(db), str(report), str(parquet)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [t.state for t in _trials(db)] == [TrialState.COMPLETE, TrialState.RUNNING]
    value = _trials(db)[0].value

    d = _propose(db, sc, b, shard)  # the next run, fresh objects on the same storage
    trials = _trials(db)
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING]
    assert trials[0].value == value == pytest.approx(0.05)  # told once, not again
    assert d.told == [{"trial": 1, "iteration": None, "state": "FAIL", "value": None,
                       "reason": "stale: asked by a run that stopped before proposing params"}]
    assert (d.trial, d.iteration) == (2, 1)
    assert trials[2].params == trials[1].params  # the crash does not change what is proposed
    assert _propose(db, sc, b, shard).replayed and len(_trials(db)) == 3
