"""Policies by name: ``optuna`` (steered by failures), ``mixture`` (the bounded mixture:
uniform share + calibrated base + capped tilt), ``refit`` (the same mixture, its tilt toward the
base re-fitted to real-val weighted toward the model's misses: :mod:`policy.refit`), ``uniform``,
``fixed`` and ``calibrated`` (baselines; ``calibrated`` = the mixture's uniform share + the
calibrated base, never tilted)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from generator.errors import ConfigError
from policy.base import CalibratedPolicy, FixedPolicy, Policy, UniformPolicy

if TYPE_CHECKING:
    from generator.params import GenerationParams
    from policy.optuna_policy import OptunaConfig

POLICIES = ("optuna", "mixture", "refit", "uniform", "fixed", "calibrated")
WITH_BASE = ("mixture", "refit", "calibrated")  # take a calibrated base params file
STEERED = ("optuna", "mixture")  # need a study storage and a loop id


def available_policies() -> list[str]:
    return list(POLICIES)


def check_name(name: str) -> str:
    """``name`` if it is a registered policy, else a ConfigError listing the available ones."""
    if name not in POLICIES:
        raise ConfigError(f"--policy: unknown policy {name!r}; available: {', '.join(POLICIES)}")
    return name


def make_policy(name: str, *, study: str | Path | None = None, loop_id: str | None = None,
                config: OptunaConfig | None = None, base: GenerationParams | None = None) -> Policy:
    """The policy called ``name``; ``optuna`` and ``mixture`` need ``study`` (URL or path) and
    ``loop_id``. ``calibrated`` needs the calibrated ``base``; ``mixture`` takes it (None: uniform) and uses
    ``config.mixture`` (default :class:`policy.mixture.MixtureOptions`)."""
    check_name(name)
    if name == "uniform":
        return UniformPolicy()
    if name == "fixed":
        return FixedPolicy()
    if name == "calibrated":
        if base is None:
            raise ConfigError("--base: the calibrated policy needs a calibrated base params file, but got "
                              "none; pass the params `synthloop calibrate` wrote")
        return CalibratedPolicy(base)
    if name == "refit":
        from policy.refit import RefitPolicy

        return RefitPolicy(base)
    if base is not None and name != "mixture":
        raise ConfigError(f"--base: only the mixture, refit and calibrated policies take a calibrated base, "
                          f"but got --policy {name}; use --policy mixture, refit or calibrated")
    if name in STEERED:
        from policy.mixture import MixtureOptions
        from policy.optuna_policy import OptunaConfig, OptunaPolicy  # imports optuna: only when asked for

        if study is None or not loop_id:
            raise ConfigError(f"--policy {name}: needs a study storage (--study) and a loop id "
                              f"(--loop-id), but got study={study!r}, loop_id={loop_id!r}")
        cfg = config or OptunaConfig()
        if name == "mixture" and cfg.mixture is None:
            cfg = dataclasses.replace(cfg, mixture=MixtureOptions())
        elif name == "optuna" and cfg.mixture is not None:
            raise ConfigError("--policy optuna: config.mixture is set; use --policy mixture for the "
                              "bounded mixture")
        return OptunaPolicy(study, loop_id, cfg, base)
    raise AssertionError(f"registered policy {name!r} has no factory")  # unreachable
