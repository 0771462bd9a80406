"""Shard QC: a clean shard passes; each planted corruption is caught on the right record."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from shardmaker import edit_coco, make_shard, read_json, rewrite_json

from flows.cli import main
from generator.annotations import encode_rle
from generator.qc import rle_counts, validate_shard


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    return make_shard(tmp_path / "shard", n=6, seed=3)


def _checks(report: Any) -> set[tuple[str, str]]:
    return {(i.record, i.check) for i in report.issues}


def test_clean_shard_passes(shard: Path) -> None:
    report = validate_shard(shard)
    assert report.ok, report.issues
    manifest = read_json(shard, "manifest.json")
    assert report.n_images == 6 and report.n_annotations == manifest["counts"]["annotations"]
    assert report.n_files == len(manifest["files"])  # every listed file was hashed
    assert {"amodal", "pose", "depth", "semantic"} <= set(manifest["label_types"])


def test_real_shard_without_depth_or_amodal_passes(tmp_path: Path) -> None:
    shard = make_shard(tmp_path / "real", n=4, kind="real", depth=False, amodal=False, pose=False)
    assert validate_shard(shard).ok


def test_moved_box_is_caught_on_its_annotation(shard: Path) -> None:
    def move(c: dict[str, Any]) -> None:
        c["annotations"][2]["bbox"][0] += 1

    edit_coco(shard, move)
    report = validate_shard(shard)
    assert _checks(report) == {("annotation 3", "bbox_extent")}
    assert validate_shard(shard, box_tolerance=1).ok  # --box-tolerance allows it


def test_truncated_image_file(shard: Path) -> None:
    path = shard / "images" / "000002.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    report = validate_shard(shard)
    assert _checks(report) == {("file images/000002.png", "sha256"), ("image 3", "image_decode")}


def test_wrong_checksum(shard: Path) -> None:
    manifest = read_json(shard, "manifest.json")
    manifest["files"]["depth/000001.png"] = "0" * 64
    rewrite_json(shard, "manifest.json", manifest)
    assert _checks(validate_shard(shard)) == {("file depth/000001.png", "sha256")}


def test_unknown_category(shard: Path) -> None:
    edit_coco(shard, lambda c: c["annotations"][4].__setitem__("category_id", 99))
    assert _checks(validate_shard(shard)) == {("annotation 5", "category_ref")}


def test_missing_file(shard: Path) -> None:
    (shard / "depth" / "000003.png").unlink()
    report = validate_shard(shard)
    assert _checks(report) == {("file depth/000003.png", "missing_file"), ("image 4", "depth_file")}


def test_extra_file_not_in_manifest(shard: Path) -> None:
    (shard / "images" / "stray.png").write_bytes(b"x")
    assert _checks(validate_shard(shard)) == {("file images/stray.png", "extra_file")}


def _set(i: int, key: str, value: Any) -> Any:
    return lambda c: c["annotations"][i].__setitem__(key, value)


def _pose_scaled(c: dict[str, Any]) -> None:
    c["annotations"][1]["pose"][0][0] *= 1.5


def _amodal_shrunk(c: dict[str, Any]) -> None:
    a = c["annotations"][0]
    h, w = a["segmentation"]["size"]
    a["amodal_segmentation"] = encode_rle(np.zeros((h, w), dtype=bool) | _one_pixel(a, h, w))
    a["amodal_bbox"] = [float(v) for v in mask_utils.toBbox(a["amodal_segmentation"])]


def _one_pixel(a: dict[str, Any], h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    x, y = int(a["bbox"][0]), int(a["bbox"][1])
    m[y, x] = True
    return m


def _truncated_rle(c: dict[str, Any]) -> None:
    seg = c["annotations"][0]["segmentation"]
    seg["counts"] = seg["counts"][:-1] + "k"  # 'k' sets the "more" bit with nothing after it


@pytest.mark.parametrize(("mutate", "record", "check"), [
    (_set(0, "area", 5.0), "annotation 1", "area"),
    (_set(1, "visibility", 1.5), "annotation 2", "visibility"),
    (_set(1, "id", 1), "annotation 1", "duplicate_id"),
    (_pose_scaled, "annotation 2", "pose"),
    (_amodal_shrunk, "annotation 1", "amodal_contains"),
    (_truncated_rle, "annotation 1", "rle"),
    (lambda c: c["annotations"][0].pop("amodal_bbox"), "annotation 1", "label_amodal"),
    (lambda c: c["images"][0].pop("width"), "image 1", "schema"),
    (lambda c: c["annotations"].pop(), "manifest", "counts"),
])
def test_planted_annotation_faults(shard: Path, mutate: Any, record: str, check: str) -> None:
    edit_coco(shard, mutate)
    assert (record, check) in _checks(validate_shard(shard))


def test_malformed_image_is_reported_once(shard: Path) -> None:
    edit_coco(shard, lambda c: c["images"][0].pop("width"))
    report = validate_shard(shard)
    assert _checks(report) == {("image 1", "schema")}  # its annotations are not blamed too


def test_depth_must_be_uint16(shard: Path) -> None:
    from PIL import Image

    Image.new("L", (64, 48)).save(shard / "depth" / "000000.png")
    manifest = read_json(shard, "manifest.json")
    manifest["files"].pop("depth/000000.png")
    rewrite_json(shard, "manifest.json", manifest)
    checks = _checks(validate_shard(shard))
    assert ("image 1", "depth_dtype") in checks


def test_rle_counts_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((17, 23)) < rng.uniform(0.05, 0.95)
        rle = encode_rle(m)
        counts = rle_counts(rle["counts"])
        assert sum(counts) == m.size and sum(counts[1::2]) == int(m.sum())
    with pytest.raises(ValueError, match="middle"):
        rle_counts("k")


def test_cli_validate_clean_and_corrupt(shard: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(shard)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    edit_coco(shard, _set(0, "area", 1.0))
    report = tmp_path / "qc.json"
    assert main(["validate", str(shard), "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert "annotation 1: [area]" in out and "1 errors in 1 records" in out
    data = json.loads(report.read_text())
    assert data["ok"] is False and data["issues"] == [
        {"record": "annotation 1", "check": "area", "message": data["issues"][0]["message"]}]


@pytest.mark.parametrize("case", ["missing", "not_a_shard", "bad_report_dir"])
def test_cli_validate_bad_input(case: str, shard: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    target = {"missing": tmp_path / "nope", "not_a_shard": tmp_path / "empty"}.get(case, shard)
    report = tmp_path / "no_dir" / "qc.json"
    assert main(["validate", str(target), "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not report.parent.exists()


@pytest.mark.slow
def test_validate_is_fast(tmp_path: Path) -> None:
    shard = make_shard(tmp_path / "big", n=400, seed=1)
    t0 = time.perf_counter()
    report = validate_shard(shard)
    assert report.ok and report.n_images == 400
    assert time.perf_counter() - t0 < 3.0  # ~0.7 s here: 1000 images take ~2 s
