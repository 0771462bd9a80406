"""Merge a real-val failure report with a production window's signals into one report.

The result is an ordinary ``synthloop-failure-report`` (same schema version, kind, ``data``,
``overall``, ``slices``…: the real-val report's), so the policy consumes it unchanged; only
``weak_slices`` change and a ``production`` block is added:

1. **Re-weighting.** Each real-val weak slice's score is multiplied by
   ``w = clip(p_prod / p_val, *weight_range)`` — how much more common its condition bin is in
   production than in real-val. ``p_val`` = the slice's support over the report's objects
   (object conditions) or its images over the report's images (image conditions); ``p_prod``
   = the bin's production ``prevalence`` from the signals. A failure on dark frames gains
   weight when night falls on the camera; one on a condition production never shows loses
   weight but is not erased. ``w = 1`` (with the reason) when the condition cannot be
   estimated from a production log or the window is too small (``min_window_images``).
2. **Reviewed failures.** A production bin whose reviewed recall is significantly below the
   real-val overall recall (Wilson 95% upper bound below it, as the evaluator's rule) becomes
   a weak slice with ``source: "production-reviewed"`` and score ``gap × √support``.
3. **Drift targets.** A condition flagged ``drift`` whose production values come from the
   pixels themselves (``source: "pixels"``: brightness, contrast, clutter, blur, noise) and
   that the scenario maps to generator parameters becomes a weak slice by itself, with
   ``source: "production-drift"``: its range is production's 10th–90th percentile range (the
   generator should render what production shows), its side the drift direction, its support
   the window's frames and its score ``D × √n`` (KS statistic — the share of production the
   training distribution misplaces — times the root of the window's frames, the √support
   weighting of a recall gap). The drift is re-measured against each iteration's shards, so
   the target fades once the training data covers production. Drift estimated from the
   model's own predictions (object size, count) is not a target: a model that misses small
   digits shows fewer small boxes; it stays a signal (and still triggers the loop).
4. All weak slices are ranked again by score.

The merge refuses a real-test or ``final_report`` report (the policy's rule), a signals dict
sliced with another report's bin edges, and a ``no_data`` window: an empty window yields no
merged report at all — use the real-val report alone.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from evaluator.checks import check_steering_report, report_identity
from evaluator.production.ingest import NoData, Window
from evaluator.production.options import ProductionOptions
from evaluator.production.signals import SIGNALS_KIND
from evaluator.slices import param_spec, weak_slices
from evaluator.stats import significantly_below
from generator import atomic
from generator.errors import ConfigError, DataError, is_number
from generator.fingerprint import json_sha256
from generator.scenario import Scenario

DRIFT_TARGET_SOURCE = "pixels"  # drift measured on this source can become a target (rule 3)


def _block(report: dict[str, Any], key: str) -> dict[str, Any]:
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def load_val_report(path: str | Path) -> dict[str, Any]:
    """Read a real-val ``report.json`` (or the report directory holding one)."""
    p = Path(path)
    p = p / "report.json" if p.is_dir() else p
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"--real-val-report: {str(p)!r} must be a readable report.json ({exc}); pass the "
                          "report written by `synthloop evaluate` on real-val") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--real-val-report: {str(p)!r} must hold a JSON object, but got {type(data).__name__}")
    return data


def check_val_report(report: dict[str, Any], scenario: Scenario) -> None:
    """Refuse what the policy would refuse (:func:`evaluator.checks.check_steering_report`)."""
    check_steering_report(report, scenario, where="--real-val-report")


def _check_signals(signals: dict[str, Any], report: dict[str, Any]) -> None:
    if signals.get("kind") != SIGNALS_KIND:
        raise ConfigError(f"signals: kind must be {SIGNALS_KIND!r}, but got {signals.get('kind')!r}")
    if signals.get("status") != "ok":
        window = (signals.get("window") or {}).get("id")
        raise DataError(f"production window {window}: status must be 'ok' to merge, but got "
                        f"{signals.get('status')!r} ({signals.get('reason')}); no merged report is made from "
                        "an empty window — give the policy the real-val report alone")
    used = (signals.get("sliced_with") or {}).get("report") or {}
    if used.get("sha256") != report_identity(report)["sha256"]:
        raise DataError("signals: must be sliced with this real-val report's bin edges, but sliced_with is "
                        f"{signals.get('sliced_with')!r}; recompute them with --real-val-report")


def _finite(x: Any) -> float | None:
    ok = is_number(x)
    return float(x) if ok else None


def _val_prevalence(w: dict[str, Any], report: dict[str, Any]) -> float | None:
    counts = report.get("counts") or {}
    if w.get("level") == "image":
        n, total = _finite(w.get("support_images")), _finite(counts.get("images"))
    else:
        n, total = _finite(w.get("support")), _finite(counts.get("objects"))
    return n / total if n is not None and total else None


def _bin(signals: dict[str, Any], condition: str, b: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    for c in signals.get("slices") or []:
        if c.get("condition") == condition and c.get("status") == "ok":
            match = [e for e in c["bins"] if e["bin"] == b]
            return c, (match[0] if match else None)
    return None, None


def _weight(w: dict[str, Any], report: dict[str, Any], signals: dict[str, Any], options: ProductionOptions,
            enough: str | None) -> dict[str, Any]:
    """The ``production`` entry of one real-val weak slice: weight, both prevalences, reason."""
    cond, entry = _bin(signals, w["condition"], w.get("bin"))
    p_val = _val_prevalence(w, report)
    p_prod = _finite(entry.get("prevalence")) if entry else None
    out: dict[str, Any] = {"weight": 1.0, "prevalence": p_prod, "real_val_prevalence": p_val,
                           "prevalence_source": cond.get("prevalence_source") if cond else None, "reason": None}
    if enough is not None:
        return {**out, "reason": enough}
    if cond is None or entry is None:
        return {**out, "reason": "the condition cannot be estimated from a production log"}
    if p_prod is None or not p_val:
        return {**out, "reason": "prevalence undefined (no production units or no real-val support)"}
    lo, hi = options.weight_range
    return {**out, "weight": min(max(p_prod / p_val, lo), hi)}


def _reviewed_slices(signals: dict[str, Any], overall_recall: float) -> list[dict[str, Any]]:
    """Production bins with reviewed objects, as evaluator slice dicts against real-val recall."""
    rows = []
    for c in signals.get("slices") or []:
        for e in c.get("bins", []) if c.get("status") == "ok" else []:
            r = e.get("reviewed")
            if not r or not r["support"]:
                continue
            n, k = r["support"], r["detected"]
            gap = overall_recall - k / n
            rows.append({"condition": c["condition"], "column": c["column"], "level": c["level"], "bin": e["bin"],
                         "range": e["range"], "side": e["side"], "recall": k / n, "recall_ci": r["recall_ci"],
                         "gap": gap, "support_objects": n, "support_images": r["support_images"],
                         "precision": r["precision"], "ap": None, "score": gap * math.sqrt(n),
                         "significant": significantly_below(k, n, overall_recall)})
    return rows


def drift_slices(signals: dict[str, Any], scenario: Scenario) -> list[dict[str, Any]]:
    """The ``production-drift`` weak slices of a window (rule 3 of the module docstring)."""
    out = []
    for d in signals.get("drift") or []:
        params = scenario.parameters_for_condition(str(d.get("condition")))
        side = {"lower": "low", "higher": "high"}.get(str(d.get("direction")))
        rng, stat, n = d.get("production_range"), _finite(d.get("ks_stat")), _finite(d.get("n_production"))
        if (d.get("status") != "drift" or d.get("source") != DRIFT_TARGET_SOURCE or not params or side is None
                or not isinstance(rng, list) or len(rng) != 2 or stat is None or not n):
            continue
        out.append({"condition": d["condition"], "column": d["column"], "level": d["level"], "bin": None,
                    "range": [float(rng[0]), float(rng[1])], "side": side, "parameters": params,
                    "parameter_specs": {p: param_spec(scenario, p) for p in params}, "recall": None,
                    "ci": None, "gap": None, "support": int(n), "support_images": int(n), "precision": None,
                    "ap": None, "score": stat * math.sqrt(n),
                    "source": "production-drift",
                    "drift": {k: d.get(k) for k in ("psi", "ks_stat", "ks_p", "direction", "reference_range",
                                                    "production_range")}})
    return out


def merge_reports(val_report: dict[str, Any], signals: dict[str, Any], scenario: Scenario,
                  options: ProductionOptions | None = None) -> dict[str, Any]:
    """The merged report (module docstring). Raises for refused inputs and ``no_data`` windows."""
    options = (options or ProductionOptions()).validate()
    check_val_report(val_report, scenario)
    _check_signals(signals, val_report)
    frames = int((signals.get("overall") or {}).get("readable_frames") or 0)
    enough = None if frames >= options.min_window_images else (
        f"window has {frames} readable frames < min_window_images {options.min_window_images}")
    merged: list[dict[str, Any]] = []
    for w in val_report.get("weak_slices") or []:
        prod = _weight(w, val_report, signals, options, enough)
        score = _finite(w.get("score"))
        merged.append({**w, "source": "real-val", "real_val_score": score,
                       "score": None if score is None else score * prod["weight"], "production": prod})
    overall = _finite(val_report["overall"].get("recall"))
    added = [] if enough is not None or overall is None else [
        {**w, "source": "production-reviewed"}
        for w in weak_slices(_reviewed_slices(signals, overall), scenario, overall)]
    drift = [] if enough is not None else drift_slices(signals, scenario)
    ranked = sorted(merged + added + drift,
                    key=lambda w: (-(w["score"] or 0.0), w["condition"], -1 if w["bin"] is None else w["bin"],
                                   w["source"]))
    out = copy.deepcopy(val_report)
    out["weak_slices"] = [{**w, "rank": i} for i, w in enumerate(ranked, start=1)]
    out["production"] = _production_block(signals, options, enough, len(added), len(drift))
    return atomic.jsonable(out)


def _production_block(signals: dict[str, Any], options: ProductionOptions, enough: str | None,
                      n_added: int, n_drift: int) -> dict[str, Any]:
    lo, hi = options.weight_range
    return {
        "window": signals["window"], "counts": signals["counts"], "status": signals["status"],
        "frames": (signals.get("overall") or {}).get("frames"),
        "weighting": "prevalence" if enough is None else f"none: {enough}",
        "rule": f"real-val weak slice score x clip(p_prod / p_val, {lo}, {hi}); reviewed production bins "
                "significantly below the real-val recall added as weak slices; pixel drift on a condition "
                "with generator parameters added as a target (production 10-90% range, score KS D x sqrt(frames))",
        "drift": [{k: d.get(k) for k in ("condition", "status", "psi", "ks_p", "direction")}
                  for d in signals.get("drift") or []],
        "drifted": list(signals.get("drifted") or []),
        "reviewed_weak_slices": n_added,
        "drift_targets": n_drift,
        "signals_sha256": json_sha256(signals),
    }


def measure_window(result: Window | NoData, scenario: Scenario, reference: list[str],
                   val_report: dict[str, Any] | None, score_threshold: float | None,
                   default_threshold: float = 0.3) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One ingest result → its signals and, given a real-val report, the merged failure report
    (None for an empty window): what ``synthloop production ingest`` and the monitor flow do.

    The operating threshold is ``score_threshold`` when given, else the report's, else
    ``default_threshold`` (:meth:`ProductionOptions.at_threshold` sets ``confident`` from it).
    ``reference`` may be empty for an empty window (the monitor's loop may not exist yet)."""
    import pandas as pd

    from evaluator.production.signals import window_signals
    from evaluator.production.tables import ReferenceTables, reference_tables

    if val_report is not None:
        check_val_report(val_report, scenario)
    if score_threshold is None:
        score_threshold = float(((val_report or {}).get("settings") or {}).get("score_threshold", default_threshold))
    options = ProductionOptions.at_threshold(score_threshold)
    # the reference is read (and checked) whenever one is named, also for an empty window: a bad
    # --reference is an error at once, not at the first window with data
    ref = reference_tables(reference) if reference else ReferenceTables(pd.DataFrame(), pd.DataFrame(), 1.0, [])
    if isinstance(result, NoData):
        return window_signals(result, ref, scenario, options), None
    signals = window_signals(result, ref, scenario, options, val_report)
    merged = merge_reports(val_report, signals, scenario, options) if val_report is not None else None
    return signals, merged
