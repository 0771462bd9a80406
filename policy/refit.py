"""The failure re-fit policy (``refit``): a closed loop whose tilt never leaves real data.

Each round's params are the mixture's three components (:mod:`policy.mixture`): a uniform share
(never below the floor), the calibrated base, and a tilt. Here the tilt is the base moved one
capped step per parameter (``max_shift`` range units, categorical weights ×``max_ratio`` at most)
toward :attr:`policy.base.PolicyInputs.target`: the base re-fitted, by calibration, to real-val
weighted toward the objects the current model misses (:mod:`policy.failure_set`; the loop
computes it each round, :mod:`flows.loop.refit`).

Why a second closed-loop policy: the mixture's evidence tilt pushes parameters toward weak slices
read off *synthetic* data, which can leave what the real data looks like (small digits pushed
smaller than any real one); in the benchmark it gave back part of what calibration gained
(benchmarks/RESULTS.md). The re-fit only re-weights the real distribution (a miss counts at most
``failure_weight`` × a found object), so it targets failures *as they occur in real data*. The
tilt starts from the base every round (the re-fit already reflects the newest model), so moves
do not accumulate. No Optuna: the shares and the cap are :class:`MixtureOptions`' heuristic
values, recorded in the decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from policy import mixture as mx
from policy.base import Policy, PolicyInputs
from policy.decision import Decision
from policy.moves import Change

if TYPE_CHECKING:
    from generator.params import GenerationParams

SOURCE = "calibration of real-val weighted toward the model's misses"


class RefitPolicy(Policy):
    """``base``: the calibrated base params (uniform when None)."""

    name = "refit"

    def __init__(self, base: GenerationParams | None = None, options: mx.MixtureOptions | None = None) -> None:
        self.base = base
        self.options = (options or mx.MixtureOptions()).validate()

    def propose(self, inputs: PolicyInputs) -> Decision:
        inputs.check()
        sc, opts = inputs.scenario, self.options
        base = mx.check_base(self.base, sc)
        k = opts.knobs(opts.heuristic(1))
        old = inputs.current or mx.initial_params(sc, self.base, opts)
        changes: list[Change] = []
        if inputs.target is None:
            tilt, share = None, 0.0
            why = "no re-fit target given (the loop computes one from each real-val report)"
        else:
            target = mx.check_base(inputs.target, sc)
            tilt, changes = mx.toward(sc, dict(base.distributions), dict(target.distributions), k,
                                      opts.max_ratio, {"source": SOURCE})
            share = k.tilt_share if changes else 0.0
            why = (f"{len(changes)} parameter(s) moved toward the re-fit, at most {k.max_shift:.3g} range units each"
                   if changes else "the re-fit equals the base: nothing to tilt")
        params = mx.mixture_params(sc, base, tilt, k.uniform_share, share, opts.uniform_floor)
        notes = [f"tilt: {why}"]
        if base.uniform_share > 0:
            notes.append(f"the base's own uniform_share {base.uniform_share} is not used: the "
                         "mixture's uniform share replaces it")
        return Decision(policy=self.name, scenario=sc.name, params=params.to_dict(),
                        uniform_share=[old.uniform_share, params.uniform_share],
                        changes=[c.to_dict() for c in changes], knobs=k.to_dict(), notes=notes,
                        mixture=mx.summary(params, opts.uniform_floor, tilt=why,
                                           base="calibrated" if self.base is not None else "uniform"))
