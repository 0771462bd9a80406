"""Preview grids and YOLO export: sizes, drawn masks, label round trips, CLI refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from shardmaker import make_shard, read_json

from flows.cli import main
from generator.annotations import decode_rle
from generator.export_yolo import export_yolo, split_ids
from generator.preview import ALPHA, PAD, PALETTE, pick_images, preview_grid


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shard(tmp_path_factory.mktemp("s") / "shard", n=10, seed=5)


def test_preview_png_has_the_expected_size(shard: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    assert main(["preview", str(shard), "-o", str(out), "-n", "5", "--tile", "64"]) == 0
    with Image.open(out) as im:
        # 5 images -> 3 columns x 2 rows; each cell = image + depth panel (2 x 64) by 64 + 14 label
        assert im.format == "PNG" and im.size == (3 * 2 * 64 + 4 * PAD, 2 * (64 + 14) + 3 * PAD)
    nodepth = make_shard(tmp_path / "nd", n=3, depth=False)
    assert preview_grid(nodepth, n=3, tile=64).size == (2 * 64 + 3 * PAD, 2 * (64 + 14) + 3 * PAD)


def test_preview_draws_masks_and_is_seeded(shard: Path) -> None:
    coco = read_json(shard, "annotations.json")
    [image] = pick_images(coco["images"], 1, seed=4)
    grid = np.asarray(preview_grid(shard, n=1, seed=4, tile=64)).astype(float)
    raw = np.asarray(Image.open(shard / image["file_name"]).convert("RGB")).astype(float)
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    mask = decode_rle(anns[0]["segmentation"])  # 64x48 image at scale 1 in a 64 tile
    x, y, w, h = (int(v) for v in anns[0]["bbox"])
    inner = np.zeros_like(mask)
    inner[y + 1:y + h - 1, x + 1:x + w - 1] = True  # away from the box outline
    ys, xs = np.nonzero(mask & inner)
    want = (1 - ALPHA) * raw[ys, xs] + ALPHA * np.array(PALETTE[0])
    got = grid[PAD + ys, PAD + xs]
    assert np.mean(np.abs(got - want).max(axis=1) <= 1.5) > 0.8  # most (labels may cover some)
    again = preview_grid(shard, n=1, seed=4, tile=64)
    assert np.array_equal(np.asarray(again), grid.astype(np.uint8))
    picks = {pick_images(coco["images"], 3, s)[0]["id"] for s in range(6)}
    assert len(picks) > 1  # the seed changes the selection


def _parse(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def test_yolo_detect_labels_round_trip(shard: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    summary = export_yolo(shard, out)
    coco = read_json(shard, "annotations.json")
    assert summary.n_train == 10 and summary.n_val == 0 and summary.n_labels == len(coco["annotations"])
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"path": str(out.absolute()), "train": "images/train", "val": "images/train",
                    "names": {0: "a", 1: "b", 2: "c"}}
    for img in coco["images"]:
        stem = Path(img["file_name"]).stem
        assert (out / "images" / "train" / f"{stem}.png").read_bytes() == (shard / img["file_name"]).read_bytes()
        rows = _parse(out / "labels" / "train" / f"{stem}.txt")
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert len(rows) == len(anns)
        W, H = img["width"], img["height"]
        for (cls, cx, cy, w, h), a in zip(rows, anns, strict=True):
            back = [(cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H]
            assert cls == a["category_id"] - 1
            assert back == pytest.approx(a["bbox"], abs=1e-4)


def test_yolo_segment_polygons_cover_the_boxes(shard: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    export_yolo(shard, out, task="segment")
    coco = read_json(shard, "annotations.json")
    img = coco["images"][0]
    rows = _parse(out / "labels" / "train" / f"{Path(img['file_name']).stem}.txt")
    anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
    for row, a in zip(rows, anns, strict=True):
        assert row[0] == a["category_id"] - 1 and len(row) % 2 == 1 and len(row) >= 7
        xy = np.array(row[1:]).reshape(-1, 2) * [img["width"], img["height"]]
        x, y, w, h = a["bbox"]
        extent = [xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]
        assert extent == pytest.approx([x, y, x + w, y + h], abs=0.5)


def test_yolo_val_split_is_deterministic(shard: Path, tmp_path: Path) -> None:
    s = export_yolo(shard, tmp_path / "a", val_fraction=0.3)
    assert (s.n_train, s.n_val) == (7, 3)
    val = sorted(p.name for p in (tmp_path / "a" / "images" / "val").iterdir())
    export_yolo(shard, tmp_path / "b", val_fraction=0.3)
    assert val == sorted(p.name for p in (tmp_path / "b" / "images" / "val").iterdir())
    assert yaml.safe_load((tmp_path / "a" / "data.yaml").read_text())["val"] == "images/val"
    assert split_ids(list(range(1, 101)), 0.25) == split_ids(list(range(100, 0, -1)), 0.25)


def test_cli_export_default_out_and_overwrite(shard: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "mine"
    copy.symlink_to(shard, target_is_directory=True)
    assert main(["export", str(copy), "--format", "yolo"]) == 0
    assert (tmp_path / "mine-yolo" / "data.yaml").is_file()
    capsys.readouterr()
    # non-empty --out without --overwrite: exit 2, one line, nothing touched
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["export", str(shard), "--format", "yolo", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert main(["export", str(shard), "--format", "yolo", "--out", str(target), "--overwrite"]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["data.yaml", "images", "labels"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("argv", [
    ["export", "{missing}", "--format", "yolo"],
    ["export", "{empty}", "--format", "yolo"],
    ["export", "{shard}", "--format", "yolo", "--val-fraction", "1.5", "--out", "{out}"],
    ["preview", "{missing}", "-o", "{out}.png"],
    ["preview", "{shard}", "-o", "{out}.png", "-n", "0"],
])
def test_cli_bad_inputs_write_nothing(argv: list[str], shard: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    names = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "shard": shard,
             "out": tmp_path / "out"}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_cli_export_unknown_format_is_an_argparse_error(shard: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", str(shard), "--format", "coco"])
    assert exc.value.code == 2
