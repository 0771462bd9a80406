"""One production window → one signals dict (``synthloop-production-signals``, schema 1).

:func:`window_signals` puts together what the other modules compute: the ingest counts and
malformed lines (:mod:`~evaluator.production.ingest`), drift per condition
(:mod:`~evaluator.production.drift`) and per-slice prevalence, confidence and reviewed errors
(:mod:`~evaluator.production.signals`). A :class:`~evaluator.production.ingest.NoData` result
gives ``status: "no_data"`` with its reason and counts, and **no** drift, overall or slice
signals — an empty window never produces a number that looks like a measurement.
Key by key, the dict is documented in docs/production.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from evaluator.production.drift import drift_table, drifted
from evaluator.production.ingest import NoData, Window
from evaluator.production.options import ProductionOptions
from evaluator.production.signals import overall_signals, report_edges, reviewed_matches, slice_signals
from evaluator.production.tables import ImageLoader, ReferenceTables, load_rgb, window_tables
from generator import atomic
from generator.scenario import Scenario

SIGNALS_KIND = "synthloop-production-signals"
SIGNALS_VERSION = 1


def _window_block(result: Window | NoData) -> dict[str, Any]:
    block: dict[str, Any] = {"id": result.window_id, "log": str(result.log), "state": str(result.state_path)}
    if isinstance(result, Window):
        stamps = sorted(r.record.timestamp for r in result.records)
        block.update(first_timestamp=stamps[0].isoformat(), last_timestamp=stamps[-1].isoformat(),
                     model_versions=dict(sorted(Counter(r.record.model_version for r in result.records).items())))
    return block


def window_signals(result: Window | NoData, ref: ReferenceTables, scenario: Scenario,
                   options: ProductionOptions | None = None, val_report: dict[str, Any] | None = None,
                   load_image: ImageLoader = load_rgb) -> dict[str, Any]:
    """The signals of one ingest result (see the module docstring).

    ``val_report`` (a real-val ``report.json`` dict), when given, supplies the bin edges so the
    production slices line up with its weak slices; the merge needs that alignment."""
    options = (options or ProductionOptions()).validate()
    head: dict[str, Any] = {
        "schema_version": SIGNALS_VERSION, "kind": SIGNALS_KIND, "window": _window_block(result),
        "counts": dict(result.counts), "malformed": [m.to_dict() for m in result.malformed],
        "notes": list(result.notes), "settings": options.to_dict(),
        "scenario": {"name": scenario.name, "version": scenario.spec.version},
        "reference": {"shards": ref.shards, "fill_ratio": ref.fill_ratio},
    }
    if isinstance(result, NoData):
        return atomic.jsonable({**head, "status": "no_data", "reason": result.reason, "drift": [],
                                "drifted": [], "overall": None, "slices": [], "sliced_with": None})
    t = window_tables(result, scenario.classes, options.score_threshold, load_image)
    matches = reviewed_matches(t, options)
    drift = drift_table(scenario, ref, t, options)
    edges = report_edges(val_report) if val_report is not None else None
    return atomic.jsonable({
        **head, "status": "ok", "drift": drift, "drifted": drifted(drift),
        "overall": overall_signals(t, matches, options),
        "slices": slice_signals(scenario, t, ref, matches, options, edges),
        "sliced_with": _sliced_with(val_report),
    })


def _sliced_with(val_report: dict[str, Any] | None) -> dict[str, Any]:
    if val_report is None:
        return {"edges_from": "reference"}
    from evaluator.production.merge import report_identity

    return {"edges_from": "real-val report", "report": report_identity(val_report)}
