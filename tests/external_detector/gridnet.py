"""GridNet: a tiny fully-convolutional grid box regressor (YOLO-v1 style, anchor-free).

An example of *your own* detector in synthloop's loop (docs/trainer.md, "Your own model in
the loop"): it shares no code with synthloop's trainer. Images are resized to SIZE x SIZE;
three stride-2 convolutions give a G x G grid (G = SIZE / 8); each cell predicts an
objectness logit, class logits and a box (centre offset in the cell, width and height as
fractions of the image, all through a sigmoid). The cell holding a ground-truth box's centre
is responsible for it. One detection per cell, no NMS.

Files of a model directory: ``gridnet.pt`` (state dict) and ``gridnet.json`` (classes, size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

SIZE = 64
STRIDE = 8


class GridNet(nn.Module):
    def __init__(self, classes: int, width: int = 16) -> None:
        super().__init__()
        self.classes = classes
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (width, width * 2, width * 2):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Conv2d(c_in, c_in, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(c_in, 1 + classes + 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1 + C + 4, G, G)
        return self.head(self.body(x))


def load_image(path: str | Path) -> tuple[torch.Tensor, int, int]:
    """(3, SIZE, SIZE) float tensor in [0, 1], original width and height."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        arr = np.asarray(rgb.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1), w, h


def targets(boxes: list[tuple[list[float], int]], w: int, h: int, classes: int) -> torch.Tensor:
    """(1 + 1 + 4, G, G): objectness, class index (-1 = none), box (cx in cell, cy in cell, w, h)."""
    g = SIZE // STRIDE
    t = torch.zeros(6, g, g)
    t[1] = -1
    for (x, y, bw, bh), cls in boxes:
        cx, cy = (x + bw / 2) / w, (y + bh / 2) / h
        i, j = min(int(cy * g), g - 1), min(int(cx * g), g - 1)
        t[0, i, j] = 1
        t[1, i, j] = cls
        t[2:, i, j] = torch.tensor([cx * g - j, cy * g - i, bw / w, bh / h])
    return t


def loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    obj = out[:, 0]
    c = out.shape[1] - 5
    logits, box = out[:, 1:1 + c], torch.sigmoid(out[:, 1 + c:])
    pos = t[:, 0] > 0
    total = nn.functional.binary_cross_entropy_with_logits(obj, t[:, 0])
    if pos.any():
        cls_logits = logits.permute(0, 2, 3, 1)[pos]
        total = total + nn.functional.cross_entropy(cls_logits, t[:, 1][pos].long())
        total = total + 5 * nn.functional.l1_loss(box.permute(0, 2, 3, 1)[pos], t[:, 2:].permute(0, 2, 3, 1)[pos])
    return total


def decode(out: torch.Tensor, w: int, h: int, min_score: float) -> list[dict[str, Any]]:
    """One image's detections: [{category_index, bbox [x, y, w, h] in its pixels, score}]."""
    g = out.shape[-1]
    c = out.shape[0] - 5
    obj = torch.sigmoid(out[0])
    probs = torch.softmax(out[1:1 + c], dim=0)
    box = torch.sigmoid(out[1 + c:])
    best, cls = probs.max(dim=0)
    score = obj * best
    dets: list[dict[str, Any]] = []
    for i in range(g):
        for j in range(g):
            s = float(score[i, j])
            if s < min_score:
                continue
            cx, cy = (j + float(box[0, i, j])) / g * w, (i + float(box[1, i, j])) / g * h
            bw, bh = float(box[2, i, j]) * w, float(box[3, i, j]) * h
            x0, y0 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
            dets.append({"category_index": int(cls[i, j]), "score": s,
                         "bbox": [x0, y0, min(float(w), cx + bw / 2) - x0, min(float(h), cy + bh / 2) - y0]})
    return sorted(dets, key=lambda d: -float(d["score"]))[:100]


def save(model: GridNet, out: Path, classes: list[str], steps: int) -> None:
    torch.save(model.state_dict(), out / "gridnet.pt")
    (out / "gridnet.json").write_text(json.dumps({"classes": classes, "size": SIZE, "steps": steps}) + "\n")


def load(path: Path) -> tuple[GridNet, dict[str, Any]]:
    meta = json.loads((path / "gridnet.json").read_text())
    model = GridNet(len(meta["classes"]))
    model.load_state_dict(torch.load(path / "gridnet.pt", map_location="cpu", weights_only=True))
    return model.eval(), meta


def read_request(argv: list[str]) -> dict[str, Any]:
    """The request file: the last argument, else $SYNTHLOOP_REQUEST."""
    import os

    path = argv[-1] if len(argv) > 1 else os.environ["SYNTHLOOP_REQUEST"]
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))
