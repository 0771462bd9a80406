"""Annotation maths on hand-made masks (no renderer)."""

from __future__ import annotations

import numpy as np

from generator import annotations as ann
from generator import imagestats


def test_single_pixel_box_and_rle_round_trip() -> None:
    m = np.zeros((10, 12), bool)
    m[3, 7] = True
    assert ann.mask_bbox(m) == [7.0, 3.0, 1.0, 1.0]
    rle = ann.encode_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [10, 12]
    assert (ann.decode_rle(rle) == m).all()
    assert ann.mask_bbox(np.zeros((4, 4), bool)) == [0.0, 0.0, 0.0, 0.0]


def test_visibility_is_visible_over_amodal() -> None:
    amodal = np.zeros((8, 8), bool)
    amodal[2:6, 2:6] = True
    visible = amodal.copy()
    visible[2:6, 4:6] = False
    assert ann.visibility(visible, amodal) == 0.5
    assert ann.visibility(visible, np.zeros_like(amodal)) == 0.0


def test_truncation_from_projected_points() -> None:
    K = np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    inside = np.array([[-0.1, -0.1, 1.0], [0.1, 0.1, 1.0]])  # projects to [4, 6]^2
    assert ann.truncation(inside, K, 10, 10) == 0.0
    half_out = np.array([[0.0, -0.1, 1.0], [1.0, 0.1, 1.0]])  # x from 5 to 15 in a 10-wide image
    assert abs(ann.truncation(half_out, K, 10, 10) - 0.5) < 1e-9


def test_depth_png_is_millimetres_and_saturates() -> None:
    d = np.array([[0.0, 1.2345, 70.0, np.nan]])
    assert ann.depth_to_png_mm(d).tolist() in ([[0, 1234, 65535, 0]], [[0, 1235, 65535, 0]])


def test_semantic_mask_lookup() -> None:
    inst = np.array([[0, 1, 2], [2, 3, 0]])
    sem = ann.semantic_mask(inst, {1: 5, 2: 7})
    assert sem.tolist() == [[0, 5, 7], [7, 0, 0]]


def test_image_stats_move_with_the_image() -> None:
    rng = np.random.default_rng(0)
    dark = np.full((32, 32, 3), 20, np.uint8)
    bright = np.full((32, 32, 3), 220, np.uint8)
    assert imagestats.brightness(dark) < 30 < 200 < imagestats.brightness(bright)
    noisy = np.clip(bright.astype(float) - 60 + rng.normal(0, 15, bright.shape), 0, 255).astype(np.uint8)
    assert imagestats.noise_sigma(noisy) > 5 * (imagestats.noise_sigma(bright) + 1e-3)
    sharp = np.zeros((32, 32, 3), np.uint8)
    sharp[:, 16:] = 255
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(sharp.astype(float), sigma=(2, 2, 0)).astype(np.uint8)
    assert imagestats.sharpness(blurred) < imagestats.sharpness(sharp) / 4


def test_stroke_width_and_slant_from_masks() -> None:
    thin = np.zeros((40, 40), bool)
    thin[5:35, 19:21] = True
    thick = np.zeros((40, 40), bool)
    thick[5:35, 16:24] = True
    assert imagestats.stroke_width(thin) < imagestats.stroke_width(thick)
    lean = np.zeros((40, 40), bool)
    for r in range(5, 35):
        c = 30 - (r - 5) // 2  # top is to the right
        lean[r, c - 1 : c + 2] = True
    assert imagestats.slant(lean) > 10
    assert abs(imagestats.slant(thick)) < 1e-6
