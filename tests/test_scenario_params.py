"""Scenario and generation-distribution loading, validation and sampling."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from generator.errors import ConfigError
from generator.params import GenerationParams, load_params, uniform_params, validate_params
from generator.sampling import Sampler, sample_value
from generator.scenario import available, load_scenario


def test_builtin_scenarios_load_and_declare_conditions() -> None:
    assert {"digits", "shapes"} <= set(available())
    s = load_scenario("digits")
    assert s.classes == [str(i) for i in range(10)]
    assert "light.intensity" in s.parameters_for_condition("brightness")
    assert "camera.distance" in s.parameters_for_condition("object_size")


def test_unknown_scenario_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"unknown scenario 'nope'; available: .*digits"):
        load_scenario("nope")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"range": [5, 1]}, r"parameters.p.*low <= high"),
        ({"default": 99}, r"default 99 must lie inside range"),
        ({"type": "categorical", "range": None, "choices": []}, r"non-empty `choices`"),
        ({"conditions": ["nowhere"]}, r"names condition 'nowhere'"),
    ],
)
def test_bad_scenario_yaml_names_field_and_rule(tmp_path, patch, message) -> None:
    p = {"type": "float", "range": [0, 1], "default": 0.5, "conditions": ["c"]}
    p.update(patch)
    spec = {
        "name": "x",
        "version": 1,
        "classes": ["a"],
        "builder": "m:f",
        "parameters": {"p": p},
        "conditions": {"c": {"column": "stat.brightness"}},
    }
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=message):
        load_scenario(path)


def test_malformed_yaml_is_one_clear_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML/JSON at line \d+") as exc:
        load_scenario(path)
    assert "\n" not in str(exc.value)


def _params(tmp_path, dists: dict, **kw) -> GenerationParams:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"scenario": "digits", "distributions": dists, **kw}))
    return load_params(path, load_scenario("digits"))


@pytest.mark.parametrize(
    ("dists", "message"),
    [
        ({"no.such": {"kind": "uniform"}}, r"no.such: unknown parameter of scenario 'digits'"),
        ({"light.intensity": {"kind": "uniform", "low": 0, "high": 99}}, r"0.8 <= low <= high <= 8.0"),
        ({"light.intensity": {"kind": "truncnormal", "center": 50, "width": 1}}, r"center: must lie inside"),
        ({"background.kind": {"kind": "categorical", "weights": {"lava": 1}}}, r"keys must be choices"),
        ({"background.kind": {"kind": "truncnormal", "center": 1, "width": 1}}, r"takes categorical"),
        ({"light.intensity": {"kind": "beta", "center": 4, "width": 10}}, r"beta needs width"),
    ],
)
def test_bad_params_are_rejected_with_field_path(tmp_path, dists, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _params(tmp_path, dists)


def test_params_for_another_scenario_rejected() -> None:
    with pytest.raises(ConfigError, match=r"params\.scenario"):
        validate_params(GenerationParams(scenario="shapes"), load_scenario("digits"))


def test_sampling_is_reproducible_and_seed_sensitive() -> None:
    s = load_scenario("digits")
    sampler = Sampler(s, uniform_params(s))
    a = sampler.sample(np.random.default_rng(7))
    b = sampler.sample(np.random.default_rng(7))
    c = sampler.sample(np.random.default_rng(8))
    assert a == b
    assert a != c
    assert len(a.objects) == a.image["digits.count"]


def test_distributions_respect_ranges_and_shapes(tmp_path) -> None:
    s = load_scenario("digits")
    p = _params(
        tmp_path,
        {
            "light.intensity": {"kind": "truncnormal", "center": 1.0, "width": 0.3},
            "camera.distance": {"kind": "beta", "center": 8.0, "width": 1.0},
            "background.kind": {"kind": "categorical", "weights": {"photo": 3, "solid": 1}},
            "digits.count": {"kind": "fixed", "value": 3},
        },
    )
    rng = np.random.default_rng(0)
    li = np.array(
        [sample_value(s.parameters["light.intensity"], p.distributions["light.intensity"], rng) for _ in range(2000)]
    )
    cd = np.array(
        [sample_value(s.parameters["camera.distance"], p.distributions["camera.distance"], rng) for _ in range(2000)]
    )
    bk = [sample_value(s.parameters["background.kind"], p.distributions["background.kind"], rng) for _ in range(2000)]
    assert li.min() >= 0.8 and li.max() <= 8.0 and np.median(li) < 1.5
    assert 7.7 < cd.mean() < 8.3 and 0.7 < cd.std() < 1.3
    assert set(bk) == {"photo", "solid"} and 0.7 < bk.count("photo") / 2000 < 0.8
    assert {len(Sampler(s, p).sample(rng).objects) for _ in range(20)} == {3}


def test_uniform_share_mixes_full_range(tmp_path) -> None:
    s = load_scenario("digits")
    p = _params(tmp_path, {"light.intensity": {"kind": "fixed", "value": 1.0}}, uniform_share=0.5)
    rng = np.random.default_rng(1)
    draws = [Sampler(s, p).sample(rng) for _ in range(400)]
    mixed = [d for d in draws if d.uniform_mix]
    assert 150 < len(mixed) < 250
    assert all(d.image["light.intensity"] == 1.0 for d in draws if not d.uniform_mix)
    assert np.std([d.image["light.intensity"] for d in mixed]) > 1.5
