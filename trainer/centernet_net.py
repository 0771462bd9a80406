"""The CenterNet network: a small residual encoder with a top-down path to stride 4.

::

    input S×S ─ conv s2 ─ conv s2 ─ blocks ─► c4 (S/4, w)
                                    conv s2 ─ blocks ─► c8 (S/8, 2w)
                                    conv s2 ─ blocks ─► c16 (S/16, 4w)
    top-down: up(c16) + c8 → conv → up + c4 → conv → head conv → 1×1: C heat + 2 size + 2 offset

Sized to train from scratch on two CPU cores in minutes at 128² (about 0.15 GMAC per image at
``width=32``) while seeing objects up to the whole input (receptive field > 128 px).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResBlock(nn.Module):
    """Two 3×3 convs with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(self.conv1(x))))


def stage(cin: int, cout: int, blocks: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cout, stride), *[ResBlock(cout) for _ in range(blocks)])


class CenterNetNet(nn.Module):
    """Maps ``(B, 3, S, S)`` images in 0..1 to ``(B, C + 4, S/4, S/4)`` raw head outputs:
    channels ``[0, C)`` heatmap logits, then log box width/height (in output cells), then
    centre offset x/y within the cell (0..1)."""

    def __init__(self, num_classes: int, width: int, blocks: Sequence[int],
                 head_channels: int) -> None:
        super().__init__()
        w = width
        self.stem = conv_bn(3, max(8, w // 2), stride=2)
        self.s4 = stage(max(8, w // 2), w, blocks[0])
        self.s8 = stage(w, 2 * w, blocks[1])
        self.s16 = stage(2 * w, 4 * w, blocks[2])
        self.lat16 = nn.Conv2d(4 * w, 2 * w, 1)
        self.merge8 = conv_bn(2 * w, 2 * w)
        self.lat8 = nn.Conv2d(2 * w, w, 1)
        self.merge4 = conv_bn(w, w)
        self.head = conv_bn(w, head_channels)
        self.out = nn.Conv2d(head_channels, num_classes + 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c4 = self.s4(self.stem(x - 0.5))
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        p8 = self.merge8(c8 + F.interpolate(self.lat16(c16), size=c8.shape[-2:], mode="nearest"))
        p4 = self.merge4(c4 + F.interpolate(self.lat8(p8), size=c4.shape[-2:], mode="nearest"))
        return self.out(self.head(p4))

    def init_weights(self, generator: torch.Generator, heat_prior: float) -> None:
        """He-normal convs, unit BatchNorm, heat bias at ``logit(heat_prior)`` (CenterNet's
        -2.19 for 0.1): all drawn from ``generator``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                        generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.modules():
            if isinstance(block, ResBlock):
                nn.init.zeros_(block.bn2.weight)  # each residual block starts as identity
        nn.init.normal_(self.out.weight, std=0.01, generator=generator)
        num_classes = self.out.out_channels - 4
        if self.out.bias is not None:
            with torch.no_grad():
                self.out.bias.zero_()
                self.out.bias[:num_classes] = float(torch.logit(torch.tensor(heat_prior)))
