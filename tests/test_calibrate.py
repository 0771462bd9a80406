"""Calibration to real data (policy.calibrate, `synthloop calibrate`): distance, sampler,
refusals, CLI, and a planted-target recovery with real EGL renders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from shardmaker import edit_coco, make_shard, read_json, rewrite_json

from flows.cli import main
from generator.errors import ConfigError, DataError
from generator.params import Component, Distribution, GenerationParams, load_params
from generator.sampling import sample_value
from generator.scenario import load_scenario
from policy.calibrate import CalibrationOptions, calibrate
from policy.calibration_data import load_real
from policy.calibration_distance import (
    MISSING_DISTANCE,
    ConditionRef,
    Measured,
    Objective,
    condition_refs,
    condition_scale,
    wasserstein,
)
from policy.calibration_render import value_at
from policy.calibration_search import Block, density_ratio, reweighted_proposal
from policy.units import numeric_summary

BRIGHT = ConditionRef("brightness", "stat.brightness", "image")


def test_wasserstein_is_in_units_of_the_real_spread() -> None:
    real = np.random.default_rng(0).normal(100, 20, 2000)
    scale = condition_scale(real, np.zeros(0))
    assert scale == pytest.approx(2 * 0.6745 * 20, rel=0.05)  # the IQR of a normal
    assert wasserstein(real, real, scale) == 0.0
    assert wasserstein(real, real + scale, scale) == pytest.approx(1.0)
    assert wasserstein(real, np.zeros(0), scale) == MISSING_DISTANCE


def test_scale_falls_back_when_the_real_spread_is_zero() -> None:
    assert condition_scale(np.array([0, 0, 0, 0, 1.0]), np.zeros(0)) == pytest.approx(0.4)  # IQR 0 -> std
    assert condition_scale(np.zeros(10), np.array([0.0, 2.0])) == pytest.approx(1.0)  # -> reference std
    assert condition_scale(np.zeros(10), np.zeros(3)) == 1.0


def test_objective_is_the_mean_over_conditions_and_log_compares_sharpness() -> None:
    rng = np.random.default_rng(1)
    images = pd.DataFrame({"stat.brightness": rng.uniform(0, 200, 50), "stat.sharpness": rng.lognormal(5, 1, 50)})
    real = Measured(images=images, objects=None)
    sharp = ConditionRef("blur", "stat.sharpness", "image")
    assert sharp.log and not BRIGHT.log
    obj = Objective([BRIGHT, sharp], real, real)
    shifted = images.assign(**{"stat.brightness": images["stat.brightness"] + obj.scales["brightness"]})
    d = obj(Measured(images=shifted, objects=None))
    assert d.per_condition == pytest.approx({"brightness": 1.0, "blur": 0.0})
    assert d.total == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="no condition left"):
        Objective([], real, real)


def test_unlabeled_sets_measure_no_object_or_count_conditions() -> None:
    s = load_scenario("digits")
    refs = {r.name: r for r in condition_refs(s)}
    unlabeled = Measured(images=pd.DataFrame({"stat.brightness": [1.0] * 9, "n_objects": [0] * 9}), objects=None)
    assert unlabeled.values(refs["brightness"]).size == 9
    assert unlabeled.values(refs["count"]).size == 0 and unlabeled.values(refs["object_size"]).size == 0
    with pytest.raises(ConfigError, match=r"--conditions: 'nope'.*available: brightness"):
        condition_refs(s, ["nope"])


@pytest.mark.parametrize("name, dist", [
    ("light.intensity", Distribution(kind="truncnormal", center=6.0, width=1.0)),
    ("digits.count", Distribution(kind="truncnormal", center=3.5, width=0.6)),  # int: padded ends, rounding
    ("occluders.count", Distribution(kind="uniform")),
    ("camera.fov", Distribution(kind="beta", center=30.0, width=5.0)),
    ("background.kind", Distribution(kind="categorical", weights={"solid": 3.0, "photo": 1.0})),
])
def test_quantile_values_follow_the_generator_sampler(name: str, dist: Distribution) -> None:
    """The coupled trial sampler draws from exactly the distribution generator.sampling does."""
    p = load_scenario("digits").parameters[name]
    rng = np.random.default_rng(2)
    ours = [value_at(p, dist, u) for u in rng.random(800)]
    theirs = [sample_value(p, dist, rng) for _ in range(800)]
    if p.is_numeric:
        assert stats.ks_2samp(ours, theirs).pvalue > 0.01
    else:
        a, b = pd.Series(ours).value_counts(normalize=True), pd.Series(theirs).value_counts(normalize=True)
        assert set(a.index) == set(b.index) == {"solid", "photo"}
        assert (a - b).abs().max() < 0.06


def test_reweighting_moves_a_parameter_toward_the_real_condition() -> None:
    """Condition = parameter + noise; real drawn at 0.8 of the range: the proposal's centre follows."""
    s = load_scenario("digits")
    rng = np.random.default_rng(3)
    x = rng.uniform(0.8, 8.0, 400)  # light.intensity, uniform start
    images = pd.DataFrame({"param.light.intensity": x, "stat.brightness": 20 * x + rng.normal(0, 5, 400)})
    real = 20 * rng.normal(0.8 + 0.8 * 7.2, 0.3, 300) + rng.normal(0, 5, 300)
    block = Block(BRIGHT, ["light.intensity"], {})
    start = GenerationParams(scenario="digits")
    d = reweighted_proposal(s, block, real, Measured(images=images, objects=None), start)["light.intensity"]
    centre, width = numeric_summary(s.parameters["light.intensity"], d)
    assert abs(centre - 0.8) < 0.08 and width < 0.15
    assert np.allclose(density_ratio(real, np.zeros(0)), np.ones(0))


def _real_test_shard(tmp_path: Path) -> Path:
    shard = make_shard(tmp_path / "real-test", n=4, kind="real")
    manifest = read_json(shard, "manifest.json")
    manifest["split"] = "real-test"
    rewrite_json(shard, "manifest.json", manifest)
    return shard


def test_refusals_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"held-out real-test split.*calibrate on real-val") as e:
        load_real(_real_test_shard(tmp_path), 100, 0)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="held-out real-test"):  # its images as a plain frames directory
        load_real(tmp_path / "real-test" / "images", 100, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no manifest\.json and no image files"):
        load_real(tmp_path / "empty", 100, 0)
    with pytest.raises(ConfigError, match="holds shard"):  # e.g. the whole `data real` output
        load_real(tmp_path, 100, 0)
    with pytest.raises(ConfigError, match="is not a directory"):
        load_real(tmp_path / "missing", 100, 0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x\.png.*decodable"):
        load_real(tmp_path / "bad", 100, 0)
    s = load_scenario("digits")
    mixture = GenerationParams(scenario="digits", components=[Component(weight=1.0)])
    with pytest.raises(ConfigError, match="plain params file"):
        calibrate(s, tmp_path / "empty", mixture, CalibrationOptions(backend="fake"))
    with pytest.raises(ConfigError, match="--parameters: 'nope'"):
        CalibrationOptions(parameters=("nope",)).check(s)


def _frames(path: Path, n: int, level: int) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(level)
    for i in range(n):
        img = np.clip(rng.normal(level, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path / f"{i:03d}.png")
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``synthloop calibrate`` in-process: exit code and stderr."""
    capsys.readouterr()
    code = main(["calibrate", *args])
    return code, capsys.readouterr().err


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, expect in [
        (["--scenario", "nope", "--real", str(tmp_path)], "unknown scenario 'nope'"),
        (["--scenario", "digits", "--real", str(_real_test_shard(tmp_path))], "held-out real-test"),
        (["--scenario", "digits", "--real", str(tmp_path / "missing")], "is not a directory"),
        (["--scenario", "digits", "--real", str(tmp_path), "--trials", "1"], "--trials: must be an integer >= 2"),
    ]:
        code, err = _cli(capsys, *args, "--out", str(tmp_path / "p.yaml"))
        assert code == 2, err
        assert err.startswith("error: ") and err.strip().count("\n") == 0 and expect in err, err
    assert not (tmp_path / "p.yaml").exists()


def test_cli_tiny_run_on_unlabeled_frames_writes_params_and_report(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Fake backend (no GL): the plumbing, the files and the refusal-free path."""
    frames = _frames(tmp_path / "frames", 12, 60)
    out, report = tmp_path / "params.yaml", tmp_path / "rep"
    code, err = _cli(capsys, "--scenario", "digits", "--real", str(frames), "--out", str(out), "--report",
                     str(report), "--trials", "4", "--images-per-trial", "6", "--size", "32", "32", "--backend", "fake")
    assert code == 0, err
    assert "trial 4/4" in err
    params = load_params(out, load_scenario("digits"))  # valid for the scenario
    assert params.uniform_share == pytest.approx(0.1) and not params.is_mixture
    data = json.loads((report / "calibration.json").read_text())
    assert data["real"]["kind"] == "frames" and data["trials_run"] == 4 and data["seed"] == 0
    assert set(data["conditions"]) <= {"brightness", "clutter", "blur", "noise"}  # image-level only
    assert (report / "calibration.md").read_text().startswith("# Calibration")
    assert (report / "calibration.png").stat().st_size > 1000


def _strip(shard: Path, out: Path) -> Path:
    """A real-like copy of a rendered shard: pixels and labels only (no sampled values, no stored
    measurements: the evaluator re-measures stats and mask conditions from pixels)."""
    shutil.copytree(shard, out)

    def strip(coco: dict) -> None:
        for img in coco["images"]:
            for k in ("conditions", "stats", "intrinsics"):
                img.pop(k, None)
        for a in coco["annotations"]:
            for k in ("attributes", "object_contrast", "stroke_width", "slant", "pose"):
                a.pop(k, None)

    edit_coco(out, strip)
    (out / "conditions.parquet").unlink()
    manifest = read_json(out, "manifest.json")
    for k in ("params", "scenario", "seed", "fingerprint"):
        manifest.pop(k, None)
    manifest.update(kind="real", split="real-val", fingerprint="planted")
    manifest["files"].pop("conditions.parquet")
    rewrite_json(out, "manifest.json", manifest)
    return out


PLANTED = {  # parameter: (distribution, the condition it drives)
    "sensor.exposure": (Distribution(kind="truncnormal", center=-0.5, width=0.1), "brightness"),
    "digit.size": (Distribution(kind="truncnormal", center=0.8, width=0.05), "object_size"),
    "material.contrast": (Distribution(kind="truncnormal", center=0.4, width=0.04), "object_contrast"),
    "digit.slant": (Distribution(kind="truncnormal", center=15.0, width=3.0), "slant"),
}


@pytest.mark.slow
@pytest.mark.render
def test_planted_target_is_recovered(tmp_path: Path) -> None:
    """Render "real" data with known non-uniform params, strip it to pixels + labels, calibrate
    from uniform, and compare.

    Measured (64², 48 real images, 14 trials × 24 images, seed 0; docs/calibration.md): mean
    distance 0.76 → 0.23; centre errors in range units: sensor.exposure −0.01, digit.size +0.15,
    material.contrast +0.03, digit.slant −0.13; ~20–35 s on 2 busy cores. Asserted: the mean
    distance at least halves, every planted condition's distance falls, every centre within 0.2.
    """
    from generator.pipeline import RenderJob, render_shard

    s = load_scenario("digits")
    target = GenerationParams(scenario="digits", distributions={k: d for k, (d, _) in PLANTED.items()})
    rendered = render_shard(RenderJob(s, target, n=48, seed=7, width=64, height=64), tmp_path / "target").path
    real = _strip(rendered, tmp_path / "real-val")
    assert "param.digit.size" not in load_real(real, 100, 0).measured.objects.columns
    opts = CalibrationOptions(trials=14, images_per_trial=24, width=64, height=64, trials_per_block=1,
                              blocks_per_round=2, conditions=tuple(c for _, c in PLANTED.values()),
                              parameters=tuple(PLANTED))
    result = calibrate(s, real, None, opts)
    rep = result.report
    errors = {}
    for name, (dist, cond) in PLANTED.items():
        want, _ = numeric_summary(s.parameters[name], dist)
        got, _ = numeric_summary(s.parameters[name], result.params.distributions[name])
        errors[name] = round(got - want, 3)
        print(f"{cond}: distance {rep['conditions'][cond]['distance']}; {name} centre error {errors[name]} range units")
    print(f"mean distance {rep['distance']}, {rep['seconds']} s")
    assert rep["distance"]["after"] < 0.5 * rep["distance"]["before"], rep["distance"]
    assert rep["distance"]["improved"]
    for name, (_, cond) in PLANTED.items():
        assert abs(errors[name]) < 0.2, errors
        c = rep["conditions"][cond]["distance"]
        assert c["after"] < c["before"], (cond, c)


def test_same_seed_same_result(tmp_path: Path) -> None:
    """Reproducible as a feature (fake backend: byte-identical renders): same seed ⇒ same params
    and trial distances; another seed ⇒ other trial images."""
    frames = _frames(tmp_path / "frames", 10, 90)
    s = load_scenario("digits")

    def run(seed: int) -> tuple[dict, list[float]]:
        opts = CalibrationOptions(trials=4, images_per_trial=6, seed=seed, width=32, height=32, backend="fake")
        r = calibrate(s, frames, None, opts)
        return r.params.to_dict(), [t.distance for t in r.trials]

    first = run(0)
    assert run(0) == first
    assert run(1)[1] != first[1]


def test_start_params_are_kept_where_not_fitted(tmp_path: Path) -> None:
    """--params START: parameters calibration does not fit keep their start distribution; the
    result carries the requested uniform share and is plain (fake backend)."""
    frames = _frames(tmp_path / "frames", 10, 120)
    s = load_scenario("digits")
    start = GenerationParams(scenario="digits", uniform_share=0.5,
                             distributions={"digit.class": Distribution(kind="fixed", value="7")})
    opts = CalibrationOptions(trials=3, images_per_trial=6, width=32, height=32, backend="fake", uniform_share=0.2)
    result = calibrate(s, frames, start, opts)
    assert result.params.distributions["digit.class"] == start.distributions["digit.class"]
    assert result.params.uniform_share == 0.2 and not result.params.is_mixture
    assert result.report["params"]["before"]["distributions"] == start.to_dict()["distributions"]
