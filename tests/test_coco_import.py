"""COCO import: every kind of bad record is rejected by id and counted; the rest is a shard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import generator.annotations as ann
from generator.errors import DataError
from generator.real.coco_import import import_coco
from generator.shard import Shard

W, H = 64, 48
CATEGORIES = [{"id": 1, "name": "7"}, {"id": 2, "name": "3"}, {"id": 50, "name": "cat"}]


def _png(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _img(iid: int, name: str, **kw: object) -> dict:
    return {"id": iid, "file_name": name, "width": W, "height": H, **kw}


def _ann(aid: int, iid: int, cat: int = 1, bbox: list | None = None, **kw: object) -> dict:
    return {"id": aid, "image_id": iid, "category_id": cat, "bbox": bbox or [5, 5, 10, 12], "iscrowd": 0, **kw}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.T.reshape(-1).astype(int)  # column-major
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Valid images 1, 2, 9, 10; every rejection reason planted once or twice."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "sub/b.png", "e.png", "f.png", "g.png", "h.png", "i.png", "j.png"]):
        _png(images / name, i)
    (images / "broken.png").write_bytes(b"not a png at all")
    _png(images / "big.png", 9, size=(100, 100))
    rle_mask = np.zeros((H, W), dtype=bool)
    rle_mask[20:30, 40:50] = True
    coco = {
        "images": [
            _img(1, "a.png"),
            _img(2, "sub/b.png"),
            _img(3, "missing.png"),
            _img(4, "broken.png"),
            _img(5, "e.png"),
            _img(5, "f.png"),
            _img(6, "big.png"),
            {"id": 7, "width": W},
            _img(8, "g.png"),
            _img(9, "h.png"),
            _img(10, "i.png"),
            _img(11, "../a.png"),
        ],
        "annotations": [
            _ann(101, 1, cat=2, bbox=[5, 5, 10, 12]),  # valid, box mask
            _ann(102, 2, bbox=[10, 10, 10, 10], segmentation=[[10, 10, 20, 10, 20, 20, 10, 20]]),  # valid, polygon
            _ann(103, 2, bbox=[40, 20, 10, 10], segmentation=_uncompressed_rle(rle_mask)),  # RLE
            _ann(104, 3),  # its image file is missing
            _ann(105, 99),  # image_not_found
            _ann(106, 5),  # image id duplicated
            _ann(140, 10, cat=50),  # "cat": not a digits class; image 10 stays
            # image 8: one valid annotation and every kind of broken one
            _ann(120, 8),
            _ann(107, 8, bbox=[5, 5, 0, 12]),  # degenerate
            _ann(108, 8, area=0),  # zero area
            _ann(109, 8, bbox=[60, 40, 10, 10]),  # outside the 64x48 image
            _ann(110, 8, iscrowd=1),
            _ann(111, 8, segmentation=[[1, 2, 3]]),  # bad polygon
            _ann(112, 8, cat=42),  # unknown category
            _ann(130, 8),
            _ann(130, 8),  # duplicate annotation id
            {"id": 131, "image_id": 8, "category_id": "7", "bbox": [1, 1, 2, 2]},  # bad record
        ],
        "categories": CATEGORIES,
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    return images, path


def test_import_keeps_valid_subset_and_reports_each_reason(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    images, coco_path = dataset
    out = tmp_path / "shard"
    report = import_coco(images, coco_path, out)
    counts = report.counts()
    assert counts["images"] == {
        "total": 12,
        "valid": 4,
        "rejected": 8,
        "by_reason": {
            "bad_image_record": 1,
            "duplicate_image_id": 2,
            "image_size_mismatch": 1,
            "incomplete_labels": 1,
            "missing_image_file": 2,
            "unreadable_image_file": 1,
        },
    }
    assert counts["annotations"] == {
        "total": 17,
        "valid": 3,
        "rejected": 14,
        "by_reason": {
            "bad_annotation_record": 1,
            "bad_segmentation": 1,
            "box_outside_image": 1,
            "category_not_in_scenario": 1,
            "crowd": 1,
            "degenerate_box": 2,
            "duplicate_annotation_id": 2,
            "image_not_found": 1,
            "image_rejected": 3,
            "unknown_category": 1,
        },
    }
    rejected = json.loads((out / "rejected.json").read_text())
    by_reason: dict[str, list] = {}
    for r in rejected["annotations"]:
        by_reason.setdefault(r["reason"], []).append(r["id"])
    assert by_reason["degenerate_box"] == [107, 108]
    assert by_reason["box_outside_image"] == [109]
    assert by_reason["image_rejected"] == [104, 106, 120]
    assert by_reason["unknown_category"] == [112]
    assert by_reason["image_not_found"] == [105]
    assert by_reason["category_not_in_scenario"] == [140]
    img_reasons = {(r["id"], r["reason"]) for r in rejected["images"]}
    assert {
        (3, "missing_image_file"),
        (11, "missing_image_file"),
        (4, "unreadable_image_file"),
        (6, "image_size_mismatch"),
        (7, "bad_image_record"),
        (8, "incomplete_labels"),
    } <= img_reasons

    shard = Shard(out)
    m = shard.manifest
    assert m["kind"] == "imported" and m["import"]["counts"] == counts
    assert m["classes"] == [str(d) for d in range(10)]
    assert m["import"]["mask_source"] == "mixed"
    assert m["import"]["mask_source_counts"] == {"box": 1, "segmentation": 2}
    coco = shard.coco
    assert [i["conditions"]["source_image_id"] for i in coco["images"]] == [1, 2, 9, 10]
    anns = {a["attributes"]["source_annotation_id"]: a for a in coco["annotations"]}
    assert anns[101]["category_id"] == 4 and anns[101]["bbox"] == [5, 5, 10, 12]  # "3" -> id 4
    assert anns[102]["category_id"] == 8  # "7" -> id 8
    assert ann.mask_bbox(ann.decode_rle(anns[102]["segmentation"])) == anns[102]["bbox"]
    assert 9 <= anns[102]["bbox"][2] <= 11  # polygon 10..20 rasterised
    assert np.array_equal(
        ann.decode_rle(anns[103]["segmentation"]), np.pad(np.ones((10, 10), bool), ((20, H - 30), (40, W - 50)))
    )
    # pixels copied in unchanged
    assert np.array_equal(shard.load_image(coco["images"][0]), np.asarray(Image.open(images / "a.png").convert("RGB")))


def test_import_is_deterministic(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    images, coco_path = dataset
    a = import_coco(images, coco_path, tmp_path / "a")
    b = import_coco(images, coco_path, tmp_path / "b")
    assert a.fingerprint == b.fingerprint
    assert (tmp_path / "a" / "annotations.json").read_bytes() == (tmp_path / "b" / "annotations.json").read_bytes()


def _write(path: Path, obj: object) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_all_bad_file_exits_2_and_writes_nothing(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    images, _ = dataset
    bad = _write(
        tmp_path / "bad.json",
        {
            "images": [_img(1, "a.png"), _img(2, "missing.png")],
            "annotations": [_ann(1, 1, bbox=[50, 40, 30, 30]), _ann(2, 2), _ann(3, 77)],
            "categories": CATEGORIES,
        },
    )
    out = tmp_path / "out"
    rc = main(["data", "import-coco", "--images", str(images), "--annotations", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: --annotations: no valid annotation") and "\n" not in err
    assert "box_outside_image 1" in err and "image_not_found 1" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2, 3], "a COCO file needs lists"),
        ({"images": [], "annotations": []}, "a COCO file needs lists"),
        (
            {"images": [], "annotations": [], "categories": [{"id": 1, "name": "dog"}]},
            "no COCO category name matches a class of scenario 'digits' (0, 1, 2",
        ),
    ],
)
def test_cli_rejects_non_coco(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, needle: str
) -> None:
    from flows.cli import main

    images, _ = dataset
    path = _write(tmp_path / "x.json", content)
    out = tmp_path / "out"
    rc = main(["data", "import-coco", "--images", str(images), "--annotations", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and needle in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--images", "{tmp}/nope"], "--images"),
        (["--annotations", "{tmp}/nope.json"], "does not exist"),
        (["--scenario", "no-such-scenario"], "unknown scenario"),
    ],
)
def test_cli_bad_paths(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    from flows.cli import main

    images, coco_path = dataset
    base = {"--images": str(images), "--annotations": str(coco_path)}
    base.update({args[0]: args[1].format(tmp=tmp_path)} if args[0] in base else {})
    argv = ["data", "import-coco", "--out", str(tmp_path / "out")]
    for k, v in base.items():
        argv += [k, v]
    if args[0] not in base:
        argv += args
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_cli_prints_counts_and_refuses_to_overwrite(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    images, coco_path = dataset
    argv = [
        "data",
        "import-coco",
        "--images",
        str(images),
        "--annotations",
        str(coco_path),
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "annotations" in text and "box_outside_image" in text and "mask source: mixed" in text
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_library_error_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--images"):
        import_coco(tmp_path / "none", tmp_path / "none.json", tmp_path / "out")
