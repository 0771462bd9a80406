"""Real pyrender/EGL renders (Mesa llvmpipe on CPU machines, NVIDIA on a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator.annotations import decode_rle, mask_bbox
from generator.params import uniform_params
from generator.pipeline import RenderJob, render_shard
from generator.scenario import load_scenario
from generator.shard import Shard

pytestmark = [pytest.mark.slow, pytest.mark.render]


PIXEL_FIELDS = {"stats", "object_contrast"}  # measured on the colour image, not on the geometry


def assert_same_render(a: Path, b: Path) -> None:
    """Two renders of one job: geometry exactly equal, colour equal up to Mesa's rare ±1.

    llvmpipe's JIT is not bit-reproducible across processes: a channel value sitting on a
    rounding boundary can come out ±1 (about one value in 30 images at 256², on lit surfaces and
    the backdrop; docs/shard-format.md). Boxes, masks, depth, poses and sampled parameters are
    exact; pixel-measured fields may differ by the effect of those few values (JPEG sensor
    compression can spread one flipped value over its 8x8 block).
    """
    ca, cb = Shard(a).coco, Shard(b).coco
    strip = [{k: v for k, v in x.items() if k not in PIXEL_FIELDS} for x in ca["images"] + ca["annotations"]]
    assert strip == [{k: v for k, v in x.items() if k not in PIXEL_FIELDS} for x in cb["images"] + cb["annotations"]]
    for x, y in zip(ca["images"], cb["images"], strict=True):
        assert x["stats"] == pytest.approx(y["stats"], rel=1e-3, abs=1e-3)
        pa, pb = (np.asarray(Shard(p).load_image(x), dtype=int) for p in (a, b))
        assert np.abs(pa - pb).mean() < 0.01  # a flipped value can move one 8x8 JPEG block, no more
        assert np.array_equal(Shard(a).load_depth(x), Shard(b).load_depth(y))
    for x, y in zip(ca["annotations"], cb["annotations"], strict=True):
        assert x["object_contrast"] == pytest.approx(y["object_contrast"], rel=1e-3, abs=1e-3)


def _job(n: int, seed: int = 0) -> RenderJob:
    s = load_scenario("digits")
    return RenderJob(s, uniform_params(s), n=n, seed=seed, width=96, height=96)


def test_egl_shard_has_exact_annotations(tmp_path) -> None:
    shard = Shard(render_shard(_job(12, seed=5), tmp_path / "s").path)
    anns = shard.coco["annotations"]
    assert len(anns) >= 12
    for a in anns:
        mask = decode_rle(a["segmentation"])
        assert a["bbox"] == mask_bbox(mask) and a["area"] >= 4
        assert 0.0 <= a["visibility"] <= 1.0
    by_image = shard.annotations_by_image()
    img = shard.coco["images"][0]
    depth = shard.load_depth(img)
    assert depth is not None and depth.max() > 0
    for a in by_image[img["id"]]:  # objects are nearer than the backdrop behind them
        mask = decode_rle(a["segmentation"])
        assert np.median(depth[mask]) < np.median(depth[~mask])
    # amodal annotations: the visible mask lies inside the unoccluded one, visibility is their
    # area ratio, and occluders in uniform digits scenes do hide part of some digits
    for a in anns:
        visible, amodal = decode_rle(a["segmentation"]), decode_rle(a["amodal_segmentation"])
        assert not (visible & ~amodal).any()
        assert a["visibility"] == pytest.approx(visible.sum() / amodal.sum(), abs=1e-3)
    assert min(a["visibility"] for a in anns) < 0.9


def test_two_workers_match_one(tmp_path) -> None:
    one = render_shard(_job(8, seed=3), tmp_path / "one", workers=1)
    two = render_shard(_job(8, seed=3), tmp_path / "two", workers=2)
    assert_same_render(one.path, two.path)


def _cli_render(out: Path, seed: int) -> str:
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "render",
        "-n",
        "6",
        "--seed",
        str(seed),
        "--size",
        "64",
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("fingerprint"))


def test_determinism_across_processes(tmp_path) -> None:
    fa, fb, fc = _cli_render(tmp_path / "a", 11), _cli_render(tmp_path / "b", 11), _cli_render(tmp_path / "c", 12)
    assert fa == fb != fc
    assert_same_render(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "annotations.json").read_bytes() != (tmp_path / "c" / "annotations.json").read_bytes()


@pytest.mark.parametrize("side", [101, 128])
def test_a_texture_of_any_width_is_uploaded_unsheared(side: int) -> None:
    """A backdrop texture whose RGB row is not a multiple of 4 bytes (the photo crops have any
    side) maps like one that is: with OpenGL's default 4-byte row alignment it came out sheared,
    channels rotated, and read past the end of its array (llvmpipe segfaulted in Dask workers)."""
    from generator.render import Camera, SceneSpec
    from generator.render.pyrender_backend import PyrenderRenderer
    from generator.scenes.common import background_plane

    texture = np.zeros((side, side, 3), np.uint8)
    texture[:, side // 2 :] = (255, 40, 0)  # right half red-orange, left half black: a vertical edge
    camera = Camera(yfov=0.8, width=96, height=96, pose=np.eye(4))
    spec = SceneSpec(objects=[background_plane(camera, 3.0, texture)], lights=[], camera=camera, ambient=(1, 1, 1))
    r = PyrenderRenderer(96, 96)
    try:
        color = r.render(spec, amodal=False).color.astype(int)
    finally:
        r.close()
    red = color[..., 0] > 10  # ambient light only: the lit red is dim (about 21)
    edge = [int(np.argmax(row)) for row in red]  # first red column of every row
    assert red[:, -1].all() and not red[:, 0].any()
    assert max(edge) - min(edge) <= 1, f"the edge is slanted: first red column {min(edge)}..{max(edge)}"
    assert color[..., 2].max() <= 2  # no blue anywhere: channels not rotated
