"""Coverage: realised vs requested distributions, ignored-parameter detection, class balance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from shardmaker import demo_scenario, make_shard

from flows.cli import main
from generator.coverage import (
    _edges,
    class_balance,
    coverage_report,
    expected_probs,
    to_markdown,
)
from generator.params import Distribution, GenerationParams
from generator.sampling import UNIFORM, sample_value
from generator.scenario import ParamSpec

FLOAT = ParamSpec(type="float", range=(0.0, 2.0), default=1.0)
INT = ParamSpec(type="int", range=(1, 6), default=3)
CAT = ParamSpec(type="categorical", choices=["x", "y", "z"], default="x")


@pytest.mark.parametrize(("spec", "dist", "n"), [
    (FLOAT, Distribution(kind="uniform", low=0.5, high=1.5), 4000),
    (FLOAT, Distribution(kind="truncnormal", center=0.4, width=0.5), 1500),
    (FLOAT, Distribution(kind="beta", center=1.3, width=0.3), 4000),
    (INT, Distribution(kind="uniform", low=2, high=5), 4000),
    (INT, Distribution(kind="truncnormal", center=1.5, width=1.5), 1500),
    (INT, Distribution(kind="beta", center=4.0, width=1.0), 4000),
    (INT, Distribution(kind="fixed", value=4), 500),
    (CAT, Distribution(kind="categorical", weights={"x": 1, "z": 3}), 4000),
])
def test_expected_probs_match_the_sampler(spec: ParamSpec, dist: Distribution, n: int) -> None:
    """The analytic bin probabilities equal what sampling.sample_value draws (mixture included)."""
    share = 0.25
    params = GenerationParams(scenario="t", uniform_share=share, distributions={"p": dist})
    rng = np.random.default_rng(7)
    draws = [sample_value(spec, UNIFORM if rng.random() < share else dist, rng) for _ in range(n)]
    if spec.is_numeric:
        edges = _edges(spec, n)
        exp = expected_probs(spec, params, "p", edges)
        obs = np.bincount(np.searchsorted(edges[1:-1], draws, side="right"), minlength=len(exp))
    else:
        exp = expected_probs(spec, params, "p")
        obs = np.array([sum(d == c for d in draws) for c in spec.choices or []])
    assert exp.sum() == pytest.approx(1.0)
    keep = exp > 0
    assert obs[~keep].sum() == 0
    assert stats.chisquare(obs[keep], exp[keep] * n).pvalue > 1e-3


def _effect(report: dict, name: str) -> dict:
    return next(e for e in report["effects"] if e["parameter"] == name)


def test_clean_shard_has_no_flags(tmp_path: Path) -> None:
    report = coverage_report(make_shard(tmp_path / "s", n=60, seed=1))
    assert report["flags"] == [] and report["ok"]
    assert {e["parameter"]: e["status"] for e in report["effects"]} == {
        "light.intensity": "ok", "background.kind": "ok", "object.scale": "ok",
        "object.count": "not testable"}
    intensity = next(p for p in report["parameters"] if p["name"] == "light.intensity")
    assert sum(b["observed"] for b in intensity["histogram"]) == 60
    assert intensity["p_value"] > 1e-3 and intensity["tvd"] < 0.3


@pytest.mark.parametrize("ignored", ["light.intensity", "background.kind", "object.scale"])
def test_planted_ignored_parameter_is_flagged(tmp_path: Path, ignored: str) -> None:
    """Values vary but the declared condition is independent noise → no measurable effect."""
    report = coverage_report(make_shard(tmp_path / "s", n=60, seed=1, ignore={ignored}))
    assert _effect(report, ignored)["status"] == "no measurable effect"
    assert [f for f in report["flags"] if "no measurable effect" in f] == [
        next(f for f in report["flags"] if f.startswith(f"parameter {ignored}:"))]
    others = [e["status"] for e in report["effects"] if e["parameter"] != ignored]
    assert "no measurable effect" not in others


def test_small_or_fixed_parameters_are_not_flagged(tmp_path: Path) -> None:
    fixed = GenerationParams(scenario="demo", distributions={
        "light.intensity": Distribution(kind="fixed", value=0.5)})
    report = coverage_report(make_shard(tmp_path / "s", n=8, params=fixed, ignore={"object.scale"}))
    assert _effect(report, "light.intensity")["status"] == "not testable"
    assert _effect(report, "object.scale")["status"] == "insufficient data"  # < 30 objects
    assert report["flags"] == []


def test_sampling_mismatch_is_flagged(tmp_path: Path) -> None:
    claimed = GenerationParams(scenario="demo", distributions={
        "light.intensity": Distribution(kind="truncnormal", center=0.3, width=0.1)})
    shard = make_shard(tmp_path / "s", n=60, seed=2, params=claimed,
                       sample_params=GenerationParams(scenario="demo"))
    report = coverage_report(shard)
    flagged = next(p for p in report["parameters"] if p["name"] == "light.intensity")
    assert any("do not match" in f for f in flagged["flags"]) and flagged["tvd"] > 0.3
    assert all(not p["flags"] for p in report["parameters"] if p["name"] != "light.intensity")


def test_uniform_share_mismatch_is_flagged(tmp_path: Path) -> None:
    shard = make_shard(tmp_path / "s", n=40, params=GenerationParams(scenario="demo", uniform_share=0.9),
                       sample_params=GenerationParams(scenario="demo", uniform_share=0.0))
    assert any(f.startswith("uniform_mix:") for f in coverage_report(shard)["flags"])


def test_real_shard_reports_balance_and_conditions(tmp_path: Path) -> None:
    report = coverage_report(make_shard(tmp_path / "r", n=9, kind="real"))
    assert report["scenario"] is None and report["parameters"] == [] and report["effects"] == []
    assert set(report["class_balance"]["counts"]) == set(demo_scenario().classes)
    assert report["conditions"]["source_photo"]["histogram"] == [
        {"bin": "brick", "count": 3}, {"bin": "coffee", "count": 3}, {"bin": "grass", "count": 3}]
    assert "## Class balance" in to_markdown(report)


def test_class_balance_flags() -> None:
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    anns = [{"category_id": 1}] * 30 + [{"category_id": 2}] * 2
    out = class_balance({"categories": cats, "annotations": anns}, max_ratio=10)
    assert out["counts"] == {"a": 30, "b": 2, "c": 0} and "c" in out["flags"][0]
    anns += [{"category_id": 3}] * 2
    out = class_balance({"categories": cats, "annotations": anns}, max_ratio=10)
    assert out["ratio"] == 15.0 and "imbalance" in out["flags"][0]


def test_cli_coverage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_shard(tmp_path / "good", n=40, seed=1)
    bad = make_shard(tmp_path / "bad", n=40, seed=1, ignore={"light.intensity"})
    out, md = tmp_path / "cov.json", tmp_path / "cov.md"
    assert main(["coverage", str(good), "--strict"]) == 0
    assert main(["coverage", str(bad), "--out", str(out), "--markdown", str(md)]) == 0  # report only
    assert main(["coverage", str(bad), "--strict"]) == 1
    assert json.loads(out.read_text())["flags"][0].startswith("parameter light.intensity: no measurable")
    assert "no measurable effect" in md.read_text()
    assert "1 flags" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["nope"], ["EMPTY"], ["BROKEN"],
                                  ["GOOD", "--out", "missing/x.json"]])
def test_cli_coverage_bad_input(args: list[str], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "EMPTY").mkdir()
    make_shard(tmp_path / "GOOD", n=2)
    make_shard(tmp_path / "BROKEN", n=2)
    (tmp_path / "BROKEN" / "annotations.json").write_text('{"annotations": []}')
    argv = ["coverage"] + [str(tmp_path / a) if i == 0 or a.endswith(".json") else a
                           for i, a in enumerate(args)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "missing").exists()
