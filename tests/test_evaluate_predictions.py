"""`synthloop evaluate --predictions DETS.json`: any detector's COCO results file, same report.

The key test trains a tiny CenterNet (150 steps, about 3 s, so ``slow``), evaluates it with
``--model``, dumps its detections to a COCO results file the way a user of another detector
would, and checks that ``--predictions`` on that file writes the same report (every number,
slices.csv and the gallery), only the source block differing. A fast twin does the same with
the stand-in :class:`evaluator.testing.OracleDetector` behind the ``--model`` seam. The other
tests need no model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from shardmaker import DEMO_SPEC, make_shard, read_json, rewrite_json

import evaluator.predict
from evaluator.testing import OracleDetector
from flows.cli import main
from generator.shard import Shard

TINY = {"width": 8, "head_channels": 16, "blocks": [1, 1, 1]}
FAST = ("--resamples", "20", "--min-support", "5", "--no-progress")


@pytest.fixture(scope="module")
def shard_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shard(tmp_path_factory.mktemp("preds") / "s", n=40, seed=3)


def _truth(shard_path: Path) -> list[dict[str, Any]]:
    """Ground truth as detections with score 1 (a perfect detector's results file)."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
             "score": 1.0} for a in Shard(shard_path).coco["annotations"]]


def _write(path: Path, dets: Any) -> Path:
    path.write_text(json.dumps(dets))
    return path


def _evaluate(dets: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--predictions", str(dets), "--data", str(data), "--out", str(out),
                 *FAST, *extra])


def _report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


# --- the key test: our own detector's dumped detections reproduce `--model` exactly ---------

@pytest.fixture(scope="module")
def trained(shard_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer import api

    root = tmp_path_factory.mktemp("model")
    res = api.train([shard_path], root / "model", steps=150, batch_size=8, lr=5e-3, input_size=64,
                    model_options=TINY, augment=False, device="cpu", num_threads=1)
    return Path(res.path)


def _dump_detections(det: Any, shard_path: Path, out: Path) -> Path:
    """What a user does with their own detector: predict every image, write COCO results."""
    shard = Shard(shard_path)
    images = shard.coco["images"]
    results = []
    for start in range(0, len(images), 16):  # evaluate's default --batch-size
        batch = images[start:start + 16]
        for img, dets in zip(batch, det.predict([shard.load_image(i) for i in batch],
                                                score_threshold=0.05), strict=True):
            results += [{"image_id": img["id"], "category_id": int(d["category_id"]),
                         "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])}
                        for d in dets]
    return _write(out, results)


def _same_report_both_ways(model: Path, det: Any, shard_path: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """`--model` report == `--predictions` report of the dumped detections, but for `model`."""
    by_model, by_file = tmp_path / "by-model", tmp_path / "by-file"
    assert main(["evaluate", "--model", str(model), "--data", str(shard_path), "--out",
                 str(by_model), *FAST]) == 0
    dets = _dump_detections(det, shard_path, tmp_path / "dets.json")
    assert _evaluate(dets, shard_path, by_file) == 0
    assert f"evaluated {dets} on {shard_path}" in capsys.readouterr().out

    a, b = _report(by_model), _report(by_file)
    # the run is worth comparing: a real detector with hits, misses and weak slices
    assert a["overall"]["map50"] > 0.3 and 0 < a["overall"]["recall"] < 1 and a["weak_slices"]
    for key in ("overall", "per_class", "slices", "weak_slices", "conditions", "counts",
                "gallery", "settings", "scenario", "data"):
        assert b[key] == a[key], key
    assert {k: v for k, v in b.items() if k != "model"} == {k: v for k, v in a.items() if k != "model"}
    assert (by_file / "slices.csv").read_bytes() == (by_model / "slices.csv").read_bytes()
    assert (by_file / "gallery.png").read_bytes() == (by_model / "gallery.png").read_bytes()

    # the source block says where the predictions came from, not which model
    n = len(json.loads(dets.read_text()))
    assert b["model"] == {"predictions": str(dets), "detections": n,
                          "sha256": hashlib.sha256(dets.read_bytes()).hexdigest()}
    assert b["counts"]["predictions"] == n
    assert f"- predictions: `{dets}` ({n} detections" in (by_file / "report.md").read_text()
    return a


@pytest.mark.slow  # trains a tiny CenterNet (about 3 s)
def test_our_detectors_dumped_detections_reproduce_its_report(trained, shard_path, tmp_path, capsys):
    from trainer import api

    _same_report_both_ways(trained, api.load_detector(trained, device="cpu"), shard_path,
                           tmp_path, capsys)


def test_stand_in_detectors_dumped_detections_reproduce_its_report(shard_path, tmp_path, capsys,
                                                                   monkeypatch):
    """Fast twin: a detector that misses small objects, scores by size and adds false positives."""
    shard = Shard(shard_path)

    def detector() -> OracleDetector:
        return OracleDetector(shard, miss=lambda a: a["area"] < 150,
                              score=lambda a: min(1.0, 0.1 + a["area"] / 600),
                              false_positives=lambda img: [{"bbox": [1.5, 2.0, 9.0, 7.25],
                                                            "category_id": 1 + img["id"] % 3,
                                                            "score": 0.35}])

    model = tmp_path / "model.pt"
    model.write_bytes(b"stand-in")
    monkeypatch.setattr(evaluator.predict, "load_detector", lambda p: detector())
    _same_report_both_ways(model, detector(), shard_path, tmp_path, capsys)


def test_file_name_instead_of_image_id_gives_the_same_report(shard_path, tmp_path):
    names = {i["id"]: i["file_name"] for i in Shard(shard_path).coco["images"]}
    truth = _truth(shard_path)
    for d in truth[::3]:
        d["score"] = 0.4  # some variety in the curve
    by_id = _write(tmp_path / "by-id.json", truth)
    by_name = _write(tmp_path / "by-name.json",
                     [{"file_name": names[d.pop("image_id")], **d} for d in json.loads(by_id.read_text())])
    assert _evaluate(by_id, shard_path, tmp_path / "a") == 0
    assert _evaluate(by_name, shard_path, tmp_path / "b") == 0
    a, b = _report(tmp_path / "a"), _report(tmp_path / "b")
    assert a.pop("model")["sha256"] != b.pop("model")["sha256"]
    assert a == b


# --- perfect detections ---------------------------------------------------------------------

def test_ground_truth_as_detections_is_perfect(shard_path, tmp_path):
    dets = _write(tmp_path / "truth.json", _truth(shard_path))
    assert _evaluate(dets, shard_path, tmp_path / "r") == 0
    r = _report(tmp_path / "r")
    o = r["overall"]
    assert (o["map"], o["map50"], o["recall"], o["precision"], o["fp"]) == (1.0, 1.0, 1.0, 1.0, 0)
    assert all(c["ap50"] == 1.0 for c in r["per_class"] if c["n_objects"])
    assert r["weak_slices"] == [] and r["gallery"]["images"] == []
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "gallery.png", "objects.parquet", "report.json", "report.md", "slices.csv"]


def test_the_policy_steers_on_a_predictions_report(shard_path, tmp_path, capsys):
    """The point of --predictions: another detector's weak slices move the generator too."""
    missed_small = [d for d, a in zip(_truth(shard_path), Shard(shard_path).coco["annotations"], strict=True)
                    if a["area"] >= 150]
    dets = _write(tmp_path / "d.json", missed_small)
    assert _evaluate(dets, shard_path, tmp_path / "r") == 0
    report = _report(tmp_path / "r")
    assert (report["weak_slices"][0]["condition"], report["weak_slices"][0]["side"]) == ("size", "low")
    scenario = tmp_path / "demo.yaml"
    scenario.write_text(yaml.safe_dump(DEMO_SPEC))
    params = tmp_path / "next" / "params.yaml"
    assert main(["policy", "next", "--scenario", str(scenario), "--report", str(tmp_path / "r" / "report.json"),
                 "--shard", str(shard_path), "--out", str(params)]) == 0
    moved = yaml.safe_load(params.read_text())["distributions"]
    assert moved["object.scale"]["center"] < DEMO_SPEC["parameters"]["object.scale"]["default"]


def test_duplicates_are_kept_as_false_positives(shard_path, tmp_path):
    truth = _truth(shard_path)
    dets = _write(tmp_path / "dup.json", [*truth, dict(truth[0], score=0.9)])
    assert _evaluate(dets, shard_path, tmp_path / "r") == 0
    r = _report(tmp_path / "r")
    assert r["model"]["detections"] == len(truth) + 1
    assert (r["overall"]["recall"], r["overall"]["fp"]) == (1.0, 1)


def test_an_empty_list_is_a_detector_that_found_nothing(shard_path, tmp_path):
    assert _evaluate(_write(tmp_path / "none.json", []), shard_path, tmp_path / "r") == 0
    r = _report(tmp_path / "r")
    assert (r["overall"]["map50"], r["overall"]["recall"], r["model"]["detections"]) == (0.0, 0.0, 0)


# --- refusals: one line, exit 2, nothing written ---------------------------------------------

Good = dict[str, Any]


def _one(**change: Any) -> Any:
    """A file of two detections: a good one, then the good one with ``change`` (``...`` = drop)."""
    def build(good: Good) -> list[Good]:
        d = {**good, **change}
        return [good, {k: v for k, v in d.items() if v is not ...}]
    return build


BAD = [  # (name, content from a good detection, what the error line must say)
    ("not-a-list", lambda g: {"annotations": [g]}, ("must hold a JSON list", "dict", "COCO dataset")),
    ("null", lambda g: None, ("must hold a JSON list", "NoneType")),
    ("not-an-object", lambda g: [g, [1, 2]], ("detections[1]", "must be an object")),
    ("unknown-category", _one(category_id=9), ("detections[1].category_id", "[1, 2, 3]", "9")),
    ("zero-based-category", _one(category_id=0), ("detections[1].category_id", "1-based")),
    ("string-category", _one(category_id="a"), ("detections[1].category_id", "'a'")),
    ("nan-bbox", _one(bbox=[1.0, float("nan"), 3.0, 4.0]), ("detections[1].bbox", "finite", "nan")),
    ("inf-bbox", _one(bbox=[1.0, 2.0, float("inf"), 4.0]), ("detections[1].bbox", "finite")),
    ("short-bbox", _one(bbox=[1, 2, 3]), ("detections[1].bbox", "4 finite numbers")),
    ("negative-size", _one(bbox=[10, 10, -3, 4]), ("detections[1].bbox", "width and height >= 0",
                                                   "[x1, y1, x2, y2]")),
    ("score-above-1", _one(score=1.5), ("detections[1].score", "[0, 1]", "1.5")),
    ("score-negative", _one(score=-0.1), ("detections[1].score", "[0, 1]")),
    ("score-nan", _one(score=float("nan")), ("detections[1].score", "nan")),
    ("score-missing", _one(score=...), ("detections[1].score", "is required")),
    ("score-bool", _one(score=True), ("detections[1].score", "True")),
    ("no-image", _one(image_id=...), ("detections[1].image_id", "is required (or file_name)")),
    ("bool-image-id", _one(image_id=True), ("detections[1].image_id", "integer")),
    ("string-image-id", _one(image_id="7"), ("detections[1].image_id", "'7'", "file_name")),
    ("unknown-file-name", _one(image_id=..., file_name="nope.png"),
     ("1 of 2 detections", "images not in shard", "detections[1].file_name = 'nope.png'")),
]


@pytest.mark.parametrize(("name", "content", "needles"), BAD, ids=[b[0] for b in BAD])
def test_bad_detections_are_refused_in_one_line(shard_path, tmp_path, capsys, name, content, needles):
    path = _write(tmp_path / f"{name}.json", content(_truth(shard_path)[0]))  # NaN as json writes it
    out = tmp_path / "report"
    assert _evaluate(path, shard_path, out) == 2, name
    _one_line_error(capsys, "--predictions", *needles)
    assert not out.exists()


def test_not_json_and_missing_file(shard_path, tmp_path, capsys):
    bad = tmp_path / "dets.json"
    bad.write_text('[{"image_id": 1,')
    assert _evaluate(bad, shard_path, tmp_path / "r") == 2
    _one_line_error(capsys, "--predictions", "is not JSON", "line 1")
    bad.write_bytes(b"\xff\xfe[]")
    assert _evaluate(bad, shard_path, tmp_path / "r") == 2
    _one_line_error(capsys, "--predictions", "not UTF-8")
    assert _evaluate(tmp_path / "nope.json", shard_path, tmp_path / "r") == 2
    _one_line_error(capsys, "--predictions", "nope.json", "does not exist")
    assert not (tmp_path / "r").exists()


def test_detections_of_another_shard_are_refused_with_count_and_example(shard_path, tmp_path, capsys):
    truth = _truth(shard_path)
    other = [dict(d, image_id=d["image_id"] + 1000) for d in truth[:5]]
    dets = _write(tmp_path / "other.json", truth + other)
    assert _evaluate(dets, shard_path, tmp_path / "r") == 2
    err = _one_line_error(capsys, f"5 of {len(truth) + 5} detections", "images not in shard",
                          f"detections[{len(truth)}].image_id = {other[0]['image_id']}", "--data")
    assert str(shard_path) in err
    assert not (tmp_path / "r").exists()


def test_refused_before_an_existing_output_is_touched(shard_path, tmp_path, capsys):
    out = tmp_path / "r"
    assert _evaluate(_write(tmp_path / "d.json", _truth(shard_path)), shard_path, out) == 0
    before = (out / "report.json").read_bytes()
    bad = _write(tmp_path / "bad.json", [dict(_truth(shard_path)[0], score=2)])
    assert _evaluate(bad, shard_path, out, "--overwrite") == 2
    _one_line_error(capsys, "score")
    assert (out / "report.json").read_bytes() == before


def test_real_test_needs_final_report(tmp_path, capsys):
    data = make_shard(tmp_path / "real", n=6, kind="real")
    manifest = read_json(data, "manifest.json")
    manifest["split"] = "real-test"
    rewrite_json(data, "manifest.json", manifest)
    dets = _write(tmp_path / "d.json", _truth(data))
    scenario = tmp_path / "demo.yaml"
    scenario.write_text(yaml.safe_dump(DEMO_SPEC))
    assert _evaluate(dets, data, tmp_path / "r", "--scenario", str(scenario)) == 2
    _one_line_error(capsys, "real-test", "--final-report")
    assert not (tmp_path / "r").exists()
    assert _evaluate(dets, data, tmp_path / "r", "--scenario", str(scenario), "--final-report") == 0
    r = _report(tmp_path / "r")
    assert r["final_report"] is True and r["data"]["split"] == "real-test"
    assert r["overall"]["map50"] == 1.0


def test_model_and_predictions_are_exclusive_and_one_is_required(shard_path, tmp_path, capsys):
    dets = _write(tmp_path / "d.json", _truth(shard_path))
    common = ["--data", str(shard_path), "--out", str(tmp_path / "r")]
    for argv in (["--model", "m.pt", "--predictions", str(dets)], []):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", *argv, *common])
        assert exc.value.code == 2
        assert "--predictions" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
