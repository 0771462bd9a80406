"""Baselines, the policy registry, and the reports the policy must refuse."""

from __future__ import annotations

import numpy as np
import pytest
from policysupport import digits, make_report, weak_slice

from generator.errors import ConfigError, DataError
from generator.params import GenerationParams, uniform_params, validate_params
from generator.sampling import Sampler
from policy import PolicyInputs, available_policies, make_policy
from policy.reports import objective_value, pooled_weak_slices


@pytest.fixture(scope="module")
def sc():
    return digits()


def _samples(sc, params: GenerationParams, n: int = 4000) -> dict[str, list]:
    sampler, rng = Sampler(sc, params), np.random.default_rng(0)
    values: dict[str, list] = {name: [] for name in sc.parameters}
    for _ in range(n):
        s = sampler.sample(rng)
        for k, v in s.image.items():
            values[k].append(v)
        for obj in s.objects:
            for k, v in obj.items():
                values[k].append(v)
    return values


def test_uniform_baseline_samples_every_range_end_to_end_and_every_choice(sc):
    d = make_policy("uniform").propose(PolicyInputs(sc, [make_report(sc)]))
    params = validate_params(GenerationParams.model_validate(d.params), sc)
    assert d.policy == "uniform" and d.trial is None
    for name, vals in _samples(sc, params).items():
        p = sc.parameters[name]
        if p.is_numeric:
            lo, hi = p.range
            tol = 0.02 * (hi - lo)
            assert min(vals) <= lo + tol and max(vals) >= hi - tol, name
        else:
            assert {str(v) for v in vals} == {str(c) for c in p.choices}, name


def test_fixed_baseline_is_the_scenario_defaults(sc):
    current = GenerationParams(scenario=sc.name, uniform_share=0.4)
    d = make_policy("fixed").propose(PolicyInputs(sc, [make_report(sc)], current))
    params = GenerationParams.model_validate(d.params)
    assert params.uniform_share == 0.0
    vals = _samples(sc, params, n=50)
    for name, p in sc.parameters.items():
        want = {float(p.default)} if p.is_numeric else {str(p.default)}
        assert {float(v) if p.is_numeric else str(v) for v in vals[name]} == want, name
    assert len(d.changes) == len(sc.parameters) and d.uniform_share == [0.4, 0.0]
    assert "Policy decision: fixed" in d.to_markdown()


def test_unknown_policy_lists_the_available_ones():
    with pytest.raises(ConfigError,
                       match="unknown policy 'bandit'; available: optuna, mixture, refit, uniform, fixed, calibrated"):
        make_policy("bandit")
    assert available_policies() == ["optuna", "mixture", "refit", "uniform", "fixed", "calibrated"]


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"data": {"split": "real-test"}}, DataError, "real-test"),
    ({"final_report": True}, DataError, "real-test"),
    ({"scenario": {"name": "shapes"}}, DataError, "scenario.name must be 'digits'"),
    ({"per_class": [{"class": "a"}]}, DataError, "per_class classes"),
    ({"kind": "something-else"}, ConfigError, "kind must be"),
    ({"weak_slices": {"a": 1}}, ConfigError, "weak_slices must be a list"),
])
def test_reports_the_policy_must_not_read_are_refused(sc, change, error, match):
    report = {**make_report(sc), **change}
    for name in available_policies():
        base = uniform_params(sc) if name == "calibrated" else None  # the calibrated arm needs a base
        with pytest.raises(error, match=match):
            make_policy(name, study="unused.db", loop_id="x", base=base).propose(PolicyInputs(sc, [report]))


def test_no_report_is_refused(sc):
    with pytest.raises(ConfigError, match="at least one failure report"):
        make_policy("uniform").propose(PolicyInputs(sc, []))


def test_weak_slices_are_pooled_filtered_and_ranked(sc):
    a = make_report(sc, [weak_slice(sc, "object_size", 2, 6, score=2.0),
                         {**weak_slice(sc, "brightness", 0, 50), "score": None},  # unusable
                         {**weak_slice(sc, "blur", 0, 5), "support": 0},  # no support
                         {**weak_slice(sc, "slant", 0, 5), "condition": "unknown"}])
    b = make_report(sc, [weak_slice(sc, "object_size", 1, 4, score=4.0),
                         weak_slice(sc, "noise", 5, 9, score=3.0, side="high")])
    pooled = pooled_weak_slices([a, b], sc)
    assert [(s.condition, s.report, s.score) for s in pooled] == [("object_size", 1, 4.0),
                                                                   ("noise", 1, 3.0)]
    assert pooled[0].parameters == tuple(sc.parameters_for_condition("object_size"))


def test_objective_value_refuses_nan_and_empty(sc):
    assert objective_value(make_report(sc, map50=0.5), "map50") == (0.5, "")
    assert objective_value(make_report(sc, map50=float("nan")), "map50")[0] is None
    assert objective_value(make_report(sc, map50=None), "map50")[0] is None
    assert objective_value(make_report(sc, objects=0), "map50")[0] is None
    assert objective_value(make_report(sc), "slice_recall", [])[0] is None
