"""The detector contract every model implements, and the prediction glue they share.

A model is a :class:`Detector` subclass with a :class:`ModelConfig` dataclass. The trainer talks
to it through three methods, all on letterboxed square batches (``float32 (B, 3, S, S)`` in
0..1, ``S = config.input_size``):

- ``init_weights(generator)``: initialise every parameter from the given ``torch.Generator``
  (reproducibility: never from the global RNG);
- ``losses(images, targets)``: a dict of scalar tensors whose ``"loss"`` entry is minimised;
- ``detect(images, score_threshold)``: boxes ``x1, y1, x2, y2`` in input pixels per image.

:meth:`Detector.predict` (what the evaluator calls) is shared: it letterboxes images of any
size, runs ``detect`` in chunks and maps boxes back to each image's own pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from generator.errors import ConfigError, is_int
from trainer.geometry import as_rgb, input_to_xywh, letterbox


@dataclass
class ModelConfig:
    """Base of every model's config (saved in ``model.json``); subclasses add fields."""

    input_size: int = 128

    def validate(self) -> None:
        """Raise ConfigError for values the model cannot use (override and call super)."""
        if not is_int(self.input_size) \
                or not 32 <= self.input_size <= 2048 or self.input_size % 16:
            raise ConfigError(f"--input-size: must be a multiple of 16 in [32, 2048], but got "
                              f"{self.input_size!r}; use e.g. 128")


@dataclass
class Targets:
    """Labels of one image: ``boxes`` ``(n, 4)`` x1, y1, x2, y2 in input pixels; ``labels``
    ``(n,)`` 0-based class indices (category_id − 1)."""

    boxes: torch.Tensor
    labels: torch.Tensor


@dataclass
class Detections:
    """Detections of one image in input pixels: ``boxes`` ``(n, 4)`` x1, y1, x2, y2,
    ``scores`` ``(n,)`` in 0..1, ``labels`` ``(n,)`` 0-based class indices."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


class Detector(ABC):
    """A trainable object detector. Subclasses set ``self.module`` (a ``torch.nn.Module``
    holding every parameter and buffer) in ``__init__``."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    module: torch.nn.Module

    def __init__(self, config: ModelConfig, classes: list[str], scenario: str = "") -> None:
        self.config = config
        self.classes = list(classes)
        self.scenario = scenario
        self.device = torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abstractmethod
    def init_weights(self, generator: torch.Generator) -> None:
        """Initialise all parameters from ``generator`` (a CPU ``torch.Generator``)."""

    @abstractmethod
    def losses(self, images: torch.Tensor, targets: list[Targets]) -> dict[str, torch.Tensor]:
        """Training losses for a batch; ``"loss"`` is the total that is minimised."""

    @abstractmethod
    def detect(self, images: torch.Tensor, score_threshold: float) -> list[Detections]:
        """Detections per image (module already in eval mode, gradients off)."""

    def to(self, device: torch.device | str) -> Detector:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def predict(self, images: list[np.ndarray], score_threshold: float = 0.05,
                batch_size: int = 64) -> list[list[dict[str, Any]]]:
        """Detect objects in RGB uint8 images of any size.

        Returns, per image, ``{"bbox": [x, y, w, h], "category_id": int, "score": float}``
        dicts in that image's own pixels; ``category_id`` is 1-based into ``classes``.
        """
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ConfigError(f"score_threshold: must lie in [0, 1], but got {score_threshold!r}")
        size = self.config.input_size
        was_training = self.module.training
        self.module.eval()
        out: list[list[dict[str, Any]]] = []
        try:
            for start in range(0, len(images), batch_size):
                chunk = [as_rgb(im, f"images[{start + i}]")
                         for i, im in enumerate(images[start:start + batch_size])]
                boxed = [letterbox(im, size) for im in chunk]
                batch = torch.from_numpy(np.stack([b[0] for b in boxed])).to(self.device)
                x = batch.permute(0, 3, 1, 2).float().div_(255.0)
                with torch.inference_mode():
                    dets = self.detect(x, float(score_threshold))
                for im, (_, sx, sy), det in zip(chunk, boxed, dets, strict=True):
                    out.append(_to_dicts(det, sx, sy, im.shape[1], im.shape[0]))
        finally:
            self.module.train(was_training)
        return out


def _to_dicts(det: Detections, sx: float, sy: float, width: int,
              height: int) -> list[dict[str, Any]]:
    boxes = input_to_xywh(det.boxes.detach().cpu().numpy(), sx, sy, width, height)
    scores = det.scores.detach().cpu().numpy()
    labels = det.labels.detach().cpu().numpy()
    order = np.argsort(-scores, kind="stable")
    return [
        {"bbox": [float(v) for v in boxes[i]], "category_id": int(labels[i]) + 1,
         "score": float(scores[i])}
        for i in order
        if boxes[i, 2] > 0 and boxes[i, 3] > 0
    ]
