"""What the closed loop shows in Prefect: per-iteration artifacts and the loop's progress.

- ``<loop>-iter-<k>`` (Markdown): real-val numbers, the weakest slice, where the iteration is
  tracked in MLflow (a link when the tracking URI is a server) and the policy's decision record.
- ``<loop>-iter-<k>-changes`` (table): one row per weak slice acted on and parameter moved.
- ``<loop>-progress`` (progress): iterations completed / planned.

The text is built by plain functions (:func:`iteration_markdown`, :func:`change_rows`,
:func:`summary_row`) so it is tested without a Prefect server; the ``create_*`` calls only
publish it, and only inside a flow run.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

from flows.loop.state import IterationRecord, LoopConfig
from generator.fmt import number

__all__ = ["change_rows", "init_row", "iteration_artifacts", "iteration_markdown", "loop_progress", "summary_row",
           "update_progress"]


def artifact_key(cfg: LoopConfig, suffix: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{cfg.study_name}-{suffix}".lower()).strip("-")


def mlflow_link(uri: str, experiment_id: str | None, run_id: str) -> str:
    """A Markdown link to the run when the tracking URI is an MLflow server, else how to open it."""
    if uri.startswith(("http://", "https://")) and experiment_id:
        return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}` (open with `mlflow ui --backend-store-uri {uri}`)"


def summary_row(record: IterationRecord) -> dict[str, Any]:
    """One row of the loop's final table."""
    ev, d = record.evaluate, record.decision
    return {"iteration": record.iteration, "images_rendered": record.images_rendered,
            "real_val_map50": ev.get("map50"), "real_val_recall": ev.get("recall"), "weakest": ev.get("weakest"),
            "changed": list(d.get("changed") or []), "trial": d.get("trial"), "seconds": record.seconds}


def init_row(init: dict[str, Any]) -> dict[str, Any]:
    """The final table's first row for a warm start: the init model (history.json's ``init``)."""
    ev, d = init.get("evaluate") or {}, init.get("decision") or {}
    return {"iteration": "init", "images_rendered": 0, "real_val_map50": ev.get("map50"),
            "real_val_recall": ev.get("recall"), "weakest": ev.get("weakest"),
            "changed": list(d.get("changed") or []), "trial": d.get("trial"), "seconds": ev.get("seconds", 0.0)}


def change_rows(cfg: LoopConfig, record: IterationRecord) -> list[dict[str, Any]]:
    """Weak slices the policy acted on and the parameters it moved (from ``decision.json``)."""
    decision = json.loads((cfg.work / record.decision["path"]).read_text(encoding="utf-8"))
    from generator.params import distribution_text as _dist

    rows = []
    for c in decision.get("changes") or []:
        s = c.get("slice") or {}
        rows.append({"parameter": c["parameter"],
                     "slice": f"{s['condition']} {s.get('side', '')} {s.get('range')}" if s else "baseline",
                     "old": _dist(c["old"]), "new": _dist(c["new"]), "trial": decision.get("trial")})
    return rows


def iteration_markdown(cfg: LoopConfig, record: IterationRecord, run_link: str, model: dict[str, Any] | None) -> str:
    ev, r = record.evaluate, record.render
    lines = [f"# {cfg.study_name} — iteration {record.iteration}", "",
             f"- rendered: {r['images']} images in {len(r.get('shards') or [])} shard(s) "
             f"(total {record.images_rendered}), fingerprint `{r['fingerprint']}`",
             f"- real-val: mAP@0.5 {number(ev.get('map50'))}, recall {number(ev.get('recall'))}, "
             f"weakest slice: {ev.get('weakest') or '–'}",
             f"- MLflow run: {run_link}"]
    if model and model.get("version") is None:  # an external detector's model: artifacts + hash
        lines.append(f"- model (external): `{model.get('model_uri')}` sha256 `{model.get('sha256')}`")
    elif model:
        lines.append(f"- model: `{model.get('model_uri')}` version {model.get('version')}"
                     + (" — now `champion`" if model.get("champion") else ""))
    from policy.decision import Decision

    decision = json.loads((cfg.work / record.decision["path"]).read_text(encoding="utf-8"))
    lines += ["", Decision.from_dict(decision).to_markdown()]
    return "\n".join(lines)


def iteration_artifacts(cfg: LoopConfig, t: Any, record: IterationRecord, tracked: dict[str, Any]) -> None:
    """Publish iteration ``record``'s Markdown summary and change table to Prefect."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from flows.tracking.runs import client

    exp = client(t.uri).get_experiment_by_name(t.experiment)
    link = mlflow_link(t.uri, exp.experiment_id if exp else None, tracked["run_id"])
    k = record.iteration
    create_markdown_artifact(iteration_markdown(cfg, record, link, tracked.get("model")),
                             key=artifact_key(cfg, f"iter-{k}"), description=f"iteration {k} summary")
    rows = change_rows(cfg, record) or [{"parameter": "–", "slice": "no parameter changed", "old": "", "new": "",
                                         "trial": record.decision.get("trial")}]
    create_table_artifact(rows, key=artifact_key(cfg, f"iter-{k}-changes"),
                          description=f"iteration {k}: weak slices → parameter changes")


def loop_progress(cfg: LoopConfig, done: int) -> UUID:
    from prefect.artifacts import create_progress_artifact

    made = create_progress_artifact(100.0 * done / cfg.iterations, key=artifact_key(cfg, "progress"),
                                    description=f"{done}/{cfg.iterations} iterations")
    return made  # type: ignore[return-value]  # sync call: a UUID, not a coroutine


def update_progress(artifact: UUID, cfg: LoopConfig, done: int) -> None:
    from prefect.artifacts import update_progress_artifact

    update_progress_artifact(artifact, 100.0 * done / cfg.iterations,
                             description=f"{done}/{cfg.iterations} iterations")
