"""Production data as a failure signal: ingest a deployed model's log, measure drift and
failure proxies per slice, merge them into the failure report the policy reads.

Modules, one idea each (docs/production.md documents formats and thresholds):

- :mod:`~evaluator.production.log` — the JSONL record schema and per-line validation;
- :mod:`~evaluator.production.ingest` — watermark: :func:`read_window` → ``Window`` / ``NoData``,
  then :func:`commit` (each record counted once across runs, crash-safe);
- :mod:`~evaluator.production.tables` — conditions of frames (pixels, boxes) and of the
  reference shards;
- :mod:`~evaluator.production.drift` — PSI and KS per condition;
- :mod:`~evaluator.production.signals` — prevalence, confidence proxies and reviewed errors per
  slice, and :func:`window_signals`: one window → the signals dict;
- :mod:`~evaluator.production.merge` — real-val report + signals → a failure report;
- :mod:`~evaluator.production.report` — writing ``signals.json/md`` and ``report.json/md``;
- :mod:`~evaluator.production.frozen` — a frozen window on disk (records, frames, signals, report).

Typical use (what ``synthloop production ingest`` does)::

    result = read_window("prod/log", classes=scenario.classes)
    signals = window_signals(result, reference_tables(shards), scenario, val_report=val)
    merged = merge_reports(val, signals, scenario) if signals["status"] == "ok" else None
    write_outputs(out, signals, merged)
    commit(result)

Never imports prefect or mlflow.
"""

from __future__ import annotations

from evaluator.production.ingest import NoData, Window, commit, read_window
from evaluator.production.merge import merge_reports
from evaluator.production.options import ProductionOptions
from evaluator.production.report import write_outputs
from evaluator.production.signals import window_signals
from evaluator.production.tables import reference_tables

__all__ = ["NoData", "ProductionOptions", "Window", "commit", "merge_reports", "read_window",
           "reference_tables", "window_signals", "write_outputs"]
