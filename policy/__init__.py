"""policy: steer generation toward the conditions the model fails on.

Reads failure reports (real-val / production, never real-test), the scenario's
condition → parameter mapping and the latest synthetic shard's conditions, and proposes the
next :class:`generator.params.GenerationParams` with a decision record. The ``optuna`` policy
keeps one persistent Optuna study per loop, driven by ask/tell; ``uniform`` and ``fixed`` are
the baselines. See docs/policy.md. Pure library: no Prefect, no MLflow.

    from policy import PolicyInputs, make_policy
    policy = make_policy("optuna", study="runs/policy.db", loop_id="digits-1")
    decision = policy.propose(PolicyInputs(scenario, [report], current, conditions))
    GenerationParams.model_validate(decision.params).save("params_2.yaml")
"""

from __future__ import annotations

from policy.base import FixedPolicy, Policy, PolicyInputs, UniformPolicy
from policy.decision import Decision
from policy.registry import available_policies, make_policy
from policy.reports import check_report, load_report

__all__ = ["Decision", "FixedPolicy", "Policy", "PolicyInputs", "UniformPolicy",
           "available_policies", "check_report", "load_report", "make_policy"]
