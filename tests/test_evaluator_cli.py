"""`synthloop evaluate` through flows.cli.main, with a stand-in detector behind the seam."""

from __future__ import annotations

import json

import pytest
from shardmaker import make_shard, read_json, rewrite_json

import evaluator.predict
from evaluator.testing import OracleDetector
from flows.cli import main
from generator.shard import Shard


@pytest.fixture(scope="module")
def shard_path(tmp_path_factory):
    return make_shard(tmp_path_factory.mktemp("cli") / "s", n=24, seed=5)


@pytest.fixture
def model(tmp_path, shard_path, monkeypatch):
    """A checkpoint path that exists, loading to an oracle that misses small objects."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"fake checkpoint")
    loaded = []

    def fake_load(p: str) -> OracleDetector:
        loaded.append(p)
        return OracleDetector(Shard(shard_path), miss=lambda a: a["area"] < 150)

    monkeypatch.setattr(evaluator.predict, "load_detector", fake_load)
    return path, loaded


def _run(model_path, data, out, *extra: str) -> int:
    return main(["evaluate", "--model", str(model_path), "--data", str(data), "--out", str(out),
                 "--resamples", "20", *extra])


def test_evaluate_writes_a_report_and_prints_a_summary(model, shard_path, tmp_path, capsys):
    out = tmp_path / "report"
    assert _run(model[0], shard_path, out, "--min-support", "5") == 0
    assert model[1] == [str(model[0])]
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["path"] == str(model[0]) and report["model"]["sha256"]
    assert report["weak_slices"][0]["condition"] == "size"
    captured = capsys.readouterr()
    assert "mAP@0.5" in captured.out and "weak slices" in captured.out and "object.scale" in captured.out
    assert "evaluate: 24 images" in captured.err  # no terminal: one line (tests/test_progress.py)


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, err


def test_missing_model_path(tmp_path, shard_path, capsys):
    out = tmp_path / "report"
    assert _run(tmp_path / "nope.pt", shard_path, out) == 2
    _one_line_error(capsys, "--model", "nope.pt")
    assert not out.exists()


def test_missing_data(model, tmp_path, capsys):
    out = tmp_path / "report"
    assert _run(model[0], tmp_path / "no-shard", out) == 2
    _one_line_error(capsys, "--data", "no-shard")
    assert not out.exists() and model[1] == []


@pytest.mark.parametrize(("flag", "value"), [("--iou", "1.5"), ("--score-threshold", "-0.1"),
                                              ("--min-support", "0"), ("--batch-size", "0")])
def test_bad_options(model, shard_path, tmp_path, capsys, flag, value):
    out = tmp_path / "report"
    assert _run(model[0], shard_path, out, flag, value) == 2
    _one_line_error(capsys, flag)
    assert not out.exists()


def test_real_test_needs_final_report(model, tmp_path, capsys):
    data = make_shard(tmp_path / "real", n=6, kind="real")
    manifest = read_json(data, "manifest.json")
    manifest["split"] = "real-test"
    rewrite_json(data, "manifest.json", manifest)
    out = tmp_path / "report"
    assert _run(model[0], data, out) == 2
    _one_line_error(capsys, "real-test", "--final-report")
    assert not out.exists()


def test_class_mismatch_and_existing_output(model, shard_path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert _run(model[0], shard_path, out) == 2
    _one_line_error(capsys, "--out", "--overwrite")
    assert (out / "keep.txt").read_text() == "x"

    other = OracleDetector(Shard(shard_path))
    other.classes = ["x", "y", "z"]
    monkeypatch.setattr(evaluator.predict, "load_detector", lambda p: other)
    assert _run(model[0], shard_path, tmp_path / "r2") == 2
    _one_line_error(capsys, "class list")
    assert not (tmp_path / "r2").exists()
