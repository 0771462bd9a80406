"""The policy contract and the two baselines every steered loop is compared against.

A policy turns :class:`PolicyInputs` (failure reports, the scenario, the params in use and the
latest synthetic conditions) into a :class:`~policy.decision.Decision` whose ``params`` are the
next generation distributions. Baselines ignore the failure signal on purpose:

- ``uniform`` — classic domain randomization: every parameter uniform over its full range;
- ``fixed`` — no randomization: every parameter at its scenario default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import pandas as pd

from generator.errors import ConfigError
from generator.params import GenerationParams, fixed_params, uniform_params, validate_params
from generator.scenario import Scenario
from policy.decision import Decision
from policy.moves import diff
from policy.reports import check_report


@dataclass
class PolicyInputs:
    """Everything a policy may read. ``reports[0]`` is the primary (real-val) report: its metric
    is the objective; every report's weak slices are pooled. ``conditions`` is the latest
    synthetic shard's ``conditions.parquet`` (several shards concatenated is fine). ``target``
    (the ``refit`` policy): plain params the loop fitted to real-val weighted toward the current
    model's misses (:mod:`policy.failure_set`)."""

    scenario: Scenario
    reports: list[dict[str, Any]]
    current: GenerationParams | None = None
    conditions: pd.DataFrame | None = None
    target: GenerationParams | None = None

    def check(self) -> PolicyInputs:
        if not self.reports:
            raise ConfigError("--report: at least one failure report is needed, but got none; pass "
                              "the real-val report.json written by `synthloop evaluate`")
        for i, r in enumerate(self.reports):
            check_report(r, self.scenario, where=f"--report #{i + 1}")
        for p in (self.current, self.target):
            if p is not None:
                validate_params(p, self.scenario)
        return self


class Policy(ABC):
    """Proposes the next generation params from the failure signal (or ignores it)."""

    name: str = "policy"

    @abstractmethod
    def propose(self, inputs: PolicyInputs) -> Decision:
        """Return the decision whose ``params`` (validated) are the next GenerationParams."""


class _Baseline(Policy):
    note = ""

    def params(self, scenario: Scenario) -> GenerationParams:
        raise NotImplementedError

    def propose(self, inputs: PolicyInputs) -> Decision:
        inputs.check()
        sc = inputs.scenario
        new = validate_params(self.params(sc), sc)
        old = inputs.current or new
        changes = [c.to_dict() for c in diff(sc, old, new)]
        return Decision(policy=self.name, scenario=sc.name, params=new.to_dict(),
                        uniform_share=[old.uniform_share, new.uniform_share], changes=changes,
                        notes=[self.note])


class UniformPolicy(_Baseline):
    name = "uniform"
    note = "baseline: classic domain randomization, every parameter uniform over its full range"

    def params(self, scenario: Scenario) -> GenerationParams:
        return uniform_params(scenario)


class FixedPolicy(_Baseline):
    name = "fixed"
    note = "baseline: no randomization, every parameter at its scenario default"

    def params(self, scenario: Scenario) -> GenerationParams:
        return fixed_params(scenario)


class CalibratedPolicy(_Baseline):
    """The calibrated open loop (benchmark arm C): every round the same mixture a mixture loop
    starts from — the heuristic uniform share + the calibrated base, no tilt — whatever the
    reports say (:func:`policy.mixture.initial_params`)."""

    name = "calibrated"
    note = "baseline: calibrated open loop, the uniform share + the calibrated base every round, no tilt"

    def __init__(self, base: GenerationParams) -> None:
        self.base = base

    def params(self, scenario: Scenario) -> GenerationParams:
        from policy.mixture import initial_params

        return initial_params(scenario, self.base)
