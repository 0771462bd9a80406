"""Render pipeline with the numpy fake renderer: annotations, determinism, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from generator.annotations import decode_rle, mask_bbox
from generator.params import uniform_params
from generator.pipeline import RenderJob, render_shard
from generator.render import Camera, Light, SceneObject, SceneSpec, possibly_occluded
from generator.render.fake import FakeRenderer
from generator.scenario import load_scenario
from generator.scenes import common
from generator.shard import Shard


def _job(n: int = 6, seed: int = 0, scenario: str = "digits") -> RenderJob:
    s = load_scenario(scenario)
    return RenderJob(s, uniform_params(s), n=n, seed=seed, width=64, height=64, backend="fake")


def _square(x: float, y: float, z: float, half: float, role: str = "object") -> SceneObject:
    v = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]], float)
    return SceneObject(
        vertices=v,
        faces=np.array([[0, 1, 2], [0, 2, 3]]),
        pose=common.translate(x, y, z),
        color=(1, 1, 1),
        category_id=1 if role == "object" else None,
        role=role,
    )


def _scene(objects: list[SceneObject]) -> SceneSpec:
    cam = Camera(yfov=np.radians(40), width=64, height=64, pose=common.translate(0, 0, 5))
    return SceneSpec(objects=objects, lights=[Light("directional", (1, 1, 1), 3.0, np.eye(4))], camera=cam)


def test_occluder_in_front_lowers_visibility_and_keeps_amodal() -> None:
    scene = _scene([_square(0, 0, 0, 0.5), _square(0.5, 0, 1.0, 0.5, role="occluder")])
    out = FakeRenderer(64, 64).render(scene)
    visible = out.instance == 1
    amodal = out.amodal[0]
    assert amodal.sum() > visible.sum() > 0
    assert not (visible & ~amodal).any()
    assert possibly_occluded(scene) == {0}
    assert possibly_occluded(_scene([_square(-1, 0, 0, 0.3), _square(1, 0, 0, 0.3)])) == set()


def test_shard_boxes_equal_mask_extents_and_pose_is_rigid(tmp_path) -> None:
    r = render_shard(_job(8), tmp_path / "s")
    shard = Shard(r.path)
    assert r.images == 8 and r.annotations == len(shard.coco["annotations"]) > 0
    for a in shard.coco["annotations"]:
        mask = decode_rle(a["segmentation"])
        assert a["bbox"] == mask_bbox(mask)
        assert a["area"] == mask.sum()
        assert (decode_rle(a["amodal_segmentation"]) >= mask).all()
        R = np.array(a["pose"])[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-4)
        assert np.array(a["pose"])[2, 3] > 0  # in front of the camera (OpenCV +z forward)
        assert "digit.font" in a["attributes"]
    img = shard.coco["images"][0]
    assert "light.intensity" in img["conditions"] and "brightness" in img["stats"]
    assert shard.load_depth(img).shape == (64, 64)
    df = shard.conditions()
    assert {"param.light.intensity", "obj.digit.size", "stat.brightness", "pixel_size"} <= set(df.columns)


def test_same_seed_same_bytes_different_seed_differs(tmp_path) -> None:
    a = render_shard(_job(5, seed=1), tmp_path / "a")
    b = render_shard(_job(5, seed=1), tmp_path / "b")
    c = render_shard(_job(5, seed=2), tmp_path / "c")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    ann = [(p / "annotations.json").read_bytes() for p in (a.path, b.path, c.path)]
    assert ann[0] == ann[1] != ann[2]


def test_interrupted_render_publishes_nothing(tmp_path) -> None:
    def boom(entry: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_shard(_job(4), tmp_path / "s", progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_reuse_skips_a_finished_shard_with_the_same_fingerprint(tmp_path) -> None:
    first = render_shard(_job(3), tmp_path / "s")
    again = render_shard(_job(3), tmp_path / "s", reuse=True)
    assert again.reused and again.fingerprint == first.fingerprint
    other = render_shard(_job(3, seed=9), tmp_path / "s", reuse=True)
    assert not other.reused
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["seed"] == 9


def test_shapes_scenario_renders_through_the_same_pipeline(tmp_path) -> None:
    r = render_shard(_job(4, scenario="shapes"), tmp_path / "shapes")
    shard = Shard(r.path)
    assert shard.classes[0] == "cube"
    assert {a["attributes"]["shape.class"] for a in shard.coco["annotations"]} <= set(shard.classes)
