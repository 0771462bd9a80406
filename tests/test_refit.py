"""The failure re-fit closed loop (policy ``refit``): real-val weighted toward the misses, and a
tilt that moves one capped step toward the re-fit from the base, never further.

Fast: no rendering. The loop wiring (the re-fit computed from each real-val report, its record
in decision.json) runs in the benchmark smoke test (tests/test_loop.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from policysupport import make_report

from generator.errors import ConfigError, DataError
from generator.params import Distribution, GenerationParams, load_params
from generator.scenario import load_scenario
from policy.base import PolicyInputs
from policy.calibration_data import RealSet
from policy.calibration_distance import Measured
from policy.failure_set import failure_weighted
from policy.mixture import BASE, TILT, MixtureOptions
from policy.refit import RefitPolicy
from policy.registry import make_policy
from policy.units import numeric_summary


def _real() -> RealSet:
    images = pd.DataFrame({"image_id": [1, 2, 3], "stat.brightness": [0.2, 0.5, 0.8]})
    objects = pd.DataFrame({"ann_id": [10, 11, 12, 13], "image_id": [1, 1, 2, 3],
                            "pixel_size": [8.0, 30.0, 32.0, 9.0]})
    return RealSet(Measured(images=images, objects=objects), {"path": "real-val", "kind": "shard"})


def _outcomes(missed: set[int]) -> pd.DataFrame:
    ids = [10, 11, 12, 13]
    return pd.DataFrame({"ann_id": ids, "image_id": [1, 1, 2, 3], "detected": [i not in missed for i in ids]})


def test_missed_objects_and_their_images_count_twice_and_shift_the_distribution() -> None:
    real = _real()
    w = failure_weighted(real, _outcomes({10, 13}), weight=2)  # the model misses the two small digits
    assert sorted(w.measured.objects["ann_id"]) == [10, 10, 11, 12, 13, 13]
    assert sorted(w.measured.images["image_id"]) == [1, 1, 2, 3, 3]
    assert w.measured.objects["pixel_size"].mean() < real.measured.objects["pixel_size"].mean()
    assert {k: w.source[k] for k in ("failure_weight", "objects", "missed_objects", "images_with_misses")} == {
        "failure_weight": 2, "objects": 4, "missed_objects": 2, "images_with_misses": 2}
    same = failure_weighted(real, _outcomes(set()), weight=2)  # nothing missed: the real set as it is
    assert same.measured.objects.equals(real.measured.objects) and same.measured.images.equals(real.measured.images)


def test_bad_failure_inputs_are_one_line_errors() -> None:
    real = _real()
    with pytest.raises(ConfigError, match=r"^failure_weight: must be an integer in \[1, 10\], but got 0"):
        failure_weighted(real, _outcomes(set()), weight=0)
    with pytest.raises(DataError, match=r"ann_id 13.*not in the report's objects\.parquet"):
        failure_weighted(real, _outcomes(set()).iloc[:3], weight=2)
    with pytest.raises(DataError, match="no labels"):
        failure_weighted(RealSet(Measured(images=real.measured.images, objects=None)), _outcomes(set()))


def _base() -> GenerationParams:
    return GenerationParams(scenario="digits", distributions={
        "light.intensity": Distribution(kind="truncnormal", center=4.0, width=1.0),
        "background.kind": Distribution(kind="categorical", weights={"photo": 0.5, "solid": 0.5})})


def _target() -> GenerationParams:
    return GenerationParams(scenario="digits", distributions={
        "light.intensity": Distribution(kind="truncnormal", center=1.0, width=0.5),  # far below the base
        "background.kind": Distribution(kind="categorical", weights={"photo": 0.1, "noise": 0.9}),
        "digit.size": Distribution(kind="truncnormal", center=0.7, width=0.1)})


def test_the_tilt_moves_one_capped_step_from_the_base_and_never_accumulates() -> None:
    sc = load_scenario("digits")
    opts = MixtureOptions()
    policy = make_policy("refit", base=_base())
    assert isinstance(policy, RefitPolicy)
    d = policy.propose(PolicyInputs(sc, [make_report(sc)], None, None, _target()))
    params = GenerationParams.model_validate(d.params)
    assert params.uniform_share >= opts.uniform_floor
    comps = {c.name: c for c in params.components or []}
    assert set(comps) == {BASE, TILT} and comps[TILT].weight == pytest.approx(opts.heuristic_tilt_share)
    assert comps[BASE].distributions == _base().distributions
    spec = sc.parameters["light.intensity"]
    c0, _ = numeric_summary(spec, _base().distributions["light.intensity"])
    c1, _ = numeric_summary(spec, comps[TILT].distributions["light.intensity"])
    assert c1 == pytest.approx(c0 - opts.heuristic_max_shift, abs=1e-4)  # capped, toward the re-fit
    bg = comps[TILT].distributions["background.kind"].weights or {}
    assert bg.get("noise", 0) > 0 and bg["photo"] < 0.5  # moved toward the re-fit's weights ...
    assert 0.5 * (abs(bg["photo"] - 0.5) + abs(bg.get("solid", 0) - 0.5) + bg.get("noise", 0)) <= \
        opts.heuristic_max_shift + 1e-6  # ... by at most the cap in total variation
    assert {c["parameter"] for c in d.changes} == {"light.intensity", "background.kind", "digit.size"}
    again = policy.propose(PolicyInputs(sc, [make_report(sc)], params, None, _target()))
    assert again.params == d.params  # the next round starts from the base again: no drift


def test_without_a_refit_the_params_are_the_uniform_share_and_the_base() -> None:
    sc = load_scenario("digits")
    d = make_policy("refit", base=_base()).propose(PolicyInputs(sc, [make_report(sc)]))
    params = GenerationParams.model_validate(d.params)
    assert params.components is None and params.distributions == _base().distributions
    assert d.changes == [] and "no re-fit target" in d.notes[0]


def test_loop_settings_check_the_refit_fields() -> None:
    from flows.loop.state import LoopConfig

    with pytest.raises(ConfigError, match=r"^loop.failure_weight: must be an integer in \[1, 10\], but got 2.5"):
        LoopConfig(workdir="w", policy="refit", failure_weight=2.5).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^loop.refit_trials: "):
        LoopConfig(workdir="w", policy="refit", refit_trials=1).validate()


def _failures(real_val: Path, out: Path, missed_every: int = 2) -> Path:
    """A report directory whose objects.parquet says every ``missed_every``-th object was missed."""
    from generator.shard import Shard

    anns = Shard(real_val).coco["annotations"]
    out.mkdir(parents=True)
    pd.DataFrame({"ann_id": [a["id"] for a in anns], "image_id": [a["image_id"] for a in anns],
                  "category_id": [a["category_id"] for a in anns],
                  "detected": [i % missed_every != 0 for i in range(len(anns))],
                  "score": float("nan"), "iou": float("nan")}).to_parquet(out / "objects.parquet")
    return out


def test_calibrate_cli_fits_real_val_weighted_toward_a_models_misses(
        real: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    failures = _failures(real / "real-val", tmp_path / "report")
    out, rep = tmp_path / "target.yaml", tmp_path / "rep"
    base = ["calibrate", "--scenario", "digits", "--real", str(real / "real-val"), "--trials", "2",
            "--images-per-trial", "4", "--size", "32", "32", "--backend", "fake"]
    assert main([*base, "--failures", str(failures), "--out", str(out), "--report", str(rep)]) == 0
    source = json.loads((rep / "calibration.json").read_text())["real"]
    n = len(pd.read_parquet(failures / "objects.parquet"))
    assert source["failure_weight"] == 2 and source["objects"] == n and source["missed_objects"] == (n + 1) // 2
    capsys.readouterr()
    for args, expect in [(["--failures", str(tmp_path)], "objects.parquet' is missing"),
                         (["--failures", str(failures), "--failure-weight", "0"], "--failure-weight: must be")]:
        assert main([*base, *args, "--out", str(tmp_path / "no.yaml")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.strip().count("\n") == 0 and expect in err, err
    assert not (tmp_path / "no.yaml").exists()


def test_policy_cli_refit_moves_toward_the_target_and_refuses_it_elsewhere(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    sc = load_scenario("digits")
    (tmp_path / "report.json").write_text(json.dumps(make_report(sc)))
    _base().save(tmp_path / "base.yaml")
    _target().save(tmp_path / "target.yaml")
    common = ["policy", "next", "--scenario", "digits", "--report", str(tmp_path / "report.json"),
              "--base", str(tmp_path / "base.yaml"), "--target", str(tmp_path / "target.yaml")]
    assert main([*common, "--policy", "refit", "--out", str(tmp_path / "next.yaml")]) == 0
    nxt = load_params(tmp_path / "next.yaml", sc)
    assert {c.name for c in nxt.components or []} == {BASE, TILT}
    capsys.readouterr()
    assert main([*common, "--policy", "mixture", "--out", str(tmp_path / "no.yaml")]) == 2
    err = capsys.readouterr().err
    assert "--target: only --policy refit" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "no.yaml").exists()
