"""Write a production window's outputs (atomically) and render them as Markdown.

``OUT/`` holds ``signals.json`` + ``signals.md`` always, and ``report.json`` + ``report.md``
(the merged failure report the policy reads) only when a real-val report was merged. The
directory appears complete or not at all (:func:`generator.atomic.atomic_dir`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from generator import atomic
from generator.fmt import number


def _drift_md(signals: dict[str, Any]) -> list[str]:
    lines = ["## Drift vs the reference", "", "| condition | source | status | PSI | KS p | median ref → prod |",
             "|---|---|---|---|---|---|"]
    for d in signals["drift"]:
        if d["status"] == "unavailable":
            lines.append(f"| {d['condition']} | – | unavailable | – | – | {d['reason']} |")
            continue
        lines.append(f"| {d['condition']} | {d['source']} | **{d['status']}** | {number(d['psi'])} | "
                     f"{number(d['ks_p'], 4)} | {number(d['reference_median'], 2)} → "
                     f"{number(d['production_median'], 2)} |")
    return lines


def _slices_md(signals: dict[str, Any]) -> list[str]:
    lines = ["", "## Slices (prevalence, confidence proxies, reviewed recall)", "",
             "| condition | range | prevalence | accepted | low-conf rate | entropy (bits) | top score "
             "| reviewed recall |",
             "|---|---|---|---|---|---|---|---|"]
    for c in signals["slices"]:
        if c["status"] != "ok":
            continue
        for e in c["bins"]:
            r = e.get("reviewed")
            rec = "–" if not r or not r["support"] else f"{number(r['recall'])} ({r['detected']}/{r['support']})"
            lo, hi = e["range"]
            lines.append(f"| {c['condition']} | [{lo:.4g}, {hi:.4g}] | {number(e['prevalence'])} | "
                         f"{e['n_predictions']} | {number(e['low_conf_rate'])} | {number(e['mean_entropy'])} | "
                         f"{number(e.get('mean_max_score'))} | {rec} |")
    return lines


def signals_markdown(signals: dict[str, Any], max_malformed: int = 20) -> str:
    """signals.md: counts, malformed lines, drift table and slice signals of one window."""
    w, c = signals["window"], signals["counts"]
    lines = ["# Production window", "", f"- window `{w['id']}` of log `{w['log']}`: status **{signals['status']}**",
             f"- lines read {c['total']}: new {c['new']}, duplicate {c['duplicate']}, malformed {c['malformed']}; "
             f"incomplete last lines left for later {c['partial_lines']}"]
    if signals["status"] != "ok":
        lines += [f"- no data: {signals['reason']} — no drift or failure signal is computed from it"]
    else:
        o = signals["overall"]
        rev = o["reviewed"]
        lines += [f"- frames {o['frames']} ({o['reviewed_frames']} reviewed), {w['first_timestamp']} → "
                  f"{w['last_timestamp']}, models {w['model_versions']}",
                  f"- accepted detections {o['n_predictions']}: low-confidence rate {number(o['low_conf_rate'])}, "
                  f"mean entropy {number(o['mean_entropy'])} bits, "
                  f"frames without detections {number(o['empty_rate'])}, "
                  f"mean top score {number(o['mean_max_score'])}",
                  f"- reviewed recall {number(rev['recall']) if rev else '–'}"
                  + (f" on {rev['support']} objects, precision {number(rev['precision'])}" if rev else ""),
                  f"- drifted conditions: {', '.join(signals['drifted']) or 'none'}", ""]
        lines += _drift_md(signals) + _slices_md(signals)
    if signals["malformed"]:
        lines += ["", f"## Malformed lines ({len(signals['malformed'])}; skipped)", ""]
        lines += [f"- `{m['file']}:{m['line']}` {m['field']}: {m['rule']} (got {m['value']})"
                  for m in signals["malformed"][:max_malformed]]
    lines += [f"- note: {n}" for n in signals.get("notes", [])]
    return "\n".join([*lines, ""])


def merged_markdown(report: dict[str, Any]) -> str:
    """report.md of a merged report: the evaluator's Markdown plus the production weighting."""
    from evaluator.report import render_markdown

    p = report["production"]
    lines = ["", "## Production", "", f"- window `{p['window']['id']}`, {p['frames']} frames; weighting: "
             f"{p['weighting']}; drifted: {', '.join(p['drifted']) or 'none'}", f"- rule: {p['rule']}", "",
             "| # | condition | side | source | real-val score | weight | score |", "|---|---|---|---|---|---|---|"]
    for w in report["weak_slices"][:10]:
        weight = (w.get("production") or {}).get("weight")
        lines.append(f"| {w['rank']} | {w['condition']} | {w['side']} | {w.get('source', 'real-val')} | "
                     f"{number(w.get('real_val_score'), 2)} | {number(weight, 2)} | {number(w['score'], 2)} |")
    return render_markdown(report) + "\n".join([*lines, ""])


def window_id_at(out: str | Path) -> str | None:
    """The window id of the signals already written at ``out`` (None when there are none)."""
    path = Path(out) / "signals.json"
    try:
        return str(json.loads(path.read_text())["window"]["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_outputs(out: str | Path, signals: dict[str, Any], merged: dict[str, Any] | None = None,
                  overwrite: bool = False) -> Path:
    """Write ``OUT/`` (see the module docstring) atomically and return its path."""
    with atomic.atomic_dir(out, overwrite) as tmp:
        (tmp / "signals.json").write_text(atomic.dumps_json(signals))
        (tmp / "signals.md").write_text(signals_markdown(signals))
        if merged is not None:
            (tmp / "report.json").write_text(atomic.dumps_json(merged))
            (tmp / "report.md").write_text(merged_markdown(merged))
    return Path(out)
