"""COCO metrics (pycocotools) and the evaluator's own matching / AP, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.ap import average_precision
from evaluator.cocometrics import coco_metrics
from evaluator.matching import match_predictions, validate_predictions
from evaluator.slices import ap_data
from generator.annotations import encode_rle
from generator.errors import DataError


def _coco(images: list[tuple[int, list[tuple[int, list[float]]]]], n_classes: int = 2) -> dict:
    anns = []
    for image_id, objs in images:
        for cat, box in objs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {"images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"}
                       for i, _ in images],
            "annotations": anns,
            "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]}


def _pred(image_id: int, cat: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}


def test_two_objects_one_perfect_detection_gives_recall_half_and_known_ap(capsys):
    gt = _coco([(1, [(1, [10, 10, 20, 20]), (1, [60, 60, 20, 20])])], n_classes=1)
    preds = [_pred(1, 1, [10, 10, 20, 20], 0.9)]
    m = match_predictions(gt, preds)
    assert m.gt["detected"].tolist() == [True, False]
    assert m.gt["detected"].mean() == 0.5
    assert m.preds["tp"].tolist() == [True]
    metrics = coco_metrics(gt, preds)["bbox"]
    # precision 1 at recall thresholds 0.00 .. 0.50 (51 of COCO's 101 points), 0 above
    assert metrics["map50"] == pytest.approx(51 / 101)
    assert metrics["map"] == pytest.approx(51 / 101)  # perfect box: same at every IoU
    assert metrics["per_class_ap50"] == {1: pytest.approx(51 / 101)}
    assert average_precision(ap_data(m, [1])) == pytest.approx(51 / 101)
    assert capsys.readouterr().out == ""  # COCOeval's prints are captured


def test_empty_predictions_give_zero_not_a_crash():
    gt = _coco([(1, [(1, [10, 10, 20, 20])]), (2, [])])
    metrics = coco_metrics(gt, [])
    assert metrics["bbox"]["map"] == 0.0 and metrics["bbox"]["map50"] == 0.0
    assert metrics["bbox"]["per_class_ap50"] == {1: 0.0, 2: None}  # class 2 has no objects
    assert metrics["segm"] is None
    m = match_predictions(gt, [])
    assert not m.gt["detected"].any() and len(m.preds) == 0
    assert average_precision(ap_data(m, [1, 2])) == 0.0


def _random_case(rng: np.random.Generator, n_images: int = 30) -> tuple[dict, list[dict]]:
    images, preds = [], []
    for i in range(1, n_images + 1):
        objs = []
        for _ in range(int(rng.integers(0, 4))):  # some images have no objects
            x, y, s = [*rng.uniform(0, 70, 2).tolist(), float(rng.uniform(8, 30))]
            objs.append((int(rng.integers(1, 4)), [x, y, s, s]))
        images.append((i, objs))
        for cat, (x, y, w, h) in objs:
            if rng.random() < 0.8:  # jittered detection, sometimes of the wrong class
                c = cat if rng.random() < 0.9 else int(rng.integers(1, 4))
                j = rng.normal(0, 3, 4)
                preds.append(_pred(i, c, [x + j[0], y + j[1], max(1, w + j[2]), max(1, h + j[3])],
                                   float(rng.uniform(0.05, 1))))
        for _ in range(int(rng.integers(0, 2))):  # false positives
            preds.append(_pred(i, int(rng.integers(1, 4)),
                               [*rng.uniform(0, 80, 2).tolist(), 15.0, 15.0],
                               float(rng.uniform(0.05, 1))))
    return _coco(images, n_classes=3), preds


def test_own_ap_equals_cocoeval_ap50_on_random_cases():
    rng = np.random.default_rng(7)
    for _ in range(3):
        gt, preds = _random_case(rng)
        reference = coco_metrics(gt, preds)["bbox"]
        m = match_predictions(gt, preds, iou=0.5)
        ours = average_precision(ap_data(m, [i["id"] for i in gt["images"]]))
        assert ours == pytest.approx(reference["map50"], abs=1e-9)
        for cid in (1, 2, 3):
            sel = m.gt["category_id"].to_numpy() == cid
            psel = m.preds["category_id"].to_numpy() == cid
            own = average_precision(ap_data(m, [i["id"] for i in gt["images"]], sel, psel))
            assert own == pytest.approx(reference["per_class_ap50"][cid], abs=1e-9)


def test_greedy_matching_by_score_duplicates_and_classes():
    gt = _coco([(1, [(1, [0, 0, 10, 10]), (2, [50, 50, 10, 10])])])
    preds = [
        _pred(1, 1, [1, 0, 10, 10], 0.6),   # lower score, also overlaps the class-1 object
        _pred(1, 1, [0, 0, 10, 10], 0.8),   # best: takes the object
        _pred(1, 1, [50, 50, 10, 10], 0.9),  # right box, wrong class: FP, object 2 missed
        _pred(1, 1, [0, 0, 10, 5], 0.2),    # IoU exactly 0.5 but below the operating score
    ]
    m = match_predictions(gt, preds, iou=0.5, score_threshold=0.3)
    by_score = m.preds.set_index("score")
    assert bool(by_score.loc[0.8, "tp"]) and by_score.loc[0.8, "ann_id"] == 1
    assert not by_score.loc[0.6, "tp"] and not by_score.loc[0.9, "tp"]
    assert m.gt["detected"].tolist() == [True, False]
    assert m.gt["score"].iloc[0] == 0.8
    assert not by_score.loc[0.2, "above"]


def test_iou_threshold_is_inclusive_and_below_threshold_score_does_not_detect():
    gt = _coco([(1, [(1, [0, 0, 10, 10])])])
    half = [_pred(1, 1, [0, 0, 10, 5], 0.2)]  # IoU = 50 / 100 = 0.5
    m = match_predictions(gt, half, iou=0.5, score_threshold=0.3)
    assert bool(m.preds["tp"].iloc[0]) and m.gt["iou"].iloc[0] == pytest.approx(0.5)
    assert not m.gt["detected"].iloc[0]  # matched, but scored under the operating threshold
    assert match_predictions(gt, half, iou=0.5, score_threshold=0.1).gt["detected"].iloc[0]
    assert not match_predictions(gt, half, iou=0.51).preds["tp"].iloc[0]


def test_mask_metrics_only_when_predictions_carry_masks():
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:30] = True
    gt = _coco([(1, [(1, [10, 10, 20, 20])])], n_classes=1)
    gt["annotations"][0]["segmentation"] = encode_rle(mask)
    box_only = [_pred(1, 1, [10, 10, 20, 20], 0.9)]
    assert coco_metrics(gt, box_only)["segm"] is None
    half = mask.copy()
    half[20:30] = False  # mask IoU 0.5 -> AP 1 at 0.5, 0 above 0.5
    with_mask = [{**box_only[0], "segmentation": encode_rle(half)}]
    segm = coco_metrics(gt, with_mask)["segm"]
    assert segm["map50"] == pytest.approx(1.0) and segm["map75"] == pytest.approx(0.0)


@pytest.mark.parametrize(("pred", "field"), [
    ({"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "image_id"),
    ({"image_id": 1, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5}, "category_id"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 0.5}, "bbox"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}, "bbox"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")}, "score"),
])
def test_malformed_predictions_are_named(pred, field):
    with pytest.raises(DataError, match=rf"predictions\[1\]\.{field}"):
        validate_predictions([_pred(1, 1, [0, 0, 1, 1], 0.5), pred], {1}, {1, 2})
