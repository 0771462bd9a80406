"""Failure reports as the policy reads them: loading, refusals, weak slices and objectives.

A report is the ``report.json`` that ``synthloop evaluate`` writes (``evaluator.evaluate``;
schema ``synthloop-failure-report``). The policy reads only reports on real-val or production
data: a report on the held-out ``real-test`` split (or any ``final_report``) is refused, so the
loop can never tune itself to the data its final score comes from.

Metrics may be null (the evaluator turns NaN into null) and ``weak_slices`` may be empty:
every accessor here returns ``None`` / ``[]`` rather than inventing a number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.checks import check_steering_report
from generator.errors import ConfigError, is_number
from generator.fingerprint import json_sha256
from generator.scenario import Scenario

OBJECTIVES = ("map50", "recall", "slice_recall")


@dataclass(frozen=True)
class WeakSlice:
    """One weak slice of one report, with the scenario parameters that control it."""

    report: int  # index of the report it came from
    rank: int
    condition: str
    column: str
    level: str
    lo: float
    hi: float
    side: str
    support: int
    recall: float | None
    score: float
    parameters: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.condition}:{self.side}"

    def describe(self) -> str:
        return (f"{self.condition} ({self.column}) {self.side} [{self.lo:.4g}, {self.hi:.4g}] "
                f"report {self.report} rank {self.rank}")

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.report, "rank": self.rank, "condition": self.condition,
                "column": self.column, "level": self.level, "range": [self.lo, self.hi],
                "side": self.side, "support": self.support, "recall": self.recall,
                "score": self.score, "parameters": list(self.parameters)}


def finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite number, else None (null, NaN, inf, text)."""
    if not is_number(x):
        return None
    return float(x) if math.isfinite(x) else None


def _block(report: dict[str, Any], key: str) -> dict[str, Any]:
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def report_sha(report: dict[str, Any]) -> str:
    """Content hash of a report dict (canonical JSON), independent of where it is stored."""
    return json_sha256(report)


def load_report(path: str | Path) -> dict[str, Any]:
    """Read ``report.json`` (or a report directory holding one) as a dict."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise ConfigError(f"--report: file {str(p)!r} does not exist; pass a report.json written by "
                          "`synthloop evaluate` (or its directory)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--report: {str(p)!r} is not valid JSON ({exc}); pass the report.json "
                          "written by `synthloop evaluate`") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--report: {str(p)!r} must hold a JSON object, but got "
                          f"{type(data).__name__}; pass a report.json written by `synthloop evaluate`")
    return data


def check_report(report: dict[str, Any], scenario: Scenario, where: str = "--report") -> None:
    """Refuse a report the policy must not read (:func:`evaluator.checks.check_steering_report`)."""
    check_steering_report(report, scenario, where)


def _weak_slice(i: int, w: Any, scenario: Scenario) -> WeakSlice | None:
    if not isinstance(w, dict) or w.get("condition") not in scenario.spec.conditions:
        return None
    rng = w.get("range")
    score, support = finite(w.get("score")), finite(w.get("support"))
    if not (isinstance(rng, list | tuple) and len(rng) == 2) or score is None or not support:
        return None
    lo, hi = finite(rng[0]), finite(rng[1])
    if lo is None or hi is None:
        return None
    spec = scenario.spec.conditions[w["condition"]]
    params = tuple(p for p in w.get("parameters") or scenario.parameters_for_condition(w["condition"])
                   if p in scenario.parameters)
    return WeakSlice(report=i, rank=int(finite(w.get("rank")) or 0), condition=w["condition"],
                     column=str(w.get("column") or spec.column), level=str(w.get("level") or spec.level),
                     lo=min(lo, hi), hi=max(lo, hi), side=str(w.get("side", "")), support=int(support),
                     recall=finite(w.get("recall")), score=score, parameters=params)


def pooled_weak_slices(reports: list[dict[str, Any]], scenario: Scenario) -> list[WeakSlice]:
    """Usable weak slices of all reports, best first by score; one per (condition, side).

    A slice is usable when its condition is the scenario's, its range, score and support are
    finite and support > 0. The same condition and side in two reports keeps the higher score.
    """
    best: dict[str, WeakSlice] = {}
    for i, r in enumerate(reports):
        for w in r.get("weak_slices") or []:
            s = _weak_slice(i, w, scenario)
            if s is not None and (s.key not in best or s.score > best[s.key].score):
                best[s.key] = s
    return sorted(best.values(), key=lambda s: (-s.score, s.condition, s.lo, s.report))


def _slice_recall(report: dict[str, Any], driving: list[dict[str, Any]]) -> float | None:
    """Support-weighted recall of ``report``'s slices overlapping the driving slices' ranges."""
    detected = support = 0.0
    for d in driving:
        lo, hi = d["range"]
        for s in report.get("slices") or []:
            if not isinstance(s, dict) or s.get("condition") != d["condition"]:
                continue
            r = s.get("range") or [None, None]
            a, b = finite(r[0]), finite(r[1])
            n, k = finite(s.get("support_objects")), finite(s.get("detected"))
            if a is None or b is None or n is None or k is None or b < lo or a > hi:
                continue
            detected, support = detected + k, support + n
    return detected / support if support > 0 else None


def objective_value(report: dict[str, Any], objective: str,
                    driving: list[dict[str, Any]] | None = None) -> tuple[float | None, str]:
    """``(value, why_not)``: the objective measured on a report, or None and the reason."""
    counts = _block(report, "counts")
    if not finite(counts.get("objects")):
        return None, "the report has no objects (counts.objects = 0 or missing)"
    if objective == "slice_recall":
        v = _slice_recall(report, driving or [])
        return v, "" if v is not None else "no slice of the report overlaps the driving weak slices"
    v = finite(report["overall"].get(objective))
    return v, "" if v is not None else f"overall.{objective} is null or not a finite number"
