"""Training options (:class:`TrainConfig`) and their validation, one line per mistake.

Strategies (which shards feed which steps):

- ``synthetic-only``: synthetic shards only;
- ``real-only``: real/imported shards only;
- ``mixed``: both, every batch takes ``real_ratio`` of its images from the real shards
  (exact over the run: batch k has ``floor((k+1)·r·B) − floor(k·r·B)`` real images);
- ``pretrain-finetune``: the main budget on synthetic shards, then ``finetune_steps`` (or
  ``finetune_epochs``) on the real shards at ``finetune_lr``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from generator.errors import ConfigError, is_int, is_number

STRATEGIES = ("synthetic-only", "real-only", "mixed", "pretrain-finetune")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_EPOCHS = 10.0


@dataclass
class TrainConfig:
    """Everything that decides a training run besides the data and the model config."""

    strategy: str = "synthetic-only"
    epochs: float | None = None  # default DEFAULT_EPOCHS when steps is None as well
    steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    real_ratio: float | None = None  # mixed only (default 0.3)
    finetune_steps: int | None = None  # pretrain-finetune only
    finetune_epochs: float | None = None
    finetune_lr: float | None = None  # default lr / 5
    augment: bool = True
    num_threads: int | None = None  # CPU threads; default: the CPUs this process may use

    def validate(self) -> TrainConfig:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy: must be one of {', '.join(STRATEGIES)}, but got "
                              f"{self.strategy!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device: must be one of {', '.join(DEVICES)}, but got {self.device!r}")
        _budget("--epochs", "--steps", self.epochs, self.steps)
        _int_at_least("--batch-size", self.batch_size, 1)
        _positive("--lr", self.lr)
        _positive("--weight-decay", self.weight_decay, allow_zero=True)
        _int_at_least("--seed", self.seed, 0)
        if self.num_threads is not None:
            _int_at_least("--num-threads", self.num_threads, 1)
        self._check_strategy_options()
        return self

    def _check_strategy_options(self) -> None:
        if self.real_ratio is not None:
            if self.strategy != "mixed":
                raise ConfigError(f"--real-ratio: applies to --strategy mixed only, but the strategy "
                                  f"is {self.strategy!r}; drop --real-ratio or use mixed")
            r = self.real_ratio
            if not (isinstance(r, int | float) and 0.0 < r < 1.0):
                raise ConfigError(f"--real-ratio: must lie strictly between 0 and 1, but got {r!r}; "
                                  "e.g. 0.3 (use real-only/synthetic-only for 1/0)")
        finetune = (self.finetune_steps, self.finetune_epochs, self.finetune_lr)
        if self.strategy != "pretrain-finetune":
            if any(v is not None for v in finetune):
                raise ConfigError("--finetune-steps/--finetune-epochs/--finetune-lr: apply to "
                                  f"--strategy pretrain-finetune only, but the strategy is "
                                  f"{self.strategy!r}; drop them")
            return
        if self.finetune_steps is None and self.finetune_epochs is None:
            raise ConfigError("--finetune-steps: pretrain-finetune needs a fine-tuning budget, but "
                              "got neither --finetune-steps nor --finetune-epochs; e.g. "
                              "--finetune-steps 300")
        _budget("--finetune-epochs", "--finetune-steps", self.finetune_epochs, self.finetune_steps)
        if self.finetune_lr is not None:
            _positive("--finetune-lr", self.finetune_lr)

    @property
    def effective_real_ratio(self) -> float:
        return 0.3 if self.real_ratio is None else float(self.real_ratio)

    @property
    def effective_finetune_lr(self) -> float:
        return self.lr / 5 if self.finetune_lr is None else float(self.finetune_lr)

    @property
    def effective_threads(self) -> int:
        if self.num_threads is not None:
            return self.num_threads
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else (os.cpu_count() or 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _budget(epochs_flag: str, steps_flag: str, epochs: float | None, steps: int | None) -> None:
    if epochs is not None and steps is not None:
        raise ConfigError(f"{epochs_flag}/{steps_flag}: give one budget, but got both "
                          f"({epochs_flag} {epochs}, {steps_flag} {steps}); drop one")
    if steps is not None:
        _int_at_least(steps_flag, steps, 1)
    if epochs is not None:
        _positive(epochs_flag, epochs)


def _int_at_least(flag: str, value: Any, low: int) -> None:
    if not is_int(value) or value < low:
        raise ConfigError(f"{flag}: must be an integer >= {low}, but got {value!r}")


def _positive(flag: str, value: Any, allow_zero: bool = False) -> None:
    ok = is_number(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        rule = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ConfigError(f"{flag}: must be {rule}, but got {value!r}")
