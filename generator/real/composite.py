"""Composite one image: real MNIST digits alpha-blended onto a crop of a real photo.

Both the foreground and the background pixels are real; only their composition is synthetic.
The digit's own intensity (0–1 after resampling) is the blending alpha, so strokes keep their
anti-aliased edges, and the label is exact:

- the **amodal mask** of a digit is every pixel whose alpha exceeds
  :attr:`CompositeConfig.alpha_threshold` (default 0.35);
- its **visible mask** is the amodal mask minus the amodal masks of digits pasted later
  (later digits occlude earlier ones);
- boxes are computed from the masks by :class:`generator.shard.ShardWriter`.

Digits stay fully inside the image (truncation 0). A later digit may cover at most
:attr:`CompositeConfig.max_occlusion` of any earlier digit.

Ink: each digit's polarity follows the brightness under it (dark ink on light areas, light ink
on dark areas) except with probability ``wrong_polarity``; a digit whose ink would differ from
the local background by less than ``min_ink_contrast`` luma levels flips polarity. One colour
tint per image (a pen) is added to the grey ink level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from generator import imagestats
from generator.errors import field_error
from generator.photos import load_photo
from generator.real.mnist import MnistDigits
from generator.shard import ImageRecord, ObjectRecord

PLACE_TRIES = 60  # positions tried per digit; the digit shrinks by 15% every 15 failures


@dataclass(frozen=True)
class CompositeConfig:
    image_size: int = 128  # square output, pixels
    min_digits: int = 1
    max_digits: int = 4
    digit_size: tuple[int, int] = (14, 56)  # longer side of the pasted digit patch, pixels
    alpha_threshold: float = 0.35  # digit alpha above this is in the mask
    max_occlusion: float = 0.25  # share of an earlier digit's mask later digits may cover
    max_photo_scale: float = 1.0  # largest photo zoom (1 = native pixels); min = whole short side
    wrong_polarity: float = 0.15  # chance of ink polarity against the local brightness
    min_ink_contrast: float = 40.0  # luma levels between ink and local background, at least
    ink_tint: float = 40.0  # max per-channel colour offset of an image's ink

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the option for any out-of-range value."""
        s = self.image_size
        if not 32 <= s <= 1024:
            raise field_error("--image-size", "must be in [32, 1024] pixels", s)
        if not 1 <= self.min_digits <= self.max_digits <= 16:
            raise field_error("--max-digits", f"must be in [{max(self.min_digits, 1)}, 16]", self.max_digits)
        lo, hi = self.digit_size
        if not 8 <= lo <= hi <= s:
            raise field_error(
                "--digit-size", f"must satisfy 8 <= min <= max <= image size ({s})", [lo, hi], "e.g. --digit-size 14 56"
            )
        if not 0.05 <= self.alpha_threshold <= 0.95:
            raise field_error("alpha_threshold", "must be in [0.05, 0.95]", self.alpha_threshold)
        if not 0.0 <= self.max_occlusion < 1.0:
            raise field_error("max_occlusion", "must be in [0, 1)", self.max_occlusion)
        if self.max_photo_scale <= 0:
            raise field_error("max_photo_scale", "must be > 0", self.max_photo_scale)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["digit_size"] = list(self.digit_size)
        return d


def group_digits(indices: np.ndarray, cfg: CompositeConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle the split's digits and cut them into images of min..max digits (each used once)."""
    order = rng.permutation(indices)
    groups: list[np.ndarray] = []
    start = 0
    while start < order.size:
        n = int(rng.integers(cfg.min_digits, cfg.max_digits + 1))
        groups.append(order[start : start + n])
        start += n
    return groups


@lru_cache(maxsize=32)
def _photo_image(name: str) -> Image.Image:
    return Image.fromarray(load_photo(name))


def crop_background(name: str, cfg: CompositeConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """A square crop of the photo at a log-uniform random scale, resampled to the image size.

    The scale runs from "the crop spans the photo's short side" up to ``max_photo_scale``
    (never below the former, so small photos are upsampled). Returns the crop and its record:
    ``crop_box`` ``[x, y, w, h]`` in source-photo pixels and ``photo_scale``.
    """
    photo = load_photo(name)
    h, w = photo.shape[:2]
    size = cfg.image_size
    s_min = size / min(h, w)
    s_max = max(s_min, cfg.max_photo_scale)
    scale = float(np.exp(rng.uniform(np.log(s_min), np.log(s_max)))) if s_max > s_min else s_min
    side = min(size / scale, float(min(h, w)))
    x0 = float(rng.uniform(0.0, w - side))
    y0 = float(rng.uniform(0.0, h - side))
    crop = _photo_image(name).resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    info = {"crop_box": [x0, y0, side, side], "photo_scale": scale}
    return np.asarray(crop.convert("RGB")), info


def digit_alpha(digit: np.ndarray, side: int) -> np.ndarray:
    """Alpha (0–1) of a 28×28 MNIST digit cropped to its ink and resized so its longer side is
    ``side`` pixels (aspect kept; PIL's bilinear filter anti-aliases when shrinking)."""
    rows = np.flatnonzero(digit.any(axis=1))
    cols = np.flatnonzero(digit.any(axis=0))
    ink = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255.0
    h, w = ink.shape
    k = side / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    out = Image.fromarray(np.pad(ink, 1)).resize((size[0] + 2, size[1] + 2), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _occlusion_ok(masks: list[np.ndarray], new: np.ndarray, max_occ: float) -> bool:
    """Would ``new`` (pasted on top) leave every earlier digit at least 1 - max_occ visible?"""
    above = new.copy()
    for m in reversed(masks):
        area = int(m.sum())
        if area and (m & above).sum() > max_occ * area:
            return False
        above |= m
    return True


def place_digit(
    digit: np.ndarray, side: int, masks: list[np.ndarray], cfg: CompositeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int], int]:
    """Choose a size and position for the next digit; returns (alpha, (row, col), side).

    Tries random positions inside the image; every 15 failures the digit shrinks by 15%
    (not below the minimum size). After :data:`PLACE_TRIES` failures the last candidate is
    kept: the writer still labels exactly what is visible.
    """
    size = cfg.image_size
    alpha = digit_alpha(digit, side)
    pos = (0, 0)
    for attempt in range(PLACE_TRIES):
        if attempt and attempt % 15 == 0 and side > cfg.digit_size[0]:
            side = max(cfg.digit_size[0], int(side * 0.85))
            alpha = digit_alpha(digit, side)
        h, w = alpha.shape
        pos = (int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1)))
        mask = np.zeros((size, size), dtype=bool)
        mask[pos[0] : pos[0] + h, pos[1] : pos[1] + w] = alpha > cfg.alpha_threshold
        if _occlusion_ok(masks, mask, cfg.max_occlusion):
            break
    return alpha, pos, side


def choose_ink(
    local_luma: float, tint: np.ndarray, cfg: CompositeConfig, rng: np.random.Generator
) -> tuple[str, np.ndarray]:
    """Ink polarity ("dark" / "light") and RGB colour for a digit over ``local_luma``."""
    dark = local_luma >= 128.0
    if rng.random() < cfg.wrong_polarity:
        dark = not dark
    level = rng.uniform(0.0, 60.0) if dark else rng.uniform(195.0, 255.0)
    if abs(level - local_luma) < cfg.min_ink_contrast:
        dark = not dark
        level = rng.uniform(0.0, 60.0) if dark else rng.uniform(195.0, 255.0)
    colour = np.clip(level + tint, 0.0, 255.0)
    return ("dark" if dark else "light"), colour


def _paste(canvas: np.ndarray, alpha: np.ndarray, pos: tuple[int, int], colour: np.ndarray) -> None:
    r, c = pos
    h, w = alpha.shape
    a = alpha[:, :, None]
    region = canvas[r : r + h, c : c + w]
    canvas[r : r + h, c : c + w] = region * (1.0 - a) + colour[None, None, :] * a


def _paste_digits(
    canvas: np.ndarray,
    luma: np.ndarray,
    digit_ids: np.ndarray,
    mnist: MnistDigits,
    tint: np.ndarray,
    cfg: CompositeConfig,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Paste the digits in order onto ``canvas`` (float RGB, in place); return their amodal
    masks and object attributes."""
    amodal: list[np.ndarray] = []
    attrs: list[dict[str, Any]] = []
    lo, hi = cfg.digit_size
    for idx in digit_ids:
        side = int(rng.integers(lo, hi + 1))
        alpha, pos, side = place_digit(mnist.images[idx], side, amodal, cfg, rng)
        (r, c), (h, w) = pos, alpha.shape
        polarity, colour = choose_ink(float(luma[r : r + h, c : c + w].mean()), tint, cfg, rng)
        _paste(canvas, alpha, pos, colour)
        mask = np.zeros(luma.shape, dtype=bool)
        mask[r : r + h, c : c + w] = alpha > cfg.alpha_threshold
        amodal.append(mask)
        attrs.append(
            {
                "mnist_index": int(idx),
                "digit_size": side,
                "patch_xy": [c, r],
                "ink_polarity": polarity,
                "ink_colour": [round(float(v), 1) for v in colour],
            }
        )
    return amodal, attrs


def _objects(amodal: list[np.ndarray], attrs: list[dict[str, Any]], mnist: MnistDigits) -> list[ObjectRecord]:
    """Visible mask = own mask minus every later digit's mask; category id = digit + 1."""
    objects = []
    for k, (mask, a) in enumerate(zip(amodal, attrs, strict=True)):
        visible = mask.copy()
        for later in amodal[k + 1 :]:
            visible &= ~later
        label = int(mnist.labels[a["mnist_index"]])
        objects.append(
            ObjectRecord(category_id=label + 1, mask=visible, amodal_mask=mask, truncation=0.0, attributes=a)
        )
    return objects


def compose_image(
    index: int, photo: str, digit_ids: np.ndarray, mnist: MnistDigits, cfg: CompositeConfig, rng: np.random.Generator
) -> ImageRecord:
    """Render one composite image with its exact labels and its real conditions."""
    bg, crop = crop_background(photo, cfg, rng)
    canvas = bg.astype(np.float64)
    tint = rng.uniform(-cfg.ink_tint, cfg.ink_tint, size=3)
    amodal, attrs = _paste_digits(canvas, imagestats.grey(bg), digit_ids, mnist, tint, cfg, rng)
    polarities = {a["ink_polarity"] for a in attrs}
    conditions = {
        "source_photo": photo,
        **crop,
        "n_digits": len(digit_ids),
        "ink_polarity": polarities.pop() if len(polarities) == 1 else "mixed",
        "ink_tint": [round(float(v), 1) for v in tint],
        "background_brightness": imagestats.brightness(bg),
        "background_contrast": imagestats.contrast(bg),
        "background_texture": imagestats.texture_energy(bg),
    }
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return ImageRecord(index=index, image=image, objects=_objects(amodal, attrs, mnist), conditions=conditions)
