"""Mild augmentation that keeps every label exact, applied to whole batches on the device.

- geometry: a per-image zoom ``s`` about the centre and a shift ``t`` (bilinear resampling,
  border pixels repeated). ``t`` is drawn only from the range that keeps every box inside the
  image, so no visible pixel of an object leaves the frame and each tight box maps exactly to
  ``(x − c)·s + c + t``. If a zoom cannot keep the boxes inside, that image is not zoomed.
  Never flipped or rotated: digits are not mirror-symmetric ("6" vs "9").
- photometry: per-image contrast about the mean grey, brightness offset and a small
  per-channel gain, clipped to 0..1.

Random numbers come from the CPU ``torch.Generator`` passed in (device-independent streams).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from trainer.detector import Targets


@dataclass(frozen=True)
class AugmentConfig:
    zoom: tuple[float, float] = (0.85, 1.15)
    max_shift: float = 0.15  # fraction of the input size
    brightness: float = 0.12  # ± offset on 0..1 pixels
    contrast: tuple[float, float] = (0.7, 1.3)
    channel_gain: float = 0.06  # ± per-channel multiplicative jitter


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def _shift_range(targets: list[Targets], zoom: torch.Tensor, size: int,
                 max_shift: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image ``(lo, hi)`` shift bounds in x and y keeping all boxes inside, and the zoom
    actually used (1 where the drawn zoom could not keep them inside)."""
    c = size / 2
    n = len(targets)
    lo = torch.full((n, 2), -max_shift, dtype=torch.float64)
    hi = torch.full((n, 2), max_shift, dtype=torch.float64)
    zoom = zoom.clone()
    for i, t in enumerate(targets):
        if t.boxes.numel() == 0:
            continue
        b = t.boxes.detach().to("cpu", torch.float64)
        mins, maxs = b[:, 0:2].min(dim=0).values, b[:, 2:4].max(dim=0).values
        found = None
        for z in (float(zoom[i]), 1.0):
            low = (-((mins - c) * z + c)).clamp(min=-max_shift)
            high = (size - ((maxs - c) * z + c)).clamp(max=max_shift)
            if bool((low <= high).all()):
                found = (z, low, high)
                break
        none = torch.zeros(2, dtype=torch.float64)
        zoom[i], lo[i], hi[i] = found or (1.0, none, none)
    return lo, hi, zoom


def augment(images: torch.Tensor, targets: list[Targets], gen: torch.Generator,
            cfg: AugmentConfig | None = None) -> tuple[torch.Tensor, list[Targets]]:
    """Augment ``images`` (float 0..1, ``(B, 3, S, S)``, any device) and move their boxes
    (CPU tensors, so the per-image bookkeeping never waits on the device) to match."""
    cfg = cfg or AugmentConfig()
    n, size = images.shape[0], images.shape[-1]
    zoom = _uniform(n, *cfg.zoom, gen)
    lo, hi, zoom = _shift_range(targets, zoom, size, cfg.max_shift * size)
    shift = lo + (hi - lo) * torch.rand((n, 2), generator=gen, dtype=torch.float64)
    contrast = _uniform(n, *cfg.contrast, gen)
    bright = _uniform(n, -cfg.brightness, cfg.brightness, gen)
    gain = 1 + cfg.channel_gain * (2 * torch.rand((n, 3), generator=gen, dtype=torch.float64) - 1)

    theta = torch.zeros((n, 2, 3), dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = -2 * shift / (size * zoom[:, None])
    dev = images.device
    grid = F.affine_grid(theta.to(dev, torch.float32), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    scale = contrast.to(dev, torch.float32)[:, None, None, None]
    out = (out - mean) * scale + mean + bright.to(dev, torch.float32)[:, None, None, None]
    out = (out * gain.to(dev, torch.float32)[:, :, None, None]).clamp_(0.0, 1.0)

    c = size / 2
    moved = []
    for i, t in enumerate(targets):
        z, s = float(zoom[i]), shift[i].to(t.boxes.dtype)
        b = (t.boxes - c) * z + c + s.repeat(2)
        moved.append(Targets(b.clamp(0, size), t.labels))
    return out, moved
