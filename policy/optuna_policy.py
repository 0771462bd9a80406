"""The steering policy: real failure signal + Optuna ask/tell, one iteration per call.

One call of :meth:`OptunaPolicy.propose` is one loop iteration:

1. **replay** — if these very reports already drove the latest trial, return its stored
   decision (a resumed flow re-running a finished step gets the same answer, no new trial);
2. **clean up** — fail WAITING trials and RUNNING trials a crashed run left behind;
3. **tell** the pending trial (the latest proposed, still RUNNING) its measured gain: objective
   on the new primary report − objective on the report that drove it; no usable signal (no
   objects, null/NaN metric, no overlapping slice, other params in use) ⇒ FAIL with the reason,
   never a made-up value;
4. **plan** — data-driven targets for the parameters of the top weak slices
   (:mod:`policy.evidence`); nothing movable ⇒ params unchanged, no trial asked;
5. **ask** — the enqueued heuristic when the weak slices are new, else TPE; the trial's knobs
   move the parameters toward their targets (:mod:`policy.moves`);
6. **store** params and decision on the trial in one attribute write (the commit marker).

With ``OptunaConfig(mixture=MixtureOptions())`` (policy name ``mixture``) steps 4–5 build a
bounded mixture instead (:mod:`policy.mixture`): only weak slices whose recall CI lies below
the overall recall are planned, the trial's knobs set the uniform share (>= the floor), the
tilt's share and the per-round cap, and the params are uniform + ``base`` + a capped tilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from generator.errors import ConfigError, DataError, is_int
from generator.params import GenerationParams, uniform_params, validate_params
from generator.scenario import Scenario
from policy import mixture as mx
from policy import study as st
from policy.base import Policy, PolicyInputs
from policy.decision import Decision
from policy.evidence import EvidenceOptions
from policy.moves import Plan, apply_knobs, make_plan
from policy.reports import OBJECTIVES, objective_value, pooled_weak_slices, report_sha


@dataclass(frozen=True)
class OptunaConfig:
    seed: int = 0  # seeds the TPE sampler (per iteration: SeedSequence([seed, iteration]))
    objective: str = "map50"  # map50 | recall | slice_recall (recall on the driving slices)
    n_startup_trials: int = 3  # completed trials before TPE leaves random sampling
    space: st.SearchSpace = field(default_factory=st.SearchSpace)
    evidence: EvidenceOptions = field(default_factory=EvidenceOptions)
    mixture: mx.MixtureOptions | None = None  # set: the bounded-mixture mode (policy/mixture.py)

    def validate(self) -> OptunaConfig:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective: must be one of {', '.join(OBJECTIVES)}, but got "
                              f"{self.objective!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"--seed: must be an integer >= 0, but got {self.seed!r}")
        if self.n_startup_trials < 1:
            raise ConfigError(f"n_startup_trials: must be >= 1, but got {self.n_startup_trials}")
        self.space.validate()
        if self.mixture is not None:
            self.mixture.validate()
        return self


def _proposed(trials: list[FrozenTrial]) -> list[tuple[FrozenTrial, dict[str, Any]]]:
    """Trials that got as far as a stored proposal, with it, in trial order."""
    out = []
    for t in trials:
        p = st.proposal(t)
        if p is not None:
            out.append((t, p))
    return out


class OptunaPolicy(Policy):
    """Steered policy. ``base`` (mixture mode only): the calibrated base params, uniform when None."""

    name = "optuna"

    def __init__(self, study: str | Path, loop_id: str, config: OptunaConfig | None = None,
                 base: GenerationParams | None = None) -> None:
        self.url = st.storage_url(study)
        self.loop_id = st.check_loop_id(loop_id)
        self.config = (config or OptunaConfig()).validate()
        if base is not None and self.config.mixture is None:
            raise ConfigError("policy base: a calibrated base is only used by the mixture policy "
                              "(OptunaConfig(mixture=MixtureOptions())); use --policy mixture")
        self.base = base
        self.name = "optuna" if self.config.mixture is None else "mixture"

    def propose(self, inputs: PolicyInputs) -> Decision:
        inputs.check()
        storage = st.open_storage(self.url)
        study = st.open_study(storage, self.loop_id, inputs.scenario.name, self.config.objective)
        st.check_mode(study, self.loop_id, "move" if self.config.mixture is None else "mixture")
        base = mx.check_base(self.base, inputs.scenario) if self.config.mixture is not None else None
        src = st.sha([report_sha(r) for r in inputs.reports])
        proposed = _proposed(study.get_trials(deepcopy=False))
        replay = self._replay(proposed, src)
        if replay is not None:
            return replay
        told, pending = self._clean_up(study, storage)
        current, notes = self._current(inputs, proposed)
        if pending is not None:
            told.append(self._tell(study, storage, pending, inputs, current))
        sc = inputs.scenario
        plan, start, dropped = self._plan(inputs, current, base)
        notes += self._evidence_notes(inputs)
        decision = Decision(policy=self.name, scenario=sc.name, params=current.to_dict(),
                            uniform_share=[current.uniform_share] * 2, ignored=plan.ignored,
                            loop_id=self.loop_id, iteration=len(proposed), objective=self.config.objective,
                            told=told, notes=notes)
        if base is not None and not plan.movable:
            return self._base_only(study, sc, current, base, dropped, decision)
        if not plan.movable:
            decision.notes.append("no weak slice with evidence for any of its parameters: params "
                                  "unchanged, no trial asked")
            decision.history = st.history(study)
            return decision
        if base is not None:
            return self._ask_mixture(study, storage, inputs, current, base, start, plan, proposed, src,
                                     dropped, decision)
        return self._ask(study, storage, inputs, current, plan, proposed, src, decision)

    def _plan(self, inputs: PolicyInputs, current: GenerationParams, base: GenerationParams | None
              ) -> tuple[Plan, GenerationParams, list[dict[str, Any]]]:
        """The plan, the params it moves from and the weak slices left out: in mixture mode
        (``base`` given) only CI-eligible slices, moving the previous tilt (else the base)."""
        sc = inputs.scenario
        reports, start = inputs.reports, current
        dropped: list[dict[str, Any]] = []
        if base is not None:
            reports, dropped = mx.eligible_reports(inputs.reports)
            start = GenerationParams(scenario=sc.name, distributions=mx.previous_tilt(current, base))
        plan = make_plan(sc, start, pooled_weak_slices(reports, sc), inputs.conditions,
                         self.config.space.top_k, self.config.evidence)
        return plan, start, dropped

    def _base_only(self, study: optuna.Study, sc: Scenario, current: GenerationParams, base: GenerationParams,
                   dropped: list[dict[str, Any]], decision: Decision) -> Decision:
        """Mixture mode with nothing to tilt toward: uniform share + base, no trial asked."""
        opts = self.config.mixture
        assert opts is not None
        params = mx.mixture_params(sc, base, None,
                                   opts.heuristic_uniform_share, 0.0, opts.uniform_floor)
        why = ("no weak slice's recall CI lies below the overall recall" if dropped else
               "no eligible weak slice has evidence for any of its parameters")
        decision.params = params.to_dict()
        decision.uniform_share = [current.uniform_share, params.uniform_share]
        decision.mixture = mx.summary(params, opts.uniform_floor, tilt=f"none: {why}", ineligible=dropped,
                                      base="calibrated" if self.base is not None else "uniform")
        decision.notes.append(f"tilt weight 0 ({why}): params = uniform share + base, no trial asked")
        decision.history = st.history(study)
        return decision

    def _replay(self, proposed: list[tuple[FrozenTrial, dict[str, Any]]], src: str) -> Decision | None:
        for t, p in proposed[:-1]:
            if p["source_sha"] == src:
                raise DataError(f"--report: these reports already drove iteration "
                                f"{t.user_attrs.get('iteration')} (trial {t.number}); pass the report "
                                "measured after training on the latest proposed params")
        if proposed and proposed[-1][1]["source_sha"] == src:
            decision = Decision.from_dict(dict(proposed[-1][1]["decision"]))
            decision.replayed = True
            return decision
        return None

    def _clean_up(self, study: optuna.Study,
                  storage: optuna.storages.RDBStorage) -> tuple[list[dict[str, Any]], FrozenTrial | None]:
        """Fail stale trials; return what was told and the pending (latest proposed) trial."""
        told = st.drain_waiting(study, storage)
        running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        proposed = _proposed(running)
        pending = proposed[-1][0] if proposed else None
        for t in running:
            if t is pending:
                continue
            why = ("stale: superseded by a later proposal" if st.proposal(t) is not None
                   else "stale: asked by a run that stopped before proposing params")
            told.append(st.fail(study, storage, t, why))
        return told, pending

    def _current(self, inputs: PolicyInputs,
                 proposed: list[tuple[FrozenTrial, dict[str, Any]]]) -> tuple[GenerationParams, list[str]]:
        if inputs.current is not None:
            return inputs.current, []
        if proposed:
            t, p = proposed[-1]
            params = GenerationParams.model_validate(p["params"])
            return validate_params(params, inputs.scenario), [
                f"current params: those of trial {t.number} (no --current given)"]
        return uniform_params(inputs.scenario), ["current params: uniform over every range (no "
                                                 "--current given and no earlier trial)"]

    def _tell(self, study: optuna.Study, storage: optuna.storages.RDBStorage, t: FrozenTrial,
              inputs: PolicyInputs, current: GenerationParams) -> dict[str, Any]:
        a = st.proposal(t) or {}
        if st.sha(current.to_dict()) != a.get("params_sha"):
            return st.fail(study, storage, t, "the params in use are not this trial's proposal, so "
                                              "the report does not measure it")
        after, why = objective_value(inputs.reports[0], self.config.objective, a.get("driving"))
        before = a.get("baseline")
        if after is None:
            return st.fail(study, storage, t, f"no usable signal: {why}")
        if before is None:
            return st.fail(study, storage, t, "no usable baseline: the report that drove this trial "
                                              f"had no finite {self.config.objective}")
        return st.complete(study, storage, t, float(before), after)

    def _evidence_notes(self, inputs: PolicyInputs) -> list[str]:
        df = inputs.conditions
        if df is None or df.empty:
            return ["no synthetic conditions given (--shard): without them no parameter has a "
                    "data-driven target, so nothing moves"]
        return [f"synthetic conditions: {len(df)} rows"]

    def _ask_mixture(self, study: optuna.Study, storage: optuna.storages.RDBStorage,
                     inputs: PolicyInputs, current: GenerationParams, base: GenerationParams,
                     start: GenerationParams, plan: Plan, proposed: list[tuple[FrozenTrial, dict[str, Any]]],
                     src: str, dropped: list[dict[str, Any]], decision: Decision) -> Decision:
        cfg, opts = self.config, self.config.mixture
        assert opts is not None
        keys = [ws.key for ws in plan.slices]
        enqueue = not proposed or proposed[-1][1].get("plan_keys") != keys
        top_k = cfg.space.top_k
        number, values, source = st.ask_params(study, storage, opts.distributions(top_k), opts.heuristic(top_k),
                                               decision.iteration or 0, cfg.seed, cfg.n_startup_trials, enqueue)
        knobs = opts.knobs(values)
        dists, changes = mx.tilt(inputs.scenario, start.distributions, plan, knobs, opts.max_ratio)
        params = validate_params(mx.mixture_params(inputs.scenario, base, dists, knobs.uniform_share,
                                                   knobs.tilt_share, opts.uniform_floor), inputs.scenario)
        acting = plan.slices[: knobs.n_slices]
        if base.uniform_share > 0:
            decision.notes.append(f"the base's own uniform_share {base.uniform_share} is not used: the "
                                  "mixture's uniform share replaces it")
        decision.mixture = mx.summary(params, opts.uniform_floor, tilt=f"{len(changes)} parameter(s) moved, "
                                      f"at most {knobs.max_shift:.3g} range units each", ineligible=dropped,
                                      base="calibrated" if self.base is not None else "uniform")
        return self._store(study, storage, inputs, current, params, [c.to_dict() for c in changes], acting,
                           keys, number, source, knobs.to_dict(), src, decision)

    def _ask(self, study: optuna.Study, storage: optuna.storages.RDBStorage, inputs: PolicyInputs,
             current: GenerationParams, plan: Plan,
             proposed: list[tuple[FrozenTrial, dict[str, Any]]], src: str,
             decision: Decision) -> Decision:
        keys = [ws.key for ws in plan.slices]
        enqueue = not proposed or proposed[-1][1].get("plan_keys") != keys
        cfg = self.config
        number, knobs, source = st.ask(study, storage, cfg.space, decision.iteration or 0, cfg.seed,
                                       cfg.n_startup_trials, enqueue)
        params, changes = apply_knobs(inputs.scenario, current, plan, knobs)
        validate_params(params, inputs.scenario)
        acting = plan.slices[: knobs.n_slices]
        return self._store(study, storage, inputs, current, params, [c.to_dict() for c in changes], acting,
                           keys, number, source, knobs.to_dict(), src, decision)

    def _store(self, study: optuna.Study, storage: optuna.storages.RDBStorage, inputs: PolicyInputs,
               current: GenerationParams, params: GenerationParams, changes: list[dict[str, Any]],
               acting: list[Any], keys: list[str], number: int, source: str, knobs: dict[str, Any],
               src: str, decision: Decision) -> Decision:
        """Fill the decision and store the proposal on the trial (the commit marker)."""
        driving = [{"condition": ws.condition, "range": [ws.lo, ws.hi]} for ws in acting]
        baseline, _ = objective_value(inputs.reports[0], self.config.objective, driving)
        decision.params, decision.changes = params.to_dict(), changes
        decision.uniform_share = [current.uniform_share, params.uniform_share]
        decision.slices = [ws.to_dict() for ws in acting]
        decision.trial, decision.trial_source, decision.knobs = number, source, knobs
        decision.baseline = baseline
        decision.history = st.history(study)
        st.set_attrs(study, storage, number, {st.PROPOSAL: {  # one transaction: the commit marker
            "source_sha": src, "baseline": baseline, "driving": driving, "plan_keys": keys,
            "params": params.to_dict(), "params_sha": st.sha(params.to_dict()),
            "decision": decision.to_dict()}})
        return decision
