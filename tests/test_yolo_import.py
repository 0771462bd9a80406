"""YOLO import and shard split: round trip with our exporter, every rejection reason, class maps,
reproducible real-train / real-val / real-test splits that the loop accepts as its real_dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from generator.errors import DataError, ShardError
from generator.export_yolo import export_yolo
from generator.real.split_shard import split_shard
from generator.real.splits import check_split_access, open_real_split
from generator.shard import ImageRecord, ObjectRecord, Shard, ShardWriter
from generator.yolo_import import import_yolo, label_path

W, H = 64, 48
DIGITS = [str(d) for d in range(10)]


def _png(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _box(x: int, y: int, w: int, h: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y : y + h, x : x + w] = True
    return m


def _digit_shard(path: Path, n: int = 6, seed: int = 0) -> Path:
    """An imported-kind shard of random images with 0-3 rectangular digits each."""
    rng = np.random.default_rng(seed)
    info = {"name": "mine", "kind": "imported", "classes": DIGITS, "fingerprint": f"test-{seed}-{n}"}
    with ShardWriter(path, info) as w:
        for i in range(n):
            objs = []
            for _ in range(int(rng.integers(0 if i else 1, 4))):
                bw, bh = int(rng.integers(3, 20)), int(rng.integers(3, 20))
                x, y = int(rng.integers(0, W - bw + 1)), int(rng.integers(0, H - bh + 1))
                objs.append(ObjectRecord(category_id=int(rng.integers(1, 11)), mask=_box(x, y, bw, bh)))
            img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            w.add_record(ImageRecord(index=i, image=img, objects=objs))
    return path


def _boxes(shard: Shard) -> list[list[tuple[str, list[float]]]]:
    names = {c["id"]: c["name"] for c in shard.coco["categories"]}
    by = shard.annotations_by_image()
    return [sorted((names[a["category_id"]], a["bbox"]) for a in by[i["id"]]) for i in shard.coco["images"]]


def _dataset(root: Path, labels: dict[str, str | bytes | None], names: object = None,
             extra: dict | None = None) -> Path:
    """images/train/<stem>.png for each key (label text, bytes, or None = no label file)."""
    for k, (stem, text) in enumerate(labels.items()):
        _png(root / "images" / "train" / f"{stem}.png", k)
        if text is not None:
            lp = root / "labels" / "train" / f"{stem}.txt"
            lp.parent.mkdir(parents=True, exist_ok=True)
            lp.write_bytes(text if isinstance(text, bytes) else text.encode())
    doc = {"path": ".", "train": "images/train", "val": "images/train",
           "names": names if names is not None else DIGITS, **(extra or {})}
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    return root / "data.yaml"


def test_round_trip_through_our_yolo_export(tmp_path: Path) -> None:
    src = _digit_shard(tmp_path / "src", n=8)
    export_yolo(src, tmp_path / "yolo", val_fraction=0.25)
    train = import_yolo(tmp_path / "yolo", tmp_path / "back-train")
    val = import_yolo(tmp_path / "yolo" / "data.yaml", tmp_path / "back-val", split="val")
    assert train.counts()["images"]["rejected"] == 0 and val.counts()["annotations"]["rejected"] == 0
    a, b, c = Shard(src), Shard(tmp_path / "back-train"), Shard(tmp_path / "back-val")
    assert len(b.coco["images"]) + len(c.coco["images"]) == 8 and len(c.coco["images"]) == 2
    original = dict(zip([i["file_name"].split("/")[-1] for i in a.coco["images"]], _boxes(a), strict=True))
    back: dict[str, list] = {}
    for s in (b, c):
        for img, boxes in zip(s.coco["images"], _boxes(s), strict=True):
            back[Path(img["conditions"]["source_file_name"]).name] = boxes
    assert back.keys() == original.keys()
    assert sum(len(v) for v in original.values()) >= 8
    for name, boxes in original.items():
        assert [n for n, _ in back[name]] == [n for n, _ in boxes]  # same classes, same order
        assert len(back[name]) == len(boxes)
        if boxes:
            assert np.abs(np.array([bb for _, bb in back[name]]) - [bb for _, bb in boxes]).max() <= 1e-3
    anns = b.coco["annotations"]
    assert anns and all(a["attributes"]["mask_source"] == "box" for a in anns)
    orig_by_name = {Path(i["conditions"]["source_file_name"]).name: i["id"] for i in b.coco["images"]}
    by = b.annotations_by_image()
    for name, iid in orig_by_name.items():  # the file's float box, before rasterising, is within 1e-3 px
        src_boxes = sorted(a["attributes"]["source_bbox"] for a in by[iid])
        if src_boxes:
            assert np.abs(np.array(src_boxes) - sorted(bb for _, bb in original[name])).max() <= 1e-3
    # pixels come back unchanged, and the import is deterministic
    assert np.array_equal(b.load_image(b.coco["images"][0]), a.load_image(a.coco["images"][0]))
    again = import_yolo(tmp_path / "yolo", tmp_path / "again")
    assert again.fingerprint == train.fingerprint
    ann_file = "annotations.json"
    assert (tmp_path / "again" / ann_file).read_bytes() == (tmp_path / "back-train" / ann_file).read_bytes()


def test_each_bad_input_is_rejected_with_its_reason_and_the_rest_imported(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    outside = tmp_path / "outside.png"
    _png(outside, 99)
    data = _dataset(root, {
        "ok": "3 0.5 0.5 0.25 0.25\n\n7 0.2 0.3 0.1 0.2\n",
        "empty": None,                      # no label file: an image without objects
        "cls": "10 0.5 0.5 0.2 0.2\n",      # class id out of range (names 0..9)
        "coord": "1 1.2 0.5 0.2 0.2\n",     # outside [0, 1]
        "nan": "1 nan 0.5 0.2 0.2\n",
        "fields": "1 0.5 0.5 0.2\n",        # 4 fields
        "zero": "1 0.5 0.5 0 0.2\n",        # zero-size box
        "edge": "1 0.95 0.5 0.3 0.2\n",     # sticks 5.8 px out of the 64 px image
        "word": "one 0.5 0.5 0.2 0.2\n",
        "tiny": "1 0.505469 0.507292 0.007813 0.010417\n",  # inside one pixel
        "dup": "2 0.5 0.5 0.25 0.25\n2 0.5 0.5 0.25 0.25\n",  # exact repeat: dropped, image kept
        "latin": b"1 0.5 0.5 0.2 0.2 \xff\n",
    })
    (root / "images" / "train" / "broken.png").write_bytes(b"not an image")
    os.symlink(outside, root / "images" / "train" / "link.png")
    (tmp_path / "elsewhere").mkdir()
    _png(tmp_path / "elsewhere" / "x.png", 5)
    os.symlink(tmp_path / "elsewhere", root / "images" / "train" / "escape")
    report = import_yolo(data, tmp_path / "out")
    counts = report.counts()
    assert counts["images"]["valid"] == 3  # ok, empty, dup
    assert counts["images"]["by_reason"] == {
        "incomplete_labels": 8, "outside_dataset_root": 2, "unreadable_image_file": 1, "unreadable_label_file": 1,
    }
    assert counts["annotations"]["by_reason"] == {
        "bad_number": 2, "box_outside_image": 1, "box_too_small": 1, "class_out_of_range": 1,
        "coordinate_out_of_range": 1, "degenerate_box": 1, "duplicate_line": 1, "wrong_field_count": 1,
    }
    rejected = json.loads((tmp_path / "out" / "rejected.json").read_text())
    lines = {(r["file"], r["line"]): r["reason"] for r in rejected["annotations"]}
    assert lines[("labels/train/cls.txt", 1)] == "class_out_of_range"
    assert lines[("labels/train/dup.txt", 2)] == "duplicate_line"
    assert lines[("labels/train/nan.txt", 1)] == "bad_number"
    imgs = {r["file_name"]: r["reason"] for r in rejected["images"]}
    assert imgs["images/train/link.png"] == "outside_dataset_root"
    assert imgs["images/train/escape"] == "outside_dataset_root"
    assert imgs["images/train/broken.png"] == "unreadable_image_file"
    assert imgs["images/train/latin.png"] == "unreadable_label_file"
    shard = Shard(tmp_path / "out")
    kept = {i["conditions"]["source_file_name"]: i["id"] for i in shard.coco["images"]}
    assert sorted(kept) == ["images/train/dup.png", "images/train/empty.png", "images/train/ok.png"]
    by = shard.annotations_by_image()
    assert by[kept["images/train/empty.png"]] == [] and len(by[kept["images/train/dup.png"]]) == 1
    ok = sorted((a["category_id"], a["bbox"]) for a in by[kept["images/train/ok.png"]])
    # "3" -> id 4; "7" -> id 8 at x 9.6..16, y 9.6..19.2 px: every touched pixel, 9..15 x 9..19
    assert ok == [(4, [24, 18, 16, 12]), (8, [9, 9, 7, 11])]
    assert shard.manifest["import"]["format"] == "yolo" and shard.manifest["kind"] == "imported"


def test_no_valid_image_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    data = _dataset(tmp_path / "ds", {"a": "12 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2\n"})
    out = tmp_path / "out"
    rc = main(["data", "import-yolo", "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith("error: --data train: no valid image remains in")
    assert "class_out_of_range 1" in err and "wrong_field_count 1" in err and "nothing was written" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    # valid images but not one labelled object (no label files at all): refused the same way
    data = _dataset(tmp_path / "bare", {"a": None, "b": None})
    assert main(["data", "import-yolo", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data train: no valid labelled object remains") and "\n" not in err
    assert "add label files" in err and not out.exists()


def test_symlink_loop_inside_the_root_is_walked_once_and_bom_is_ignored(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds", {"a": b"\xef\xbb\xbf3 0.5 0.5 0.25 0.25\r\n"})
    os.symlink(tmp_path / "ds" / "images", tmp_path / "ds" / "images" / "train" / "loop")
    report = import_yolo(data, tmp_path / "out")
    assert report.counts()["images"] == {"total": 1, "valid": 1, "rejected": 0, "by_reason": {}}
    assert report.counts()["annotations"]["valid"] == 1


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"train": "images/train", "names": DIGITS, "path": "nope"}, " path: must be the dataset's root folder"),
        ({"train": "images/train"}, "names: must be a non-empty list"),
        ({"train": "../../..", "names": DIGITS}, "train: must be a folder inside the dataset root"),
        ({"val": "images/train", "names": DIGITS}, "train: must name the train image folder"),
        ({"train": "images/train", "names": ["cat", "dog"]}, "['cat', 'dog'] do not"),
    ],
)
def test_bad_data_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict, needle: str) -> None:
    from flows.cli import main

    data = _dataset(tmp_path / "ds", {"a": "1 0.5 0.5 0.2 0.2\n"})
    data.write_text(yaml.safe_dump(doc))
    rc = main(["data", "import-yolo", "--data", str(data.parent), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_classes_map_renames_and_drops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    data = _dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.25 0.25\n1 0.2 0.3 0.1 0.2\n2 0.8 0.7 0.1 0.2\n"},
                    names={0: "seven", 1: "three", 2: "cat"})
    argv = ["data", "import-yolo", "--data", str(data), "--out", str(tmp_path / "out")]
    assert main(argv) == 2  # names are not digits classes: refused without a map
    assert "pass --classes MAP.yaml" in capsys.readouterr().err
    cmap = tmp_path / "map.yaml"
    cmap.write_text(yaml.safe_dump({"seven": "7", "three": 3, "cat": None}))
    assert main([*argv, "--classes", str(cmap)]) == 0
    shard = Shard(tmp_path / "out")
    anns = shard.coco["annotations"]
    assert sorted(a["category_id"] for a in anns) == [4, 8]  # "3" -> 4, "7" -> 8; cat dropped
    assert {a["attributes"]["source_category"] for a in anns} == {"seven", "three"}
    rejected = json.loads((tmp_path / "out" / "rejected.json").read_text())
    assert [(r["line"], r["reason"]) for r in rejected["annotations"]] == [(3, "class_dropped")]
    cmap.write_text(yaml.safe_dump({"seven": "7", "three": "3", "cat": "kitten"}))
    assert main([*argv, "--classes", str(cmap), "--out", str(tmp_path / "o2")]) == 2
    assert "['kitten'] do not" in capsys.readouterr().err
    cmap.write_text(yaml.safe_dump({"sevn": "7"}))
    assert main([*argv, "--classes", str(cmap), "--out", str(tmp_path / "o3")]) == 2
    assert "--classes sevn: must be a dataset class name" in capsys.readouterr().err


def test_label_path_follows_ultralytics() -> None:
    assert label_path("images/train/a.jpg") == "labels/train/a.txt"
    assert label_path("train/images/sub/b.PNG") == "train/labels/sub/b.txt"
    assert label_path("images/x/images/c.png") == "images/x/labels/c.txt"


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_split_is_reproducible_sized_and_atomic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    src = _digit_shard(tmp_path / "src", n=20)
    base = ["data", "split", "--data", str(src)]
    assert main([*base, "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert "real-test" in capsys.readouterr().out
    split_shard(src, tmp_path / "b", seed=3)
    split_shard(src, tmp_path / "c", seed=4)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b  # same seed: byte-identical, fingerprints included
    assert a != c
    ids = {s: json.loads((tmp_path / "a" / "split.json").read_text())["image_ids"][s]
           for s in ("real-train", "real-val", "real-test")}
    assert [len(ids[s]) for s in ("real-train", "real-val", "real-test")] == [12, 4, 4]
    assert sorted(i for part in ids.values() for i in part) == list(range(1, 21))  # disjoint, complete
    other = json.loads((tmp_path / "c" / "split.json").read_text())["image_ids"]
    assert other["real-test"] != ids["real-test"]
    # every image and annotation of the source survives the split unchanged
    srcs = Shard(src)
    src_boxes = dict(zip([i["id"] for i in srcs.coco["images"]], _boxes(srcs), strict=True))
    for s in ids:
        part = Shard(tmp_path / "a" / s)
        part.verify()
        assert part.manifest["kind"] == "real" and part.manifest["split"] == s
        assert _boxes(part) == [src_boxes[i] for i in ids[s]]
    fps = {Shard(tmp_path / d / "real-val").fingerprint for d in "abc"}
    assert len(fps) == 2
    # fractions that leave a split empty are refused, and nothing is written
    assert main([*base, "--out", str(tmp_path / "d"), "--val", "0.5", "--test", "0.5"]) == 2
    assert "--val + --test" in capsys.readouterr().err and not (tmp_path / "d").exists()
    # a file that fails its checksum after real-train and real-val are written: none is published
    last = Shard(src).coco["images"][ids["real-test"][-1] - 1]["file_name"]  # written last
    (src / last).write_bytes(b"edited")
    with pytest.raises(ShardError, match="does not match its sha256"):
        split_shard(src, tmp_path / "f", seed=3)
    assert not (tmp_path / "f").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    small = _digit_shard(tmp_path / "small", n=2)
    with pytest.raises(DataError, match="at least 3 images"):
        split_shard(small, tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_split_is_a_real_dir_the_loop_accepts_with_real_test_held_out(tmp_path: Path) -> None:
    from flows.loop.state import LoopConfig
    from flows.loop.steps import prepare_real
    from trainer.data import DataSource, check_source

    src = _digit_shard(tmp_path / "src", n=10)
    split_shard(src, tmp_path / "real")
    cfg = LoopConfig(workdir=str(tmp_path / "work"), real_dir=str(tmp_path / "real"))
    assert prepare_real(cfg).built is False  # reused as is, not rebuilt
    assert open_real_split(tmp_path / "real", "real-val", "validate").manifest["split"] == "real-val"
    assert open_real_split(tmp_path / "real", "real-test", "final-report").manifest["split"] == "real-test"
    with pytest.raises(DataError, match="held out"):
        open_real_split(tmp_path / "real", "real-test", "train")
    with pytest.raises(DataError, match="held out"):
        check_source(DataSource(tmp_path / "real" / "real-test"))
    check_source(DataSource(tmp_path / "real" / "real-train"))
    # a real-test shard cannot be re-split into training data
    with pytest.raises(DataError, match="held out"):
        split_shard(tmp_path / "real" / "real-test", tmp_path / "again")
    check_split_access(Shard(tmp_path / "real" / "real-train").manifest, "train")
