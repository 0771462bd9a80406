"""Failure → parameter moves, without Optuna: direction and size checked on a toy shard whose
laws are known (pixel size falls with camera distance, brightness rises with light)."""

from __future__ import annotations

import numpy as np
import pytest
from policysupport import digits, make_report, toy_conditions, weak_slice

from generator.params import GenerationParams, uniform_params, validate_params
from policy.evidence import EvidenceOptions, coverage
from policy.moves import Knobs, apply_knobs, make_plan
from policy.reports import pooled_weak_slices
from policy.units import numeric_summary

HEURISTIC = Knobs(step=1.0, width_scale=1.0, uniform_share=0.3, n_slices=3)


@pytest.fixture(scope="module")
def sc():
    return digits()


@pytest.fixture(scope="module")
def shard(sc):
    return toy_conditions(sc, n_images=300, seed=1)


def _move(sc, weak, df, knobs=HEURISTIC, current=None):
    current = current or uniform_params(sc)
    plan = make_plan(sc, current, pooled_weak_slices([make_report(sc, weak)], sc), df, 3,
                     EvidenceOptions())
    params, changes = apply_knobs(sc, current, plan, knobs)
    validate_params(params, sc)
    return params, {c.parameter: c for c in changes}, plan


def _centre(sc, params: GenerationParams, name: str) -> float:
    """Centre in range units (0.5 = the middle of a uniform parameter)."""
    return numeric_summary(sc.parameters[name], params.distributions.get(name))[0]


def test_objects_smaller_than_any_synthetic_push_camera_away_and_digits_smaller(sc, shard):
    lo, hi = 2.0, 0.9 * float(shard["pixel_size"].min())  # real digits below every synthetic one
    params, changes, _ = _move(sc, [weak_slice(sc, "object_size", lo, hi)], shard)
    assert _centre(sc, params, "camera.distance") > 0.85  # from 0.5: pushed to the far end
    assert _centre(sc, params, "digit.size") < 0.15
    assert changes["camera.distance"].evidence["method"] == "push"
    assert changes["camera.distance"].evidence["rho"] < -0.3
    assert params.distributions["camera.distance"].kind == "truncnormal"
    assert params.uniform_share == pytest.approx(0.3)
    assert "light.intensity" not in params.distributions  # not implicated: unchanged
    # closing the loop on the toy renderer: the next shard's digits really are smaller
    after = toy_conditions(sc, params, n_images=300, seed=2)
    assert after["pixel_size"].median() < 0.6 * shard["pixel_size"].median()


def test_dark_images_turn_light_intensity_down(sc, shard):
    lo = float(shard["stat.brightness"].min())
    hi = float(shard["stat.brightness"].quantile(0.15))  # covered by the synthetic data
    params, changes, _ = _move(sc, [weak_slice(sc, "brightness", lo, hi)], shard)
    assert changes["light.intensity"].evidence["method"].startswith("conditional")
    assert changes["light.intensity"].centre_shift < -0.2
    assert params.distributions["light.intensity"].center < 3.0  # uniform centre was 4.15
    after = toy_conditions(sc, params, n_images=300, seed=2)
    before_share = float(((shard["stat.brightness"] >= lo) & (shard["stat.brightness"] <= hi)).mean())
    after_share = float(((after["stat.brightness"] >= lo) & (after["stat.brightness"] <= hi)).mean())
    assert after_share > 2 * before_share


def test_bright_images_turn_light_intensity_up(sc, shard):
    lo = float(shard["stat.brightness"].quantile(0.85))
    params, _, _ = _move(sc, [weak_slice(sc, "brightness", lo, 300.0, side="high")], shard)
    assert _centre(sc, params, "light.intensity") > 0.7


def test_cluttered_backgrounds_shift_categorical_weights(sc, shard):
    params, changes, _ = _move(sc, [weak_slice(sc, "clutter", 14.0, 30.0, side="high")], shard)
    w = params.distributions["background.kind"].weights
    assert params.distributions["background.kind"].kind == "categorical"
    assert w["noise"] + w["checker"] > 0.7 and w["solid"] < 0.05
    assert changes["background.kind"].weight_shift > 0.3


def test_parameters_without_a_relation_are_left_alone(sc, shard):
    hi = float(shard["stat.brightness"].quantile(0.15))
    params, _, plan = _move(sc, [weak_slice(sc, "brightness", 0.0, hi)], shard)
    ignored = {i["parameter"]: i["reason"] for i in plan.ignored}
    assert "light.ambient" in ignored and "no monotone relation" in ignored["light.ambient"]
    assert "light.ambient" not in params.distributions


def test_without_synthetic_conditions_nothing_moves(sc):
    current = uniform_params(sc)
    plan = make_plan(sc, current, pooled_weak_slices(
        [make_report(sc, [weak_slice(sc, "object_size", 2, 6)])], sc), None, 3, EvidenceOptions())
    assert not plan.movable
    assert all("synthetic conditions" in i["reason"] for i in plan.ignored)


def test_step_n_slices_and_width_scale_are_honoured(sc, shard):
    weak = [weak_slice(sc, "object_size", 2.0, 5.0, score=9.0),
            weak_slice(sc, "brightness", 0.0, float(shard["stat.brightness"].quantile(0.15)), rank=2)]
    full, _, _ = _move(sc, weak, shard)
    half, ch, _ = _move(sc, weak, shard, Knobs(step=0.5, width_scale=2.0, uniform_share=0.5, n_slices=1))
    assert "light.intensity" in full.distributions and "light.intensity" not in half.distributions
    d_full = _centre(sc, full, "camera.distance") - 0.5
    assert _centre(sc, half, "camera.distance") - 0.5 == pytest.approx(d_full / 2, abs=1e-4)
    assert ch["camera.distance"].width[1] > 0.15  # width target 0.15 doubled, moved halfway
    assert half.uniform_share == 0.5


def test_same_inputs_same_moves(sc, shard):
    weak = [weak_slice(sc, "object_size", 2.0, 5.0)]
    assert _move(sc, weak, shard)[0] == _move(sc, weak, shard)[0]


def test_coverage_share():
    assert coverage(10, 20, 0, 5) == 0.0
    assert coverage(10, 20, 5, 15) == pytest.approx(0.5)
    assert coverage(10, 20, 12, 18) == 1.0
    assert coverage(10, 20, 15, 15) == 1.0 and np.isclose(coverage(10, 20, 25, 25), 0.0)
