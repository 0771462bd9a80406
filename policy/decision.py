"""The decision record: what the policy changed, why, and what Optuna has been told so far.

A :class:`Decision` is plain JSON-able data (``to_dict`` / ``from_dict``) plus a Markdown
rendering for people (``to_markdown``). The Optuna policy also stores it on its trial, so a
re-run of the same iteration returns the very same record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from generator.fmt import number
from generator.params import distribution_text


@dataclass
class Decision:
    policy: str
    scenario: str
    params: dict[str, Any]  # the next GenerationParams (to_dict form)
    uniform_share: list[float]  # [old, new]
    changes: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)  # weak slices acted on
    ignored: list[dict[str, Any]] = field(default_factory=list)  # implicated, not moved, why
    loop_id: str | None = None
    iteration: int | None = None
    trial: int | None = None  # the Optuna trial that proposed these params
    trial_source: str | None = None  # "heuristic" (enqueued) or "sampler" (TPE)
    knobs: dict[str, Any] | None = None
    objective: str | None = None
    baseline: float | None = None  # objective on the report that drove this trial
    told: list[dict[str, Any]] = field(default_factory=list)  # tells made in this iteration
    history: list[dict[str, Any]] = field(default_factory=list)  # every trial of the study
    notes: list[str] = field(default_factory=list)
    replayed: bool = False  # True when an earlier run of this iteration is returned as is
    mixture: dict[str, Any] | None = None  # mixture mode: shares per component, guards, eligibility

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**data)

    def to_markdown(self) -> str:
        return "\n".join(render(self)) + "\n"


def _f(x: Any, nd: int = 4) -> str:  # significant digits: moves span many scales
    return number(x, nd, "g")




def _how_far(c: dict[str, Any]) -> str:
    e = c.get("evidence") or {}
    capped = f" (capped; wanted {_f(e.get('wanted_shift'), 3)})" if e.get("capped") else ""
    if c.get("centre_shift") is not None:
        w = c.get("width") or [None, None]
        return f"centre {c['centre_shift']:+.3f} range, width {_f(w[0], 3)} → {_f(w[1], 3)}{capped}"
    if c.get("weight_shift") is not None:
        return f"weights moved {c['weight_shift']:.3f} (total variation){capped}"
    return ""


def _changes(d: Decision) -> list[str]:
    if not d.changes:
        return ["No parameter changed."]
    lines = ["| parameter | driven by | evidence | old → new | how far |", "|---|---|---|---|---|"]
    for c in d.changes:
        s, e = c.get("slice") or {}, c.get("evidence") or {}
        by = (f"{s['condition']} {s['side']} [{_f(s['range'][0])}, {_f(s['range'][1])}]"
              if s else "baseline")
        ev = f"{e.get('method')}, ρ {_f(e.get('rho'), 2)}, {e.get('rows_in_range')} rows" if e else "–"
        lines.append(f"| `{c['parameter']}` | {by} | {ev} | {distribution_text(c['old'])} → "
                     f"{distribution_text(c['new'])} | {_how_far(c)} |")
    return lines


def _history(d: Decision) -> list[str]:
    if not d.history:
        return []
    lines = ["", "## Optuna trials so far", "", "| trial | iteration | source | state | value | note |",
             "|---|---|---|---|---|---|"]
    for h in d.history:
        lines.append(f"| {h['trial']} | {h.get('iteration', '–')} | {h.get('source') or '–'} | "
                     f"{h['state']} | {_f(h.get('value'))} | {h.get('reason') or ''} |")
    return lines


def _mixture(m: dict[str, Any] | None) -> list[str]:
    """The mixture mode's lines: image shares per component, the tilt, ineligible slices."""
    if not m:
        return []
    shares = ", ".join(f"{s['component']} {_f(s['share'], 3)}" for s in m.get("shares") or [])
    lines = [f"- mixture (share of images): {shares}; uniform floor {_f(m.get('uniform_floor'))}; "
             f"base: {m.get('base', '–')}; tilt: {m.get('tilt', '–')}"]
    for i in m.get("ineligible") or []:
        lines.append(f"- not eligible for the tilt: {i['slice']}: {i['reason']}")
    return lines


def render(d: Decision) -> list[str]:
    head = f"# Policy decision: {d.policy}"
    lines = [head, "", f"- scenario: {d.scenario}"]
    if d.loop_id is not None:
        lines.append(f"- loop `{d.loop_id}`, iteration {d.iteration}, objective {d.objective} "
                     f"(baseline {_f(d.baseline)})")
    if d.trial is not None:
        k = d.knobs or {}
        how = (f"tilt share {_f(k.get('tilt_share'), 3)}, cap {_f(k.get('max_shift'), 3)} range units"
               if "tilt_share" in k else f"step {_f(k.get('step'), 3)}")
        lines.append(f"- proposed by Optuna trial {d.trial} ({d.trial_source}): {how}, "
                     f"width × {_f(k.get('width_scale'), 3)}, acting on {k.get('n_slices')} slice(s)")
    lines.append(f"- uniform share {_f(d.uniform_share[0])} → {_f(d.uniform_share[1])}")
    lines += _mixture(d.mixture)
    if d.replayed:
        lines.append("- replayed: this iteration was already decided; the stored decision is returned")
    for t in d.told:
        lines.append(f"- told trial {t['trial']}: {t['state']}"
                     + (f" value {_f(t.get('value'))}" if t.get("value") is not None else "")
                     + (f" ({t['reason']})" if t.get("reason") else ""))
    lines += ["", "## Changes", "", *_changes(d)]
    if d.ignored:
        lines += ["", "## Implicated but not moved", ""]
        lines += [f"- `{i['parameter'] or '(none)'}` ({i['slice']}): {i['reason']}" for i in d.ignored]
    if d.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in d.notes]]
    return lines + _history(d)
