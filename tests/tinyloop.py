"""The tiny loop the library and flow tests run: 2 iterations of 4 fake-rendered 64² images,
2 training steps, no bootstrap, one thread on the CPU. A helper module, not tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.loop.state import LoopConfig
    from flows.orchestration.settings import LoopSettings

TINY_LOOP: dict[str, Any] = {
    "iterations": 2, "images_per_iteration": 4, "steps_per_iteration": 2, "batch_size": 2, "width": 64,
    "height": 64, "backend": "fake", "eval_resamples": 0, "num_threads": 1, "device": "cpu", "policy": "optuna",
    "render_shards": 1}


def tiny_config(work: Path, real: Path | None = None, **kw: Any) -> LoopConfig:
    """A :class:`LoopConfig` of the tiny loop in ``work`` (``kw`` overrides any field)."""
    from flows.loop.state import LoopConfig

    return LoopConfig(**{**TINY_LOOP, "workdir": str(work), "real_dir": None if real is None else str(real), **kw})


def tiny_settings(work: Path, real: Path, **kw: Any) -> LoopSettings:
    """Flow settings of the tiny loop: the loop in ``work/loop``, MLflow in ``work/mlflow.db``."""
    from flows.orchestration.settings import LoopSettings

    return LoopSettings.build({**TINY_LOOP, "workdir": str(work / "loop"), "real_dir": str(real),
                               "tracking_uri": f"sqlite:///{work / 'mlflow.db'}", **kw})
