"""The render pipeline's fast paths give the same labels as the plain paths they replace.

- pyrender backend: SEG and DEPTH_ONLY passes with ``lean_reads`` (only the used buffer is
  resolved and read back) against pyrender's own read-back (``lean_reads=False``), on a
  fixed-seed shard's scenes: instance ids, amodal masks, depth and colour exactly equal, so a
  stale or misplaced read (a skipped blit, a missing flip, the previous pass's buffer) fails;
- sensor effects and object statistics (in place, luma once, window crops) against the
  straightforward formulas they replaced, bit for bit;
- the shard's own PNG writer decodes to exactly the arrays written;
- the 1-worker pipeline's background encode thread gives the serial path's entries, in order,
  and an error on that thread surfaces at its image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from generator import imagestats, sensor
from generator.params import uniform_params
from generator.pipeline import ImageRenderer, RenderJob
from generator.scenario import load_scenario


def _specs(n: int, size: int, seed: int) -> list[Any]:
    s = load_scenario("digits")
    r = ImageRenderer(RenderJob(s, uniform_params(s), n=n, seed=seed, width=size, height=size, backend="fake"), Path())
    return [r.scene(i)[0] for i in range(n)]


@pytest.mark.slow
@pytest.mark.render
def test_lean_reads_match_pyrender_read_back() -> None:
    from generator.render.pyrender_backend import PyrenderRenderer

    specs = _specs(12, 96, seed=11)
    outs = {}
    for lean in (True, False):  # one EGL renderer at a time (DESIGN.md)
        r = PyrenderRenderer(96, 96, lean_reads=lean)
        try:
            assert r._lean is lean  # the fast path is the one under test
            outs[lean] = [r.render(spec) for spec in specs]
        finally:
            r.close()
    occluded = 0
    # each pass follows another scene's or another kind's pass, so a stale read shows
    for a, b in zip(outs[True], outs[False], strict=True):
        assert np.array_equal(a.instance, b.instance)
        assert a.amodal.keys() == b.amodal.keys()
        for i in a.amodal:
            assert a.amodal[i].dtype == bool and np.array_equal(a.amodal[i], b.amodal[i])
        assert np.array_equal(a.depth, b.depth) and np.array_equal(a.color, b.color)
        assert a.instance.max() > 0
        occluded += len(a.amodal)
    assert occluded >= 3  # the DEPTH_ONLY path ran


def _sensor_reference(color: np.ndarray, values: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """generator.sensor.apply as first written (allocating at each step)."""
    img = color.astype(np.float64) / 255.0
    sigma = float(values.get("sensor.blur", 0.0))
    if sigma > 0.05:
        img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
    length = float(values.get("sensor.motion_blur", 0.0))
    if length >= 1.0:
        k = sensor.motion_kernel(length, float(rng.uniform(0, 180)))
        img = np.stack([ndimage.convolve(img[..., c], k, mode="nearest") for c in range(3)], axis=-1)
    img = img * 2.0 ** float(values.get("sensor.exposure", 0.0))
    noise = float(values.get("sensor.noise", 0.0))
    if noise > 0:
        img = img + rng.normal(0.0, noise / 255.0, img.shape)
    img = np.clip(img, 0.0, 1.0) ** float(values.get("sensor.gamma", 1.0))
    out = (img * 255.0 + 0.5).astype(np.uint8)
    quality = int(values.get("sensor.jpeg_quality", 100))
    if quality < 100:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    return out


def _object_contrast_reference(image: np.ndarray, mask: np.ndarray) -> float:
    g = imagestats.grey(image)
    if not mask.any() or mask.all():
        return 0.0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    pad = max(2, int(0.25 * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)))
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, g.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, g.shape[1])
    ring = np.zeros_like(mask)
    ring[r0:r1, c0:c1] = True
    ring &= ~mask
    if not ring.any():
        return 0.0
    return float(abs(g[mask].mean() - g[ring].mean()))


def test_sensor_and_statistics_match_reference_formulas() -> None:
    from skimage.morphology import skeletonize

    rng = np.random.default_rng(123)
    for trial in range(60):
        h, w = int(rng.integers(16, 90)), int(rng.integers(16, 90))
        color = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        values: dict[str, Any] = {
            "sensor.blur": float(rng.choice([0.0, 0.03, rng.uniform(0, 3)])),
            "sensor.motion_blur": float(rng.choice([0.0, 0.9, rng.uniform(0, 8)])),
            "sensor.exposure": float(rng.uniform(-1, 1)),
            "sensor.noise": float(rng.choice([0.0, rng.uniform(0, 12)])),
            "sensor.gamma": float(rng.choice([1.0, 0.5, 2.0, 1 / 2.2, rng.uniform(0.4, 2.5)])),
            "sensor.jpeg_quality": int(rng.choice([100, rng.integers(30, 100)])),
        }
        seed = int(rng.integers(1 << 30))
        r_new, r_ref = np.random.default_rng(seed), np.random.default_rng(seed)
        out = sensor.apply(color, values, r_new)
        assert np.array_equal(out, _sensor_reference(color, values, r_ref)), values
        assert r_new.random() == r_ref.random()  # the same draws were consumed
        mask = np.zeros((h, w), dtype=bool)
        y, x = rng.integers(0, h), rng.integers(0, w)
        mask[y : y + int(rng.integers(1, 30)), x : x + int(rng.integers(1, 30))] = True
        mask &= rng.random((h, w)) < 0.85
        if trial % 10 == 0:
            mask[:] = trial % 20 == 0  # everything or nothing
        g = imagestats.grey(out)
        assert imagestats.object_contrast(out, mask, g) == _object_contrast_reference(out, mask)
        area = int(mask.sum())
        expected = 0.0 if area == 0 else float(area / max(int(skeletonize(mask).sum()), 1))
        assert imagestats.stroke_width(mask) == expected
        stats = imagestats.image_stats(out, g)
        assert stats == imagestats.image_stats(out)
        assert stats["brightness"] == imagestats.brightness(out) and stats["noise"] == imagestats.noise_sigma(out)


def test_png_writer_is_lossless_for_shard_arrays() -> None:
    from generator.shard import _png_bytes

    rng = np.random.default_rng(5)
    for t in range(60):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        arrays = [
            (rng.random((h, w, 3)) * 256).astype(np.uint8),  # image
            (rng.random((h, w)) * 256).astype(np.uint8),  # semantic
            (rng.random((h, w)) * 65536).astype(np.uint16),  # depth in mm
        ]
        for a in arrays:
            if t % 5 == 0:
                a[:] = a.flat[0]
            with Image.open(io.BytesIO(_png_bytes(a))) as im:
                assert im.mode == {3: "RGB", 2: "L" if a.dtype == np.uint8 else "I;16"}[a.ndim]
                assert np.array_equal(np.asarray(im), a)
    rgba = (rng.random((9, 7, 4)) * 256).astype(np.uint8)  # other arrays: through Pillow
    with Image.open(io.BytesIO(_png_bytes(rgba))) as im:
        assert np.array_equal(np.asarray(im), rgba)


def test_pipelined_entries_equal_serial_ones_and_errors_surface(tmp_path: Path, monkeypatch) -> None:
    from generator import pipeline

    s = load_scenario("digits")
    job = RenderJob(s, uniform_params(s), n=7, seed=4, width=64, height=64, backend="fake")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    serial = [pipeline.ImageRenderer(job, tmp_path / "a")(i) for i in range(job.n)]
    piped = list(pipeline.ImageRenderer(job, tmp_path / "b").pipelined(range(job.n), ahead=2))
    assert [e.index for e in piped] == list(range(job.n))
    assert [(e.image, e.annotations, e.files) for e in piped] == [(e.image, e.annotations, e.files) for e in serial]

    real = pipeline.encode_image

    def failing(record: Any, root: Path, times: Any) -> Any:
        if record.index == 3:
            raise OSError("disk full")
        return real(record, root, times)

    monkeypatch.setattr(pipeline, "encode_image", failing)
    got = []
    with pytest.raises(OSError, match="disk full"):
        for e in pipeline.ImageRenderer(job, tmp_path / "b").pipelined(range(job.n), ahead=2):
            got.append(e.index)
    assert got == [0, 1, 2]  # in order, up to the failing image


@pytest.mark.slow
@pytest.mark.render
def test_pipelined_pyrender_entries_equal_the_plain_serial_path(tmp_path: Path) -> None:
    """Scene graphs built ahead on the scene thread, lean reads, the encode thread: the same
    entries (labels, statistics, file hashes) as image-by-image rendering through pyrender's
    own read-back, so a scene graph paired with the wrong image (a stale pose) fails."""
    from generator.pipeline import ImageRenderer
    from generator.render.pyrender_backend import PyrenderRenderer

    s = load_scenario("digits")
    job = RenderJob(s, uniform_params(s), n=8, seed=21, width=80, height=80)
    (tmp_path / "fast").mkdir()
    (tmp_path / "plain").mkdir()
    fast = ImageRenderer(job, tmp_path / "fast")
    try:
        got = list(fast.pipelined(range(job.n)))
    finally:
        fast.close()
    plain = ImageRenderer(job, tmp_path / "plain")
    plain.renderer.close()  # one EGL renderer at a time
    plain.renderer = PyrenderRenderer(job.width, job.height, lean_reads=False)
    try:
        want = [plain(i) for i in range(job.n)]
    finally:
        plain.close()
    assert [(e.index, e.image, e.annotations, e.files) for e in got] == [
        (e.index, e.image, e.annotations, e.files) for e in want
    ]
