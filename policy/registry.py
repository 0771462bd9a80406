"""Policies by name: ``optuna`` (steered by failures), ``uniform`` and ``fixed`` (baselines)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from generator.errors import ConfigError
from policy.base import FixedPolicy, Policy, UniformPolicy

if TYPE_CHECKING:
    from policy.optuna_policy import OptunaConfig

POLICIES = ("optuna", "uniform", "fixed")


def available_policies() -> list[str]:
    return list(POLICIES)


def check_name(name: str) -> str:
    """``name`` if it is a registered policy, else a ConfigError listing the available ones."""
    if name not in POLICIES:
        raise ConfigError(f"--policy: unknown policy {name!r}; available: {', '.join(POLICIES)}")
    return name


def make_policy(name: str, *, study: str | Path | None = None, loop_id: str | None = None,
                config: OptunaConfig | None = None) -> Policy:
    """The policy called ``name``; ``optuna`` needs ``study`` (URL or path) and ``loop_id``."""
    check_name(name)
    if name == "uniform":
        return UniformPolicy()
    if name == "fixed":
        return FixedPolicy()
    if name == "optuna":
        from policy.optuna_policy import OptunaPolicy  # imports optuna: only when asked for

        if study is None or not loop_id:
            raise ConfigError("--policy optuna: needs a study storage (--study) and a loop id "
                              f"(--loop-id), but got study={study!r}, loop_id={loop_id!r}")
        return OptunaPolicy(study, loop_id, config)
    raise AssertionError(f"registered policy {name!r} has no factory")  # unreachable
