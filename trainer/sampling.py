"""Which images make each batch: strategies → phases → batch index plans.

A :class:`Phase` is a run of steps over some shards at one learning rate. A
:class:`BatchPlan` draws its batches from up to two groups (synthetic, real): group ``g`` gets
``share_g`` of every batch (error diffusion, so the long-run share is exact), and within a group
a :class:`WeightedStream` draws images by weight in low-variance passes. With equal weights a
pass is a plain shuffle (every image once per epoch); unequal weights give every image
``floor`` or ``ceil`` of its expected count per pass (systematic resampling).

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from generator.errors import ConfigError
from trainer.config import DEFAULT_EPOCHS, TrainConfig
from trainer.data import ShardInfo, Store


class WeightedStream:
    """Endless stream over indices ``0..n-1`` with probabilities ``probs``, in passes of n."""

    def __init__(self, probs: np.ndarray, rng: np.random.Generator) -> None:
        p = np.asarray(probs, dtype=np.float64)
        self.cum = np.cumsum(p / p.sum())
        self.cum[-1] = 1.0
        self.uniform = bool(np.allclose(p, p[0]))
        self.rng = rng
        self.buffer = np.zeros(0, dtype=np.int64)

    def _refill(self) -> None:
        n = len(self.cum)
        if self.uniform:
            draws = np.arange(n, dtype=np.int64)
        else:
            positions = (self.rng.random() + np.arange(n)) / n
            draws = np.searchsorted(self.cum, positions, side="right").astype(np.int64)
        self.buffer = np.concatenate([self.buffer, self.rng.permutation(draws)])

    def take(self, k: int) -> np.ndarray:
        while len(self.buffer) < k:
            self._refill()
        out, self.buffer = self.buffer[:k], self.buffer[k:]
        return out


@dataclass
class Phase:
    """``steps`` steps over the shards ``groups[name] = [shard index, ...]`` at ``lr``;
    ``shares`` gives each group's share of a batch (summing to 1)."""

    name: str
    steps: int
    lr: float
    groups: dict[str, list[int]]
    shares: dict[str, float] = field(default_factory=dict)


class BatchPlan:
    """Global image indices for each batch of one phase."""

    def __init__(self, phase: Phase, infos: list[ShardInfo], store: Store, batch_size: int,
                 rng: np.random.Generator) -> None:
        self.batch_size = batch_size
        self.names = sorted(phase.groups)
        self.shares = [phase.shares[g] for g in self.names]
        self.members: list[np.ndarray] = []
        self.streams: list[WeightedStream] = []
        weight_of = np.array([i.source.weight for i in infos], dtype=np.float64)
        for g in self.names:
            members = np.flatnonzero(np.isin(store.shard_of, phase.groups[g]))
            self.members.append(members)
            self.streams.append(WeightedStream(weight_of[store.shard_of[members]], rng))
        self.step = 0
        self.rng = rng

    def counts(self, step: int) -> list[int]:
        """How many images of each group batch ``step`` takes (exact shares over the run)."""
        out, used = [], 0
        for share in self.shares[:-1]:
            k = math.floor((step + 1) * share * self.batch_size + 1e-9) \
                - math.floor(step * share * self.batch_size + 1e-9)
            out.append(k)
            used += k
        return [*out, self.batch_size - used]

    def next(self) -> np.ndarray:
        parts = [members[stream.take(k)]
                 for members, stream, k in zip(self.members, self.streams, self.counts(self.step),
                                               strict=True) if k > 0]
        self.step += 1
        return self.rng.permutation(np.concatenate(parts))


def plan_phases(cfg: TrainConfig, infos: list[ShardInfo]) -> list[Phase]:
    """Turn the strategy into phases, refusing shard kinds the strategy does not use."""
    synthetic = [k for k, i in enumerate(infos) if i.group == "synthetic"]
    real = [k for k, i in enumerate(infos) if i.group == "real"]
    n_images = [len(i.shard.coco["images"]) for i in infos]
    s = cfg.strategy
    if s == "synthetic-only":
        _only(s, infos, real, "real/imported", "mixed or pretrain-finetune")
        return [_phase("train", cfg.epochs, cfg.steps, cfg, {"synthetic": synthetic}, n_images)]
    if s == "real-only":
        _only(s, infos, synthetic, "synthetic", "mixed or pretrain-finetune")
        return [_phase("train", cfg.epochs, cfg.steps, cfg, {"real": real}, n_images)]
    _need(s, synthetic, "synthetic")
    _need(s, real, "real (kind real/imported)")
    if s == "mixed":
        r = cfg.effective_real_ratio
        ph = _phase("train", cfg.epochs, cfg.steps, cfg, {"synthetic": synthetic, "real": real},
                    n_images)
        ph.shares = {"real": r, "synthetic": 1.0 - r}
        return [ph]
    pre = _phase("pretrain", cfg.epochs, cfg.steps, cfg, {"synthetic": synthetic}, n_images)
    fine = _phase("finetune", cfg.finetune_epochs, cfg.finetune_steps, cfg, {"real": real},
                  n_images, lr=cfg.effective_finetune_lr)
    return [pre, fine]


def _phase(name: str, epochs: float | None, steps: int | None, cfg: TrainConfig,
           groups: dict[str, list[int]], n_images: list[int], lr: float | None = None) -> Phase:
    if steps is None:
        n = sum(n_images[k] for ks in groups.values() for k in ks)
        steps = max(1, math.ceil((epochs if epochs is not None else DEFAULT_EPOCHS) * n / cfg.batch_size))
    shares = {g: 1.0 for g in groups} if len(groups) == 1 else {}
    return Phase(name, int(steps), cfg.lr if lr is None else lr, groups, shares)


def _only(strategy: str, infos: list[ShardInfo], wrong: list[int], kind: str, alt: str) -> None:
    if wrong:
        path = str(infos[wrong[0]].source.path)
        raise ConfigError(f"--data {path!r}: strategy {strategy} trains on "
                          f"{strategy.removesuffix('-only')} shards only, but this one is "
                          f"{kind} (kind {infos[wrong[0]].kind!r}); drop it or use --strategy {alt}")


def _need(strategy: str, members: list[int], what: str) -> None:
    if not members:
        raise ConfigError(f"--data: strategy {strategy} needs at least one {what} shard, but got "
                          "none; add one with --data DIR or pick another --strategy")
