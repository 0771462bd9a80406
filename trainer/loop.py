"""The training loop: batches from the in-memory store, augmentation, AdamW, NaN guard.

Per phase the learning rate warms up linearly over ``min(200, steps / 10)`` steps and then
follows a cosine down to 2 % of the phase's rate. Gradients are clipped to norm 10. Every step
checks the loss and the gradient norm: a NaN or infinite value raises :class:`TrainingError`
naming the step, before anything is written. Randomness: batch composition from a
``numpy.random.Generator``, augmentation from a CPU ``torch.Generator`` (both passed in).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from trainer.augment import augment
from trainer.config import TrainConfig
from trainer.data import ShardInfo, Store
from trainer.detector import Detector, Targets
from trainer.errors import TrainingError
from trainer.sampling import BatchPlan, Phase

GRAD_CLIP = 10.0


class StepHook(Protocol):
    """Called with the detector every ``every`` steps (learning curves; see :func:`run_phases`)."""

    every: int

    def __call__(self, steps: int, detector: Detector, seconds: float) -> None: ...
FINAL_WINDOW = 20  # final_loss = mean loss of the last 20 steps


@dataclass
class LoopResult:
    steps: int = 0
    images_seen: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    phase_steps: dict[str, int] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-FINAL_WINDOW:]
        return float(np.mean(tail)) if tail else math.nan

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.seconds if self.seconds > 0 else 0.0


def lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up then cosine decay to 2 % of ``base`` (``step`` is 0-based)."""
    warm = min(200, total // 10)
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(detector: Detector, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on conv/linear weights only (not norms or biases)."""
    decay = [p for p in detector.module.parameters() if p.requires_grad and p.ndim >= 2]
    plain = [p for p in detector.module.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


@contextlib.contextmanager
def torch_settings(device: torch.device, threads: int) -> Iterator[None]:
    """A thread count for the run and deterministic cuDNN convolutions; restored afterwards.

    CPU kernels used here are deterministic already (same seed ⇒ same weights, tested), so
    ``torch.use_deterministic_algorithms`` is not called: it imports torch._inductor (~3 s).
    """
    prev = (torch.get_num_threads(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.set_num_threads(prev[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[1], prev[2]


def make_batch(pixels: torch.Tensor, store: Store, index: np.ndarray, gen: torch.Generator | None,
               device: torch.device) -> tuple[torch.Tensor, list[Targets]]:
    """Gather images ``index`` from ``pixels`` (the store's uint8 array, already on ``device``),
    optionally augment them, and return float images plus targets on ``device``."""
    idx = torch.from_numpy(index).to(pixels.device)
    images = pixels.index_select(0, idx).permute(0, 3, 1, 2).float().div_(255.0)
    targets = []
    for i in index:
        lo, hi = store.offsets[i], store.offsets[i + 1]
        targets.append(Targets(torch.from_numpy(store.boxes[lo:hi]),
                               torch.from_numpy(store.labels[lo:hi])))
    if gen is not None:
        images, targets = augment(images, targets, gen)
    targets = [Targets(t.boxes.to(device), t.labels.to(device)) for t in targets]
    return images, targets


def train_step(detector: Detector, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               targets: list[Targets], step: int) -> float:
    """One optimisation step; raises TrainingError on a non-finite loss or gradient."""
    detector.module.train()
    loss = detector.losses(images, targets)["loss"]
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingError(f"training: loss became {value} at step {step}; lower --lr or check "
                            "the data; no checkpoint was written")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(detector.module.parameters(), GRAD_CLIP)
    if not bool(torch.isfinite(norm)):
        raise TrainingError(f"training: gradient norm became {float(norm)} at step {step}; lower "
                            "--lr or check the data; no checkpoint was written")
    optimizer.step()
    return value


def run_phases(detector: Detector, optimizer: torch.optim.Optimizer, store: Store,
               infos: list[ShardInfo], phases: list[Phase], cfg: TrainConfig,
               rng: np.random.Generator, gen: torch.Generator, progress: bool,
               checkpoint: StepHook | None = None, channels_last: bool = False) -> LoopResult:
    """Run every phase in order; returns losses and throughput. ``checkpoint`` (benchmarks'
    learning curves) is called as ``hook(steps_done, detector, training_seconds)`` after every
    ``hook.every``-th step and after the last; its time is not counted in ``seconds``.
    ``channels_last``: batches in NHWC memory layout to match a module converted to it (same
    maths; oneDNN's CPU convolutions run faster on it, benchmarks/RESULTS.md)."""
    from generator.progress import bar as progress_bar  # a bar on a terminal only

    pixels = torch.from_numpy(store.images).to(detector.device)
    result = LoopResult()
    start = time.perf_counter()
    total = sum(p.steps for p in phases)
    with progress_bar(sum(p.steps for p in phases), "train", "step", show=progress) as bar:
        for phase in phases:
            plan = BatchPlan(phase, infos, store, cfg.batch_size, rng)
            for k in range(phase.steps):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(k, phase.steps, phase.lr)
                images, targets = make_batch(pixels, store, plan.next(),
                                             gen if cfg.augment else None, detector.device)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                result.losses.append(train_step(detector, optimizer, images, targets,
                                                result.steps + 1))
                result.steps += 1
                result.images_seen += len(targets)
                bar.update(1)
                if result.steps % 10 == 0 or k == phase.steps - 1:
                    elapsed = time.perf_counter() - start
                    bar.set_postfix(phase=phase.name, loss=f"{np.mean(result.losses[-10:]):.3f}",
                                    img_s=f"{result.images_seen / max(elapsed, 1e-9):.0f}")
                if checkpoint is not None and (result.steps % checkpoint.every == 0 or result.steps == total):
                    paused = time.perf_counter()
                    checkpoint(result.steps, detector, paused - start)
                    start += time.perf_counter() - paused
            result.phase_steps[phase.name] = phase.steps
    result.seconds = time.perf_counter() - start
    return result
