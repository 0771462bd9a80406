"""One loop iteration's record in MLflow: the child run's params, metrics, artifacts and model."""

from __future__ import annotations

import functools
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Run

from flows.tracking.runs import (
    MAX_METRICS_PER_BATCH,
    PARENT_METRICS,
    PRODUCTION_ARTIFACTS,
    TAG_CONTEXT,
    TAG_ITERATION,
    TAG_NEW_SHARD,
    TAG_WEAKEST,
    TAG_WINDOW,
    Tracking,
    _set_tags,
    client,
    flatten,
    log_params,
)
from generator.errors import ConfigError, field_error, is_number


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"log_iteration: {str(path)!r} must be a readable JSON file ({exc}); "
                          "log only iterations the loop completed") from exc
    return data if isinstance(data, dict) else {}


def iteration_params(work: Path, record: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """The child run's params, all derived from files (so a resume logs the same values):
    the generation params ``gen.*``, the Optuna trial that proposed them (``gen.trial``, from
    iteration k-1's decision), this iteration's decision trial, seeds and loop settings."""
    import yaml

    k = int(record["iteration"])
    gen = yaml.safe_load((work / record["params"]).read_text(encoding="utf-8")) or {}
    dists = gen.pop("distributions", None) or {}
    warm = k == 0 and bool(config.get("init_model"))  # params_0 came from the init model's decision
    prev = _read_json(work / (f"iter_{k - 1}" if k > 0 else "init") / "decision.json") if k > 0 or warm else {}
    d = record.get("decision") or {}
    start = ("init model's decision" if warm else "uniform start") if k == 0 else None
    out: dict[str, Any] = {"iteration": k, "gen.trial": prev.get("trial"),
           "gen.trial_source": prev.get("trial_source") or start,
           "decision.trial": d.get("trial"), "decision.trial_source": d.get("trial_source"),
           "decision.changed": ",".join(d.get("changed") or []) or "none",
           "render.fingerprint": record["render"]["fingerprint"], "train.init": record["train"].get("init"),
           **{f"seed.{n}": v for n, v in record["seeds"].items()},
           **{key: config.get(key) for key in ("scenario", "policy", "objective", "strategy", "real_ratio",
                                               "images_per_iteration", "steps_per_iteration", "render_shards",
                                               "latest_weight", "seed") if key in config}}
    return {**flatten(out), **flatten(gen, "gen"), **flatten(dists, "gen")}


def iteration_metrics(work: Path, record: dict[str, Any]) -> dict[str, float]:
    """The child run's metrics: overall real-val numbers, training numbers, per-slice recall."""
    report = _read_json(work / record["evaluate"]["path"] / "report.json")
    o = report.get("overall") or {}
    out: dict[str, Any] = {f"real_val_{n}": o.get(n) for n in ("map50", "map", "recall", "precision")}
    out.update(images_rendered=record.get("images_rendered"), images_this_iteration=record["render"].get("images"),
               train_final_loss=record["train"].get("final_loss"),
               train_images_per_s=record["train"].get("images_per_s"))
    for s in report.get("slices") or []:
        out[re.sub(r"[^\w\-. /]", "_", f"slice.{s['condition']}.{s['bin']}.recall")] = s.get("recall")
    return {k: float(v) for k, v in out.items()
            if is_number(v)}


def _log_metrics(c: MlflowClient, run_id: str, k: int, metrics: dict[str, float], skip: set[str]) -> None:
    now = int(time.time() * 1000)
    new = [Metric(key, v, now, k) for key, v in sorted(metrics.items()) if key not in skip]
    for i in range(0, len(new), MAX_METRICS_PER_BATCH):
        c.log_batch(run_id, metrics=new[i:i + MAX_METRICS_PER_BATCH])


def _log_parent_curve(c: MlflowClient, parent_id: str, k: int, record: dict[str, Any]) -> None:
    """One point per iteration (step = k) of the loop curve on the parent run."""
    values: dict[str, float] = {}
    for key, (section, name) in PARENT_METRICS.items():
        v = (record.get(section) or {}).get(name) if section else record.get(name)
        if is_number(v):
            values[key] = float(v)
    done = {key for key in values if any(m.step == k for m in c.get_metric_history(parent_id, key))}
    _log_metrics(c, parent_id, k, values, done)


def _work_path(work: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else work / p


def dataset_items(work: Path, record: dict[str, Any], config: dict[str, Any],
                  production: Path | None = None) -> list[tuple[Path, str, dict[str, str]]]:
    """``(shard path, context, input tags)`` of every dataset behind iteration ``k``: all
    shards the model trained on (``training``; real-train there with the mixed strategy),
    real-val (``validation``) and an optional production window (``production``)."""
    new = {str(_work_path(work, s["path"]).resolve()) for s in record["render"]["shards"]}
    items = []
    for entry in record["train"]["data"]:
        rel, _, weight = str(entry).rpartition(":")
        path = _work_path(work, rel)
        items.append((path, "training", {"synthloop.weight": weight,
                                         TAG_NEW_SHARD: str(str(path.resolve()) in new).lower()}))
    real = Path(config["real_dir"]) if config.get("real_dir") else work / "real"
    items.append((real / "real-val", "validation", {}))
    if production is not None:
        items.append((Path(production), "production", {}))
    return items


def _dataset_name(work: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(work.resolve()))
    except ValueError:
        return path.name


def _context(d: Any) -> str:
    return next((tag.value for tag in d.tags if tag.key == TAG_CONTEXT), "")


def _dataset_rows(path: Path) -> tuple[Any, str]:
    """``(rows loader, digest)`` of a dataset: a shard's conditions.parquet and fingerprint, or a
    frozen production window's records (one row each) and window id."""
    from evaluator.production.frozen import is_frozen, read_info, window_table
    from generator.shard import Shard

    if is_frozen(path):
        return functools.partial(window_table, path), str(read_info(path)["id"])
    shard = Shard(path)
    return shard.conditions, shard.fingerprint


def _log_inputs(c: MlflowClient, run: Run, work: Path, items: list[tuple[Path, str, dict[str, str]]]) -> None:
    """One MLflow dataset per shard: digest = the shard fingerprint (MLflow's own digest hashes
    only 10,000 rows), source = the shard directory, rows = its conditions.parquet. A frozen
    production window: digest = the window id, rows = its records."""
    from mlflow.data.pandas_dataset import from_pandas

    have = {(d.dataset.name, d.dataset.digest, _context(d)) for d in (run.inputs.dataset_inputs if run.inputs else [])}
    todo = []
    for path, context, tags in items:
        rows, digest = _dataset_rows(path)
        name = _dataset_name(work, path)
        if (name, digest, context) in have:
            continue
        with warnings.catch_warnings():  # two local sources match a path; integer-column schema hints
            warnings.simplefilter("ignore", UserWarning)
            ds = from_pandas(rows(), source=str(path.resolve()), digest=digest,
                             name=name)
            entity = ds._to_mlflow_entity()
        todo.append(DatasetInput(entity, tags=[InputTag(TAG_CONTEXT, context),
                                               *(InputTag(k, v) for k, v in tags.items())]))
    if todo:
        c.log_inputs(run.info.run_id, datasets=todo)


def log_iteration(t: Tracking, run_id: str, parent_id: str, work: Path, record: dict[str, Any],
                  config: dict[str, Any], *, production: Path | None = None) -> None:
    """Log completed iteration ``record`` (a ``history.json`` entry; paths relative to
    ``work``) on its child run ``run_id`` and the loop curve on ``parent_id``. Idempotent."""
    from flows.tracking.artifacts import log_iteration_files

    c, work, k = client(t.uri), Path(work), int(record["iteration"])
    run = c.get_run(run_id)
    if run.data.tags.get(TAG_ITERATION) not in (None, str(k)):
        raise field_error("log_iteration.run_id", f"must be iteration {k}'s run", run.data.tags[TAG_ITERATION],
                          "pass the run id open_iteration_run returned for this iteration")
    log_params(t, run_id, iteration_params(work, record, config))
    _log_inputs(c, run, work, dataset_items(work, record, config, production))
    _log_metrics(c, run_id, k, iteration_metrics(work, record), set(run.data.metrics))
    _log_parent_curve(c, parent_id, k, record)
    weakest = (record.get("evaluate") or {}).get("weakest")
    window = (record.get("production") or {}).get("window")
    _set_tags(c, run_id, {**({TAG_WEAKEST: weakest} if weakest else {}), **({TAG_WINDOW: window} if window else {})})
    log_iteration_files(c, run_id, parent_id, work, record, config)
    _log_production_files(c, run_id, work, record)


def _log_production_files(c: MlflowClient, run_id: str, work: Path, record: dict[str, Any]) -> None:
    """``report-production/`` (signals and merged report) of an iteration that merged a window."""
    rel = (record.get("production") or {}).get("report")
    if not rel:
        return
    have = {f.path for f in c.list_artifacts(run_id, PRODUCTION_ARTIFACTS)}
    for name in ("report.json", "report.md", "signals.json", "signals.md"):
        path = _work_path(work, rel) / name
        if path.is_file() and f"{PRODUCTION_ARTIFACTS}/{name}" not in have:
            c.log_artifact(run_id, str(path), PRODUCTION_ARTIFACTS)
