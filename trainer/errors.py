"""Trainer-specific errors (the rest reuse :mod:`generator.errors`)."""

from __future__ import annotations

from generator.errors import SynthloopError


class TrainingError(SynthloopError):
    """Training diverged (NaN/infinite loss or gradients); no checkpoint was written."""
