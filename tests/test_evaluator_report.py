"""End to end on a small shard: evaluate + write_report, refusals, determinism, atomicity."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from PIL import Image
from shardmaker import DEMO_SPEC, demo_scenario, make_shard, read_json, real_info, rewrite_json

import evaluator.report
from evaluator import SCHEMA_VERSION, EvalOptions, evaluate, write_report
from evaluator.checks import check_model, check_shard, resolve_scenario
from evaluator.predict import predict_shard
from evaluator.testing import OracleDetector
from generator.errors import ConfigError, DataError
from generator.shard import Shard, ShardWriter

SMALL = 150  # px of visible area: the oracle misses objects smaller than this


def _misses_small(ann: dict) -> bool:
    return ann["area"] < SMALL


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Shard:
    return Shard(make_shard(tmp_path_factory.mktemp("ev") / "s", n=40, seed=3))


def _evaluate(shard: Shard, **kw):
    preds = predict_shard(OracleDetector(shard, miss=_misses_small), shard, progress=False)
    return evaluate(shard, preds, demo_scenario(), EvalOptions(min_support=10, resamples=50), **kw)


def test_planted_size_failure_is_found_and_reported(shard, tmp_path):
    ev = _evaluate(shard, model={"path": "fake.pt", "scenario": "demo"})
    r = ev.report
    top = r["weak_slices"][0]
    assert (top["condition"], top["side"], top["parameters"]) == ("size", "low", ["object.scale"])
    assert top["recall"] < r["overall"]["recall"] and top["ci"][1] < r["overall"]["recall"]
    assert {w["condition"] for w in r["weak_slices"]} == {"size"}

    out = write_report(ev, shard, tmp_path / "report")
    assert sorted(p.name for p in out.iterdir()) == ["gallery.png", "objects.parquet", "report.json",
                                                      "report.md", "slices.csv"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["schema_version"] == SCHEMA_VERSION
    for key in ("kind", "model", "data", "scenario", "settings", "overall", "per_class",
                "conditions", "slices", "weak_slices", "counts", "gallery"):
        assert key in saved
    assert saved["data"]["fingerprint"] == shard.fingerprint
    assert {"map", "map50", "map75", "recall", "recall_ci", "precision", "ap"} <= set(saved["overall"])
    assert len(saved["per_class"]) == len(shard.classes)
    assert set(saved["weak_slices"][0]) >= {"condition", "column", "range", "side", "parameters",
                                            "recall", "ci", "gap", "support", "score"}
    csv = pd.read_csv(out / "slices.csv")
    assert len(csv) == len(saved["slices"]) and "recall_lo" in csv.columns
    md = (out / "report.md").read_text()
    assert "Weak slices" in md and "`object.scale`" in md and "mAP@0.5" in md
    with Image.open(out / "gallery.png") as g:
        assert g.width > 100 and g.height > 100
    worst = saved["gallery"]["images"]
    assert worst and worst[0]["missed"] >= 1
    objects = pd.read_parquet(out / "objects.parquet")  # which true objects were found
    assert sorted(objects["ann_id"]) == sorted(a["id"] for a in shard.coco["annotations"])
    assert objects["detected"].sum() == round(saved["overall"]["recall"] * len(objects))
    small = {a["id"] for a in shard.coco["annotations"] if _misses_small(a)}
    assert set(objects.loc[~objects["detected"], "ann_id"]) == small


def test_same_inputs_give_identical_reports(shard):
    assert _evaluate(shard).report == _evaluate(shard).report


def test_perfect_detector_has_no_weak_slices_and_a_card_gallery(shard, tmp_path):
    preds = predict_shard(OracleDetector(shard), shard, progress=False)
    ev = evaluate(shard, preds, demo_scenario(), EvalOptions(resamples=0))
    assert ev.report["overall"]["recall"] == 1.0 and ev.report["overall"]["map50"] == 1.0
    assert ev.report["weak_slices"] == [] and ev.report["gallery"]["images"] == []
    write_report(ev, shard, tmp_path / "r")
    assert (tmp_path / "r" / "gallery.png").is_file()


def test_empty_predictions_are_reported_not_a_crash(shard):
    r = evaluate(shard, [], demo_scenario(), EvalOptions(resamples=0)).report
    assert r["overall"]["map"] == 0.0 and r["overall"]["recall"] == 0.0
    assert r["overall"]["precision"] is None


def _real_test(tmp_path) -> Shard:
    path = make_shard(tmp_path / "real", n=6, kind="real")
    manifest = read_json(path, "manifest.json")
    manifest["split"] = "real-test"
    rewrite_json(path, "manifest.json", manifest)
    return Shard(path)


def test_real_test_is_refused_without_final_report(tmp_path):
    shard = _real_test(tmp_path)
    with pytest.raises(DataError, match=r"real-test.*--final-report"):
        evaluate(shard, [], demo_scenario())
    r = evaluate(shard, [], demo_scenario(), EvalOptions(resamples=0), final_report=True).report
    assert r["final_report"] is True and r["data"]["split"] == "real-test"


def test_empty_shard_class_and_scenario_mismatch_are_refused(tmp_path, shard):
    with ShardWriter(tmp_path / "empty", real_info(["a", "b", "c"])):
        pass
    with pytest.raises(DataError, match="no images"):
        check_shard(Shard(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"class list \['x'\] does not match"):
        check_model(shard, ["x"], "demo")
    with pytest.raises(DataError, match=r"scenario 'digits'.*scenario 'demo'"):
        check_model(shard, shard.classes, "digits")
    check_model(shard, shard.classes, "demo")
    assert resolve_scenario(None, shard, "demo").name == "demo"  # spec embedded in the manifest
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**DEMO_SPEC, "name": "other"}))
    with pytest.raises(ConfigError, match="--scenario: 'other' differs"):
        resolve_scenario(str(other), shard, "demo")


def test_report_directory_is_atomic(shard, tmp_path, monkeypatch):
    ev = _evaluate(shard)

    def broken(*args, **kwargs):
        raise RuntimeError("gallery failed")

    monkeypatch.setattr(evaluator.report, "render_gallery", broken)
    with pytest.raises(RuntimeError):
        write_report(ev, shard, tmp_path / "r")
    assert list(tmp_path.iterdir()) == []  # neither the report nor a temp dir is left


def test_one_number_rule_for_every_report() -> None:
    """generator.fmt.number: what every report and table prints for a value (it was four copies
    that disagreed on ints, NaN and non-numbers)."""
    import numpy as np

    from generator.fmt import number

    assert [number(x) for x in (0.12345, 2, np.float32(0.5), np.int64(3))] == ["0.123", "2.000", "0.500", "3.000"]
    assert [number(x) for x in (None, float("nan"), float("inf"), True, "0.5")] == ["–"] * 5
    assert number(0.000123456, 4, "g") == "0.0001235" and number(1.5, 1) == "1.5"
