"""Slices on planted data: a condition that causes misses comes out first and maps to its
parameters; conditions without effect are not reported; bins and intervals are right."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.conditions import condition_tables
from evaluator.matching import match_predictions
from evaluator.slices import SliceOptions, assign_bins, bin_edges, condition_slices, weak_slices
from evaluator.stats import wilson_interval
from generator.scenario import ConditionSpec, load_scenario

SCENARIO = """
name: planted
version: 1
classes: ["a", "b"]
builder: "nowhere:build"
parameters:
  object.scale: {type: float, range: [0.1, 0.5], default: 0.3, scope: object, conditions: [size]}
  camera.distance: {type: float, range: [2, 10], default: 5, conditions: [size]}
  light.intensity: {type: float, range: [0.2, 1.0], default: 0.6, conditions: [brightness]}
  digit.slant: {type: float, range: [-20, 20], default: 0, scope: object, conditions: [slant]}
  font: {type: categorical, choices: [x, y], default: x, scope: object, conditions: [stroke]}
conditions:
  size: {column: pixel_size, level: object}
  brightness: {column: stat.brightness, level: image, bins: [0, 100, 255]}
  slant: {column: slant, level: object}
  stroke: {column: stroke_width, level: object}
  count: {column: n_objects, level: image}
"""


def _planted():
    """60 images × 2 objects. Object o has size 4 + 2·(o mod 20) px and is missed when smaller
    than 12 px (recall 0.8 overall). Slant and brightness change every 20 objects / 10 images,
    so each of their bins holds every size equally often: no effect. Every third image has a
    6×6 false positive (score 0.5)."""
    images, anns, preds = [], [], []
    for i in range(60):
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 100, "height": 50,
                       "stats": {"brightness": 40.0 + 30 * (i // 10), "contrast": 10.0}})
        for j in range(2):
            o = 2 * i + j
            s = 4.0 + 2 * (o % 20)
            box = [50.0 * j, 0.0, s, s]
            anns.append({"id": o + 1, "image_id": i + 1, "category_id": 1 + o % 2, "bbox": box,
                         "area": s * s, "iscrowd": 0, "slant": -15.0 + 5 * (o // 20)})
            if s >= 12:
                preds.append({"image_id": i + 1, "category_id": 1 + o % 2, "bbox": box,
                              "score": 0.9})
        if i % 3 == 0:
            preds.append({"image_id": i + 1, "category_id": 1, "bbox": [80.0, 40.0, 6.0, 6.0],
                          "score": 0.5})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    return coco, preds


@pytest.fixture
def evaluated(tmp_path):
    path = tmp_path / "planted.yaml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    coco, preds = _planted()
    matches = match_predictions(coco, preds)
    tables = condition_tables(coco)
    conditions, slices = condition_slices(scenario, tables, matches,
                                          SliceOptions(min_support=35, resamples=50),
                                          np.random.default_rng(0))
    weak = weak_slices(slices, scenario, float(matches.gt["detected"].mean()))
    return conditions, slices, weak


def test_planted_small_objects_come_first_and_map_to_their_parameters(evaluated):
    _, _, weak = evaluated
    top = weak[0]
    assert (top["condition"], top["column"], top["side"]) == ("size", "pixel_size", "low")
    assert top["parameters"] == ["object.scale", "camera.distance"]
    assert top["parameter_specs"]["object.scale"]["range"] == [0.1, 0.5]
    assert top["range"][0] == 4.0 and 12.0 < top["range"][1] < 14.0
    # sizes 4..12 px: 30 objects, only the 6 of 12 px found
    assert (top["support"], top["recall"]) == (30, pytest.approx(0.2))
    assert top["ci"] == pytest.approx(list(wilson_interval(6, 30)))
    assert top["gap"] == pytest.approx(0.6)
    assert top["score"] == pytest.approx(0.6 * np.sqrt(30))
    assert top["overall_recall"] == pytest.approx(0.8)


def test_conditions_without_effect_are_not_significant(evaluated):
    _, slices, weak = evaluated
    assert {w["condition"] for w in weak} == {"size"}
    for s in slices:
        if s["condition"] in ("brightness", "slant", "count") and s["support_objects"]:
            assert s["recall"] == pytest.approx(0.8) and not s["significant"]


def test_precision_follows_the_level_of_the_condition(evaluated):
    conditions, slices, _ = evaluated
    by = {(s["condition"], s["bin"]): s for s in slices}
    # object level, box-computable: 20 small FPs land in the low size bin next to its 6 TPs
    assert (by["size", 0]["tp"], by["size", 0]["fp"]) == (6, 20)
    assert by["size", 0]["precision"] == pytest.approx(6 / 26)
    assert by["size", 1]["precision"] == 1.0
    # object level, not computable from a box: FPs cannot be placed
    assert all(s["precision"] is None and s["ap"] is None
               for s in slices if s["condition"] == "slant")
    # image level: FPs go with their image
    assert sum(s["fp"] for s in slices if s["condition"] == "brightness") == 20
    assert all(s["precision"] is not None for s in slices if s["condition"] == "brightness")
    cond = {c["name"]: c for c in conditions}
    assert cond["slant"]["fp_placeable"] is False and cond["size"]["fp_placeable"] is True


def test_ap_only_with_enough_support_and_with_an_interval(evaluated):
    _, slices, _ = evaluated
    by = {(s["condition"], s["bin"]): s for s in slices}
    dark = by["brightness", 0]  # 40 objects >= min_support 35
    # per class 16 of 20 found, all scored above the FPs: precision 1 up to recall 0.8,
    # i.e. 81 of COCO's 101 recall points
    assert dark["ap"] == pytest.approx(81 / 101)
    lo, hi = dark["ap_ci"]
    assert lo <= dark["ap"] <= hi and lo < hi
    sizes = [s for s in slices if s["condition"] == "size"]
    assert all(s["support_objects"] == 30 and s["ap"] is None and s["ap_ci"] is None for s in sizes)


def test_bins_ranges_sides_and_unavailable_conditions(evaluated):
    conditions, slices, _ = evaluated
    cond = {c["name"]: c for c in conditions}
    assert cond["stroke"]["status"] == "unavailable" and "stroke_width" in cond["stroke"]["reason"]
    assert cond["brightness"]["binning"] == "bins" and cond["size"]["binning"] == "quantiles"
    bright = [s for s in slices if s["condition"] == "brightness"]
    assert [s["range"] for s in bright] == [[0.0, 100.0], [100.0, 255.0]]
    assert [s["side"] for s in bright] == ["low", "high"]
    assert [s["support_images"] for s in bright] == [20, 40]
    count = [s for s in slices if s["condition"] == "count"]
    assert len(count) == 1 and count[0]["side"] == "all"
    sizes = [s for s in slices if s["condition"] == "size"]
    assert sum(s["support_objects"] for s in sizes) == 120
    assert [s["side"] for s in sizes] == ["low", "middle", "middle", "high"]


def test_bin_edges_and_assignment():
    v = np.array([-5.0, 0.0, 1.0, 2.0, 9.0, np.nan])
    edges = bin_edges(v, ConditionSpec(column="x", bins=[0, 1, 5]))
    assert edges.tolist() == [-5.0, 1.0, 9.0]  # outer edges stretched to the data
    assert assign_bins(v, edges).tolist() == [0, 0, 1, 1, 1, -1]
    ties = np.array([0.0] * 8 + [1.0, 2.0])
    q = bin_edges(ties, ConditionSpec(column="x", quantiles=4))
    assert q[0] == 0.0 and len(q) == len(np.unique(q))  # tied quantiles merge
    const = bin_edges(np.ones(5), ConditionSpec(column="x"))
    assert const.tolist() == [1.0, 1.0] and assign_bins(np.ones(2), const).tolist() == [0, 0]
