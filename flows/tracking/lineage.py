"""Walk a model's lineage back through the loop: model ← shards ← failure report ← previous model.

:func:`lineage` starts from a run id (an iteration's child run, or a loop's parent run = its
latest iteration) or a registry reference ``models:/<name>@<alias>`` / ``models:/<name>/<version>``,
and follows each iteration run's ``synthloop.previous_run_id`` tag back to iteration 0. Each
step reads only what :mod:`flows.tracking` logged:

- the model version registered from the run (tag ``synthloop.run_id``) and its aliases;
- the shards it trained on (dataset inputs, context ``training``: name, source path, digest =
  fingerprint; ``synthloop.new=true`` marks the ones this iteration rendered), their params
  summary (``gen.*`` params) and the Optuna trial that proposed them (``gen.trial``);
- its failure report on real-val (``report/report.json`` artifact, ``real_val_map50``, the
  ``synthloop.weakest`` tag) — which is what drove the *next* iteration's params.

A warm-started loop (flows/tracking/warm_start.py) ends the walk at its init run: iteration 0's
previous run is the run "init" (entry ``iteration`` -1, ``init`` = the checkpoint's path and
weights sha256), whose report drove iteration 0's params and whose model iteration 0 continued.

:func:`format_lineage` prints one block per iteration, newest first.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from flows.tracking.model import TAG_RUN
from flows.tracking.runs import (
    TAG_CONTEXT,
    TAG_ITERATION,
    TAG_KIND,
    TAG_NEW_SHARD,
    TAG_PARENT,
    TAG_PREVIOUS,
    TAG_WEAKEST,
    client,
)
from generator.errors import ConfigError
from generator.fmt import number
from generator.params import distribution_text

MODEL_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _bad_ref(ref: str, uri: str, why: str) -> ConfigError:
    return ConfigError(f"lineage REF: {why} for {ref!r} in {uri}; pass an iteration or loop run id, "
                       "models:/<name>@<alias> or models:/<name>/<version>")


def resolve_ref(c: MlflowClient, uri: str, ref: str) -> str:
    """The iteration run id that ``ref`` names (a loop's parent run → its latest iteration)."""
    m = MODEL_REF.match(ref)
    try:
        if m and m["alias"]:
            return str(c.get_model_version_by_alias(m["name"], m["alias"]).run_id)
        if m:
            return str(c.get_model_version(m["name"], m["version"]).run_id)
        if not RUN_ID.match(ref):
            raise _bad_ref(ref, uri, "not a run id (32 hex digits) nor a models:/ reference")
        run = c.get_run(ref)
    except MlflowException as exc:
        raise _bad_ref(ref, uri, f"no such run or model version ({exc.error_code})") from exc
    if run.data.tags.get(TAG_KIND) == "loop":
        children = c.search_runs([run.info.experiment_id], f"tags.`{TAG_PARENT}` = '{ref}'")
        if not children:
            raise _bad_ref(ref, uri, "the loop run has no iteration runs yet")
        return str(max(children, key=lambda r: int(r.data.tags.get(TAG_ITERATION, -1))).info.run_id)
    return ref


def _model_of(c: MlflowClient, run_id: str) -> dict[str, Any] | None:
    versions = [mv for mv in c.search_model_versions(f"run_id = '{run_id}'") if mv.tags.get(TAG_RUN) == run_id]
    if not versions:
        return None
    mv = c.get_model_version(versions[0].name, versions[0].version)  # search leaves aliases empty
    return {"name": mv.name, "version": str(mv.version), "aliases": sorted(mv.aliases),
            "model_id": mv.tags.get("synthloop.model_id"), "source": mv.source}


def _logged_distribution(logged: dict[str, str]) -> dict[str, Any]:
    """A distribution back from its MLflow params (strings: numbers, JSON weights, the value)."""
    d: dict[str, Any] = {"kind": logged.get("kind", "uniform")}
    for key in ("center", "width", "low", "high"):
        if key in logged:
            try:
                d[key] = float(logged[key])
            except ValueError:
                d[key] = None
    if "weights" in logged:
        try:
            d["weights"] = json.loads(logged["weights"])
        except ValueError:
            d["weights"] = {}
    if "value" in logged:
        d["value"] = logged["value"]
    return d


def params_summary(params: dict[str, str]) -> str:
    """``uniform_share 0.3; camera.distance truncnormal(centre 7.1, width 1.2); …`` from ``gen.*``."""
    dists: dict[str, dict[str, str]] = {}
    for key, v in params.items():
        m = re.match(r"^gen\.(.+)\.(kind|center|width|low|high|value|weights)$", key)
        if m:
            dists.setdefault(m[1], {})[m[2]] = v
    parts = [f"uniform_share {params.get('gen.uniform_share', '0.0')}"]
    parts += [f"{name} {distribution_text(_logged_distribution(d))}" for name, d in sorted(dists.items())]
    if params.get("gen.components"):  # a mixture (docs/scenarios.md §3): one JSON param, maybe truncated
        try:
            comps = json.loads(params["gen.components"])
            names = [f"{c.get('name') or f'component {i}'} w {float(c.get('weight', 0)):.2g}"
                     for i, c in enumerate(comps)]
            parts.append(f"mixture of {len(comps)} components ({', '.join(names)})")
        except (ValueError, TypeError, AttributeError):
            parts.append("mixture of components (see the params file)")
        return "; ".join(parts)
    return "; ".join(parts) + ("" if dists else "; every parameter uniform over its range")


def _datasets(run: Run) -> list[dict[str, Any]]:
    out = []
    for d in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in d.tags}
        out.append({"name": d.dataset.name, "path": json.loads(d.dataset.source or "{}").get("uri"),
                    "fingerprint": d.dataset.digest, "context": tags.get(TAG_CONTEXT),
                    "new": tags.get(TAG_NEW_SHARD) == "true", "weight": tags.get("synthloop.weight")})
    return out


def _null(v: str | None) -> str | None:
    return None if v in (None, "null", "none", "") else v


def _entry(c: MlflowClient, run: Run) -> dict[str, Any]:
    p, data = run.data.params, _datasets(run)
    training = [d for d in data if d["context"] == "training"]
    trial = _null(p.get("gen.trial"))
    return {
        "iteration": int(run.data.tags.get(TAG_ITERATION, -1)), "run_id": run.info.run_id,
        "status": run.info.status, "model": _model_of(c, run.info.run_id),
        "shards": [d for d in training if d["new"]], "trained_on": training,
        "validation": [d for d in data if d["context"] == "validation"],
        "params": params_summary(p),
        "trial": {"number": None if trial is None else int(trial), "source": _null(p.get("gen.trial_source"))},
        "report": {"uri": f"{run.info.artifact_uri}/report/report.json",
                   "real_val_map50": run.data.metrics.get("real_val_map50"),
                   "weakest": run.data.tags.get(TAG_WEAKEST)},
        "previous_run_id": run.data.tags.get(TAG_PREVIOUS),
        # a warm start (flows/tracking/warm_start.py): on the init run ("iteration -1") and iteration 0
        "init": ({"path": p["init.path"], "weights_sha256": p.get("init.weights_sha256")}
                 if p.get("init.path") else None),
    }


def lineage(uri: str, ref: str) -> list[dict[str, Any]]:
    """The chain of iterations behind ``ref``, newest first, down to iteration 0. Each entry
    also carries ``previous_model`` and ``driven_by`` (the previous iteration's report, whose
    weak slices steered this iteration's params); ``previous_missing`` names a previous run id
    that is no longer in the store (the walk stops there)."""
    c = client(uri)
    run_id: str | None = resolve_ref(c, uri, ref)
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    while run_id and run_id not in seen:
        seen.add(run_id)
        try:
            run = c.get_run(run_id)
        except MlflowException as exc:
            if not chain:
                raise _bad_ref(ref, uri, f"its run {run_id} is not in the store") from exc
            chain[-1]["previous_missing"] = run_id
            break
        chain.append(_entry(c, run))
        run_id = chain[-1]["previous_run_id"]
    for newer, older in zip(chain, [*chain[1:], None], strict=True):
        newer["previous_model"] = older["model"] if older else None
        newer["driven_by"] = older["report"] if older else None
    return chain


def _model_line(m: dict[str, Any] | None) -> str:
    if m is None:
        return "(not registered)"
    return f"{m['name']} v{m['version']}" + (f" [{', '.join(m['aliases'])}]" if m["aliases"] else "")


def format_lineage(chain: list[dict[str, Any]]) -> str:
    """``model ← shards (params, trial, fingerprint) ← failure report ← previous model`` per step."""
    lines = []
    for e in chain:
        if e["iteration"] < 0:  # a warm start's init model: where the walk ends
            init = e.get("init") or {}
            lines.append(f"init model  run {e['run_id']} ({e['status']}; real-val mAP@0.5 "
                         f"{number(e['report']['real_val_map50'])})")
            lines.append(f"  model            {_model_line(e['model'])}")
            lines.append(f"  checkpoint       {init.get('path')} (weights sha256 {init.get('weights_sha256')})")
            lines.append(f"  its report       {e['report']['uri']} (weakest {e['report']['weakest'] or '–'}): "
                         "steered iteration 0's params")
            continue
        lines.append(f"iteration {e['iteration']}  run {e['run_id']} ({e['status']}; "
                     f"real-val mAP@0.5 {number(e['report']['real_val_map50'])})")
        lines.append(f"  model            {_model_line(e['model'])}")
        trial = e["trial"]
        by = (f"Optuna trial {trial['number']} ({trial['source']})" if trial["number"] is not None
              else "no Optuna trial" + (f" ({trial['source']})" if trial["source"] else ""))
        for s in e["shards"] or [{"name": "(none)", "fingerprint": "–", "path": None}]:
            lines.append(f"  ← shards         {s['name']} fingerprint {s['fingerprint']} ({s['path']})")
        lines.append(f"                   params: {e['params']}; {by}")
        d = e["driven_by"]
        if d is None:
            lines.append("  ← failure report (none: iteration 0 starts from uniform params)")
        else:
            who = "the init model" if e["iteration"] == 0 else f"iteration {e['iteration'] - 1}"
            lines.append(f"  ← failure report of {who}: {d['uri']} "
                         f"(real-val mAP@0.5 {number(d['real_val_map50'])}; weakest {d['weakest'] or '–'})")
        if e["iteration"] > 0 or e["previous_model"] is not None:
            lines.append(f"  ← previous model {_model_line(e['previous_model'])}")
        if e.get("previous_missing"):
            lines.append(f"  ← previous run {e['previous_missing']} is missing from the store")
    return "\n".join(lines)
