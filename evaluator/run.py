"""One call from a checkpoint (or a detections file) and a shard to a written failure report.

Used by ``synthloop evaluate``, the demo and the loop, so the order of checks (cheap refusals
before any inference) lives in one place. :func:`evaluate_predictions` is the same path for
another detector's COCO results file: its detections enter :func:`evaluator.evaluate.evaluate`
where a model's predictions do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluator.checks import check_model, check_shard, resolve_scenario
from evaluator.evaluate import EvalOptions, Evaluation, evaluate
from evaluator.predict import model_identity, open_detector, predict_parallel, predict_shard
from evaluator.predictions import load_predictions
from evaluator.report import write_report
from generator import atomic
from generator.errors import ConfigError, ShardError, field_error, is_int
from generator.shard import Shard


def evaluate_model(model: str | Path, data: str | Path, out: str | Path, options: EvalOptions | None = None, *,
                   scenario: str | None = None, final_report: bool = False, batch_size: int = 16,
                   overwrite: bool = False, progress: bool = True, executor: Any = None,
                   chunk_images: int = 500) -> tuple[Path, Evaluation]:
    """Predict with ``model`` on shard ``data``, evaluate, write the report to ``out``.

    ``executor`` (anything with ``submit``: a ``ProcessPoolExecutor``, a Dask client's
    ``get_executor()``): a split of more than ``chunk_images`` images is predicted there in
    contiguous chunks (:func:`evaluator.predict.predict_parallel`; the model and the shard are
    read from their paths, so workers must see them), merged in image order and evaluated once
    here: the same report as without it."""
    options = (options or EvalOptions()).validate()
    if not is_int(chunk_images) or chunk_images < 1:
        raise field_error("chunk_images", "must be an integer >= 1", chunk_images, "use e.g. 500")
    if not Path(model).exists():
        raise ConfigError(f"--model: {str(model)!r} does not exist; pass a checkpoint written by `synthloop train`")
    try:
        shard = Shard(data)
    except ShardError as exc:
        raise ShardError(f"--data: {exc}") from exc
    check_shard(shard, final_report)
    detector = open_detector(model)
    check_model(shard, detector.classes, detector.scenario)
    scen = resolve_scenario(scenario, shard, detector.scenario)
    atomic.prepare_output_dir(out, overwrite)
    if executor is not None and len(shard.coco["images"]) > chunk_images:
        predictions = predict_parallel(executor, model, shard, batch_size, chunk_images, progress=progress)
    else:
        predictions = predict_shard(detector, shard, batch_size, progress=progress)
    ev = evaluate(shard, predictions, scen, options, model=model_identity(model, detector), final_report=final_report)
    return write_report(ev, shard, out, overwrite), ev


def evaluate_predictions(predictions: str | Path, data: str | Path, out: str | Path,
                         options: EvalOptions | None = None, *, scenario: str | None = None,
                         final_report: bool = False, overwrite: bool = False) -> tuple[Path, Evaluation]:
    """Evaluate a COCO results file ``predictions`` (any detector's) on shard ``data`` and write
    the report to ``out``; the report's ``model`` block is ``{predictions, sha256, detections}``."""
    options = (options or EvalOptions()).validate()
    try:
        shard = Shard(data)
    except ShardError as exc:
        raise ShardError(f"--data: {exc}") from exc
    check_shard(shard, final_report)
    preds, source = load_predictions(predictions, shard)
    scen = resolve_scenario(scenario, shard, None)
    atomic.prepare_output_dir(out, overwrite)
    ev = evaluate(shard, preds, scen, options, model=source, final_report=final_report)
    return write_report(ev, shard, out, overwrite), ev


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers a loop table shows: mAP@0.5, recall and the weakest slice."""
    o = report["overall"]
    weak = report.get("weak_slices") or []
    top = weak[0] if weak else None
    return {"map50": o.get("map50"), "recall": o.get("recall"),
            "weakest": None if top is None else f"{top['condition']} {top['side']} (recall {top['recall']:.2f})"}
