"""Write a failure report directory (atomically): report.json, report.md, slices.csv, gallery.png,
objects.parquet.

The JSON schema is documented in docs/failure-report.md; report.md is the same content for
people: overall metrics, per-class AP, the top weak slices with their intervals and the
generator parameters to move, and the conditions that could not be sliced. ``objects.parquet``
holds one row per true object and whether the model found it (:data:`OBJECT_COLUMNS`): what a
closed loop reads to know *which* real objects it misses (:mod:`policy.failure_set`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from evaluator.evaluate import Evaluation
from evaluator.gallery import render_gallery
from generator import atomic
from generator.fmt import number
from generator.shard import Shard

SLICE_COLUMNS = ["condition", "column", "level", "bin", "n_bins", "range_lo", "range_hi", "side",
                 "support_objects", "support_images", "detected", "recall", "recall_lo",
                 "recall_hi", "tp", "fp", "precision", "ap", "ap_lo", "ap_hi", "gap",
                 "significant", "score"]
# objects.parquet: one row per true object; detected = matched at IoU >= iou by a prediction
# scoring >= score_threshold (the report's operating point); score/iou of that match (NaN: none)
OBJECT_COLUMNS = ["ann_id", "image_id", "category_id", "detected", "score", "iou"]
OBJECTS_FILE = "objects.parquet"


def _ci(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def slices_frame(slices: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per slice, intervals and ranges split into ``_lo``/``_hi`` columns."""
    rows = []
    for s in slices:
        row = {k: v for k, v in s.items() if k not in ("range", "recall_ci", "ap_ci")}
        row["range_lo"], row["range_hi"] = s["range"]
        row["recall_lo"], row["recall_hi"] = s["recall_ci"] or (None, None)
        row["ap_lo"], row["ap_hi"] = s["ap_ci"] or (None, None)
        rows.append(row)
    return pd.DataFrame(rows, columns=SLICE_COLUMNS)


def _overall_md(r: dict[str, Any]) -> list[str]:
    o, s = r["overall"], r["settings"]
    lines = ["## Overall", "", "| metric | value |", "|---|---|",
             f"| mAP@[.5:.95] | {number(o['map'])} |", f"| mAP@0.5 | {number(o['map50'])} |",
             f"| mAP@0.75 | {number(o['map75'])} |",
             f"| recall @ score ≥ {s['score_threshold']}, IoU ≥ {s['iou']} | {number(o['recall'])} "
             f"{_ci(o['recall_ci'])} |",
             f"| precision @ score ≥ {s['score_threshold']} | {number(o['precision'])} |",
             f"| AP@{s['iou']} (bootstrap 95%) | {number(o['ap'])} {_ci(o['ap_ci'])} |"]
    if o["segm"]:
        g = o["segm"]
        lines.append(f"| mask mAP@[.5:.95] / @0.5 | {number(g['map'])} / {number(g['map50'])} |")
    lines += ["", "| class | objects | AP@0.5 | recall (95% CI) | precision |",
              "|---|---|---|---|---|"]
    for c in r["per_class"]:
        lines.append(f"| {c['class']} | {c['n_objects']} | {number(c['ap50'])} | {number(c['recall'])} "
                     f"{_ci(c['recall_ci'])} | {number(c['precision'])} |")
    return lines


def _weak_md(r: dict[str, Any], top: int) -> list[str]:
    weak = r["weak_slices"]
    lines = ["", f"## Weak slices ({len(weak)} significant; top {min(top, len(weak))})", ""]
    if not weak:
        return [*lines, "No slice's recall is significantly below the overall recall."]
    lines += ["| # | condition | range | side | objects | recall (95% CI) | gap | score "
              "| parameters to move |",
              "|---|---|---|---|---|---|---|---|---|"]
    for w in weak[:top]:
        lo, hi = w["range"]
        params = ", ".join(f"`{p}`" for p in w["parameters"]) or "(none declared)"
        lines.append(f"| {w['rank']} | {w['condition']} (`{w['column']}`) | [{lo:.4g}, {hi:.4g}] | "
                     f"{w['side']} | {w['support']} | {number(w['recall'])} {_ci(w['ci'])} | "
                     f"{number(w['gap'])} | {number(w['score'], 2)} | {params} |")
    return lines


def render_markdown(report: dict[str, Any], top: int = 10) -> str:
    """report.md: a readable summary of a report dict."""
    d, m = report["data"], report["model"]
    if "predictions" in m:  # `evaluate --predictions`: another detector's COCO results file
        source = (f"- predictions: `{m['predictions']}` ({m.get('detections', '?')} detections, "
                  f"sha256 {str(m.get('sha256', '?'))[:12]})")
    else:
        source = (f"- model: `{m.get('path', '?')}` (scenario {m.get('scenario', '?')}, "
                  f"sha256 {str(m.get('sha256', '?'))[:12]})")
    lines = ["# Failure report", "", source,
             f"- data: `{d['path']}` ({d['kind']}, split {d['split']}, fingerprint "
             f"{str(d['fingerprint'])[:12]}), {report['counts']['images']} images, "
             f"{report['counts']['objects']} objects",
             f"- scenario: {report['scenario']['name']} v{report['scenario']['version']}", ""]
    lines += _overall_md(report) + _weak_md(report, top)
    skipped = [c for c in report["conditions"] if c["status"] != "ok"]
    if skipped:
        lines += ["", "## Conditions not sliced", ""]
        lines += [f"- {c['name']}: {c['reason']}" for c in skipped]
    lines += ["", "Weak = Wilson 95% upper bound of the slice's recall below the overall recall; "
              "score = gap × √objects. Gallery: `gallery.png` (green = truth, thicker = missed; "
              "red = prediction with score). All slices: `slices.csv`.", ""]
    return "\n".join(lines)


def write_report(evaluation: Evaluation, shard: Shard, out: str | Path,
                 overwrite: bool = False) -> Path:
    """Write the report directory ``out`` atomically and return its path."""
    r = evaluation.report
    with atomic.atomic_dir(out, overwrite) as tmp:
        (tmp / "report.json").write_text(atomic.dumps_json(r))
        (tmp / "report.md").write_text(render_markdown(r))
        buf = io.StringIO()
        slices_frame(r["slices"]).to_csv(buf, index=False)
        (tmp / "slices.csv").write_text(buf.getvalue())
        evaluation.matches.gt[OBJECT_COLUMNS].to_parquet(tmp / OBJECTS_FILE, index=False)
        sheet = render_gallery(r["gallery"]["images"], shard.coco, evaluation.tables.objects,
                               evaluation.matches.gt, evaluation.matches.preds, shard.load_image)
        sheet.save(tmp / "gallery.png", format="PNG")
    return Path(out)


def summary_lines(report: dict[str, Any], top: int = 3) -> list[str]:
    """The CLI's closing summary: headline metrics and the top weak slices."""
    o, s, c = report["overall"], report["settings"], report["counts"]
    lines = [f"images {c['images']}, objects {c['objects']}, predictions {c['predictions']}",
             f"mAP@0.5 {number(o['map50'])}  mAP@[.5:.95] {number(o['map'])}  recall {number(o['recall'])} "
             f"{_ci(o['recall_ci'])} and precision {number(o['precision'])} at score >= "
             f"{s['score_threshold']}, IoU >= {s['iou']}"]
    weak = report["weak_slices"]
    lines.append(f"weak slices: {len(weak)} significant" + (", top:" if weak else ""))
    for w in weak[:top]:
        lo, hi = w["range"]
        params = ", ".join(w["parameters"]) or "no parameter declares it"
        lines.append(f"  {w['rank']}. {w['condition']} ({w['column']}) in [{lo:.4g}, {hi:.4g}] "
                     f"({w['side']}): recall {number(w['recall'])} {_ci(w['ci'])} on {w['support']} "
                     f"objects, gap {number(w['gap'])} -> {params}")
    return lines
