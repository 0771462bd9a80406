"""synthloop evaluator: measure a detector on a shard and find the conditions where it fails.

Library API (predictions are data — a COCO results list — so everything runs without a model):

- :func:`evaluator.evaluate.evaluate` → :class:`~evaluator.evaluate.Evaluation` (the report
  dict + tables); :func:`evaluator.report.write_report` writes report.json / report.md /
  slices.csv / gallery.png atomically. Schema: docs/failure-report.md.
- building blocks: :func:`evaluator.cocometrics.coco_metrics` (COCOeval),
  :func:`evaluator.matching.match_predictions`, :func:`evaluator.conditions.condition_tables`,
  :func:`evaluator.slices.condition_slices` / :func:`~evaluator.slices.weak_slices`,
  :func:`evaluator.stats.wilson_interval`, :func:`evaluator.ap.bootstrap_ap`.
- :mod:`evaluator.predict` runs a real detector over a shard (imports trainer lazily);
  :mod:`evaluator.predictions` reads any detector's COCO results file instead
  (``synthloop evaluate --predictions``); :mod:`evaluator.testing` has a stand-in detector.

Never imports prefect or mlflow.
"""

from __future__ import annotations

from evaluator.evaluate import SCHEMA_VERSION, EvalOptions, Evaluation, evaluate
from evaluator.report import write_report

__all__ = ["SCHEMA_VERSION", "EvalOptions", "Evaluation", "evaluate", "write_report"]
