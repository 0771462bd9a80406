"""Condition tables: metadata when the shard has it, estimates from pixels and boxes otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from shardmaker import make_shard

from evaluator.conditions import box_values, condition_tables
from generator.annotations import encode_rle
from generator.shard import Shard


def _bare_coco(with_area: bool = True, with_mask: bool = False) -> dict:
    """Two 40×40 images without stats; one 3-px-wide vertical bar each (imported-COCO style)."""
    mask = np.zeros((40, 40), bool)
    mask[5:35, 10:13] = True
    anns = []
    for i in (1, 2):
        a = {"id": i, "image_id": i, "category_id": 1, "bbox": [10.0, 5.0, 3.0, 30.0], "iscrowd": 0}
        if with_area:
            a["area"] = 90.0
        if with_mask:
            a["segmentation"] = encode_rle(mask)
        anns.append(a)
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 40} for i in (1, 2)],
            "annotations": anns, "categories": [{"id": 1, "name": "bar"}]}


def _loader(levels: dict[int, int], bar: int = 250):
    def load(img: dict) -> np.ndarray:
        px = np.full((40, 40, 3), levels[img["id"]], np.uint8)
        px[5:35, 10:13] = bar
        return px
    return load


def test_brightness_estimated_from_pixels_when_metadata_is_absent():
    t = condition_tables(_bare_coco(), load_image=_loader({1: 10, 2: 200}))
    b = t.images.set_index("image_id")["stat.brightness"]
    assert b[1] < 30 < 150 < b[2]  # the dark image is dark
    assert t.sources["stat.brightness"] == "estimated"
    assert t.objects.set_index("ann_id").loc[1, "stat.brightness"] == b[1]  # repeated per object
    assert set(t.images.columns) >= {"stat.contrast", "stat.sharpness", "stat.noise", "stat.texture"}


def test_without_pixels_missing_stats_stay_missing():
    t = condition_tables(_bare_coco())
    assert t.images["stat.brightness"].isna().all()
    assert t.sources["stat.brightness"] == "missing"


def test_object_conditions_from_area_box_and_mask():
    t = condition_tables(_bare_coco(with_area=True, with_mask=True), load_image=_loader({1: 10, 2: 10}))
    o = t.objects.set_index("ann_id").loc[1]
    assert o["pixel_size"] == pytest.approx(np.sqrt(90.0))
    assert o["stroke_width"] == pytest.approx(3.0, rel=0.15)
    assert abs(o["slant"]) < 1.0  # upright bar
    assert o["object_contrast"] == pytest.approx(240.0, abs=1.0)
    assert t.sources["stroke_width"] == "estimated" and t.sources["pixel_size"] == "metadata"
    no_area = condition_tables(_bare_coco(with_area=False))
    assert no_area.objects["pixel_size"].tolist() == pytest.approx([np.sqrt(90.0)] * 2)  # √(w·h)
    assert no_area.sources["pixel_size"] == "estimated"
    assert no_area.objects["stroke_width"].isna().all()  # no mask: cannot be estimated


def test_shard_metadata_is_used_without_loading_pixels(tmp_path):
    shard = Shard(make_shard(tmp_path / "s", n=5))

    def forbidden(img: dict) -> np.ndarray:
        raise AssertionError("pixels loaded although the shard carries the metadata")

    t = condition_tables(shard.coco, shard.conditions(), load_image=forbidden)
    assert len(t.images) == 5 and len(t.objects) == len(shard.coco["annotations"])
    stats = {i["id"]: i["stats"]["brightness"] for i in shard.coco["images"]}
    assert t.images.set_index("image_id")["stat.brightness"].to_dict() == pytest.approx(stats)
    assert all(t.sources[c] == "metadata" for c in ("stat.brightness", "pixel_size", "visibility"))
    assert "param.light.intensity" in t.images.columns
    assert "obj.object.scale" in t.objects.columns


def test_parquet_fills_what_annotations_json_lacks(tmp_path):
    shard = Shard(make_shard(tmp_path / "s", n=3))
    coco = shard.coco
    for img in coco["images"]:
        img.pop("stats")
    t = condition_tables(coco, shard.conditions())  # no loader: stats must come from parquet
    assert t.images["stat.brightness"].notna().all()
    assert t.sources["stat.brightness"] == "metadata"


def test_box_values_put_predicted_boxes_on_the_true_objects_scale():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 4, 16]], float)
    assert box_values("pixel_size", boxes, 0.25).tolist() == pytest.approx([5.0, 4.0])
    assert box_values("box_size", boxes, 0.25).tolist() == [10.0, 16.0]
    assert box_values("stroke_width", boxes, 0.25) is None
