"""Every real photograph synthloop uses, and which purpose each one is reserved for.

The photos ship inside installed packages (scikit-image, scikit-learn, matplotlib), so nothing
is downloaded. One registry, :data:`PHOTOS`, names each photo and how to load it; one table,
:data:`ALLOCATION`, reserves each photo for exactly one purpose:

==================  ================================================================
purpose             photos
==================  ================================================================
synthetic-texture   brick, grass, gravel, flower, immunohistochemistry
real-train          coffee, coins, moon, page
real-val            china, camera, clock, text
real-test           astronaut, chelsea, rocket, grace_hopper, hubble_deep_field
production          stereo_motorcycle, cell, retina, microaneurysms
==================  ================================================================

Disjoint by construction: :func:`check_allocation` runs at import and raises if a photo is
reserved twice or a name is unknown, so a synthetic background can never leak the pixels of a
real-test image, and the production stream (a later issue) never repeats a real-test photo.
Textures (brick, grass, gravel) and the two-colour flower go to the generator because they are
backgrounds rather than scenes; the real splits each get a mix of grey and colour photos.

Only the skimage loaders listed here are called: other ``skimage.data`` loaders (eagle,
cells3d, …) try to download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np

from generator.errors import DataError

PURPOSES = ("synthetic-texture", "real-train", "real-val", "real-test", "production")


@dataclass(frozen=True)
class Photo:
    """A bundled photograph: where it comes from and a one-line description."""

    name: str
    package: str  # "skimage" | "sklearn" | "matplotlib"
    description: str


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    out = getattr(skimage.data, name)()
    return out[0] if isinstance(out, tuple) else out  # stereo_motorcycle: (left, right, disparity)


def _sklearn(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    for fname, image in zip(bunch.filenames, bunch.images, strict=True):
        if fname.replace("\\", "/").rsplit("/", 1)[-1] == f"{name}.jpg":
            return np.asarray(image)
    raise DataError(f"photo {name!r}: scikit-learn's sample images do not include {name}.jpg")


def _matplotlib(name: str) -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data(f"{name}.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


_LOADERS: dict[str, Callable[[str], np.ndarray]] = {"skimage": _skimage, "sklearn": _sklearn, "matplotlib": _matplotlib}

PHOTOS: dict[str, Photo] = {
    p.name: p
    for p in [
        Photo("astronaut", "skimage", "portrait of astronaut Eileen Collins, colour"),
        Photo("brick", "skimage", "brick wall texture, grey"),
        Photo("camera", "skimage", "cameraman on a field, grey"),
        Photo("chelsea", "skimage", "Chelsea the cat, colour"),
        Photo("clock", "skimage", "wall clock, grey, motion blurred"),
        Photo("coffee", "skimage", "cup of coffee on a saucer, colour"),
        Photo("coins", "skimage", "Greek coins on a dark cloth, grey"),
        Photo("grass", "skimage", "grass texture, grey"),
        Photo("gravel", "skimage", "gravel texture, grey"),
        Photo("hubble_deep_field", "skimage", "Hubble deep field, dark sky with galaxies, colour"),
        Photo("immunohistochemistry", "skimage", "stained tissue micrograph, colour"),
        Photo("moon", "skimage", "lunar surface, grey"),
        Photo("page", "skimage", "scanned book page with text, grey"),
        Photo("retina", "skimage", "human retina fundus photo, colour"),
        Photo("rocket", "skimage", "rocket on the launch pad, colour"),
        Photo("text", "skimage", "photographed text on a wall, grey"),
        Photo("stereo_motorcycle", "skimage", "motorcycle, left stereo view, colour"),
        Photo("cell", "skimage", "cell micrograph, grey"),
        Photo("microaneurysms", "skimage", "retinal microaneurysms crop, grey, 102x102"),
        Photo("china", "sklearn", "Chinese temple, colour"),
        Photo("flower", "sklearn", "flower close-up, colour"),
        Photo("grace_hopper", "matplotlib", "portrait of Grace Hopper, colour"),
    ]
}

ALLOCATION: dict[str, tuple[str, ...]] = {
    "synthetic-texture": ("brick", "grass", "gravel", "flower", "immunohistochemistry"),
    "real-train": ("coffee", "coins", "moon", "page"),
    "real-val": ("china", "camera", "clock", "text"),
    "real-test": ("astronaut", "chelsea", "rocket", "grace_hopper", "hubble_deep_field"),
    "production": ("stereo_motorcycle", "cell", "retina", "microaneurysms"),
}


def check_allocation(allocation: Mapping[str, tuple[str, ...] | list[str]]) -> None:
    """Raise :class:`DataError` if a photo is unknown or reserved for two purposes."""
    owner: dict[str, str] = {}
    for purpose, names in allocation.items():
        for name in names:
            if name not in PHOTOS:
                raise DataError(
                    f"photo allocation: {purpose!r} names unknown photo {name!r}; "
                    f"known photos: {', '.join(sorted(PHOTOS))}"
                )
            if name in owner:
                raise DataError(
                    f"photo allocation: each photo must serve one purpose, but {name!r} is in both "
                    f"{owner[name]!r} and {purpose!r}; remove it from one of them"
                )
            owner[name] = purpose


check_allocation(ALLOCATION)
SYNTH_TEXTURE_PHOTOS: tuple[str, ...] = ALLOCATION["synthetic-texture"]


def photos_for(purpose: str) -> tuple[str, ...]:
    """The photos reserved for ``purpose`` (one of :data:`PURPOSES`)."""
    if purpose not in ALLOCATION:
        raise DataError(f"photo purpose: must be one of {', '.join(PURPOSES)}, but got {purpose!r}")
    return ALLOCATION[purpose]


def purpose_of(name: str) -> str:
    """Which purpose a photo is reserved for."""
    for purpose, names in ALLOCATION.items():
        if name in names:
            return purpose
    raise DataError(f"photo {name!r}: not in the allocation; known photos: {', '.join(sorted(PHOTOS))}")


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Grey → 3 equal channels, RGBA → RGB, float in [0, 1] → uint8."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        scale = 255.0 if arr.dtype.kind == "f" and float(arr.max(initial=0)) <= 1.0 else 1.0
        arr = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


@cache
def load_photo(name: str) -> np.ndarray:
    """The photo as read-only RGB uint8 ``(H, W, 3)``, decoded once per process."""
    photo = PHOTOS.get(name)
    if photo is None:
        raise DataError(f"photo: unknown name {name!r}; known photos: {', '.join(sorted(PHOTOS))}")
    try:
        raw = _LOADERS[photo.package](name)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"photo {name!r}: cannot be loaded from the installed {photo.package} package ({exc}); reinstall it"
        ) from exc
    rgb = to_rgb_uint8(raw)
    rgb.setflags(write=False)
    return rgb


@cache
def photo_sha256(name: str) -> str:
    """sha256 of the decoded pixels (shape included): the photo's identity in fingerprints."""
    arr = load_photo(name)
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()
