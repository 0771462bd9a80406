"""Files and pictures of one loop iteration on its MLflow runs (called by
:func:`flows.tracking.iteration.log_iteration`).

Child run of iteration *k*::

    report/report.json, report.md, slices.csv, gallery.png   the failure report on real-val
    report/slices_table.json                                  the slice table (log_table: a UI table)
    params.yaml, decision.json                                what was rendered; what the policy decided
    param_evolution.png                                       the parameter-evolution plot up to k
    images: gallery (step k), shard_samples (step k)          the report gallery; a preview grid of the shard

Parent run: images ``param_evolution`` at step *k*, so the UI's step slider replays how the
policy moved the generation distributions. Every item is skipped when already there (a
resumed iteration logs nothing twice): files by path, images by key and step, because
``log_image(key=...)`` and ``log_table`` would otherwise add a copy.

The plot uses ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot global
state), so it is safe in worker threads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from flows.loop.state import LoopHistory
from generator.params import Distribution

REPORT_FILES = ("report.json", "report.md", "slices.csv", "gallery.png")
TABLE = "report/slices_table.json"
EVOLUTION = "param_evolution.png"


def _listing(c: MlflowClient, run_id: str, folders: tuple[str, ...] = ("", "report", "images")) -> set[str]:
    return {f.path for folder in folders for f in c.list_artifacts(run_id, folder or None)}


def _has_image(listing: set[str], key: str, step: int) -> bool:
    return any(p.startswith(f"images/{key}+step+{step}+") for p in listing)


def log_iteration_files(c: MlflowClient, run_id: str, parent_id: str, work: Path, record: dict[str, Any],
                        config: dict[str, Any]) -> None:
    """Log the report files, params, decision, slice table, images and evolution plots."""
    import pandas as pd
    from PIL import Image

    k, have = int(record["iteration"]), _listing(c, run_id)
    report = work / record["evaluate"]["path"]
    for name in REPORT_FILES:
        if (report / name).is_file() and f"report/{name}" not in have:
            c.log_artifact(run_id, str(report / name), "report")
    for rel in (record["params"], record["decision"]["path"]):
        if Path(rel).name not in have:
            c.log_artifact(run_id, str(work / rel))
    if TABLE not in have and (report / "slices.csv").is_file():
        c.log_table(run_id, pd.read_csv(report / "slices.csv"), TABLE)
    if not _has_image(have, "gallery", k) and (report / "gallery.png").is_file():
        with Image.open(report / "gallery.png") as im:
            c.log_image(run_id, im.convert("RGB"), key="gallery", step=k)
    if not _has_image(have, "shard_samples", k) and record["render"]["shards"]:
        c.log_image(run_id, _samples(work / record["render"]["shards"][0]["path"], k), key="shard_samples", step=k)
    parent_has = _has_image(_listing(c, parent_id, ("images",)), "param_evolution", k)
    if EVOLUTION not in have or not parent_has:
        plot = evolution_image(params_history(work, record), str(config.get("scenario", "")))
        if EVOLUTION not in have:
            c.log_image(run_id, plot, artifact_file=EVOLUTION)
        if not parent_has:
            c.log_image(parent_id, plot, key="param_evolution", step=k)


def _samples(shard: Path, k: int) -> Any:
    from generator.preview import preview_grid

    return preview_grid(shard, n=16, seed=k, tile=96)


def params_history(work: Path, record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, params)`` of every iteration up to ``record``'s (from history.json and its
    params.yaml files), then ``"k+1?"``: the params iteration k's decision proposes."""
    import yaml

    k = int(record["iteration"])
    try:
        entries = (LoopHistory.peek(work) or {}).get("iterations") or []
    except (OSError, ValueError):
        entries = []
    paths = {int(e["iteration"]): e["params"] for e in entries if int(e["iteration"]) < k}
    paths[k] = record["params"]
    out = [(str(j), yaml.safe_load((work / paths[j]).read_text(encoding="utf-8")) or {}) for j in sorted(paths)]
    try:
        proposed = json.loads((work / record["decision"]["path"]).read_text(encoding="utf-8")).get("params")
    except (OSError, ValueError):
        proposed = None
    if isinstance(proposed, dict):
        out.append((f"{k + 1}?", proposed))
    return out


def moved_parameters(history: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Parameters the policy gave a distribution in any of ``history`` (sorted), led by
    ``uniform_share`` when that changed."""
    names = sorted({n for _, p in history for n in (p.get("distributions") or {})})
    shares = {float(p.get("uniform_share") or 0.0) for _, p in history}
    return (["uniform_share"] if len(shares) > 1 else []) + names


def numeric_summary(lo: float, hi: float, d: dict[str, Any] | None) -> tuple[float, float]:
    """``(centre, width)`` in the parameter's units of a distribution as params.yaml holds it
    (:meth:`generator.params.Distribution.centre_sd`; missing = uniform)."""
    return Distribution.model_validate(d or {"kind": "uniform"}).centre_sd(lo, hi)


def choice_weights(choices: list[str], d: dict[str, Any] | None) -> dict[str, float]:
    """Normalised weight of every choice (:meth:`generator.params.Distribution.choice_weights`)."""
    return Distribution.model_validate(d or {"kind": "uniform"}).choice_weights(choices)


def _panel(ax: Any, name: str, spec: Any, history: list[tuple[str, dict[str, Any]]]) -> None:
    x = list(range(len(history)))
    if name == "uniform_share":
        ax.plot(x, [float(p.get("uniform_share") or 0.0) for _, p in history], marker="o")
        ax.set_ylim(0, 1)
    elif spec is not None and spec.is_numeric:
        lo, hi = (float(v) for v in spec.range)
        cw = [numeric_summary(lo, hi, (p.get("distributions") or {}).get(name)) for _, p in history]
        ax.plot(x, [c for c, _ in cw], marker="o", label="centre")
        ax.fill_between(x, [c - w for c, w in cw], [c + w for c, w in cw], alpha=0.25, label="± width")
        ax.set_ylim(lo, hi)
        ax.legend(fontsize=7, loc="best")
    else:
        choices = [str(c) for c in (spec.choices if spec is not None else [])]
        weights = [choice_weights(choices, (p.get("distributions") or {}).get(name)) for _, p in history]
        for c in choices:
            ax.plot(x, [w[c] for w in weights], marker=".", label=c)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, ncol=max(1, len(choices) // 6), loc="best")
    ax.set_title(name, fontsize=9)
    ax.set_xticks(x, [label for label, _ in history], fontsize=7)


def evolution_image(history: list[tuple[str, dict[str, Any]]], scenario: str) -> Any:
    """One panel per moved parameter: centre ± width (numeric) or choice weights vs iteration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from generator.scenario import load_scenario

    names = moved_parameters(history)
    specs = load_scenario(scenario).parameters if scenario and names else {}
    fig = Figure(figsize=(6, 1.0 + 2.0 * max(1, len(names))), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(names)), 1, squeeze=False)[:, 0]
    if not names:
        axes[0].text(0.5, 0.5, "the policy has moved no parameter yet", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, name in zip(axes, names, strict=False):
        _panel(ax, name, specs.get(name), history)
    fig.supxlabel("iteration (k+1? = proposed next)", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")
