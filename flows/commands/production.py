"""``synthloop production ACTION``: production data as a failure signal.

- ``production ingest``: read what is new in a production log (watermark: each record counted
  once across runs), measure drift against the training shards and failure proxies per slice,
  write ``signals.json`` / ``signals.md`` and, with ``--real-val-report``, the merged
  ``report.json`` / ``report.md`` the policy reads. The watermark is committed only after the
  outputs are written; rerunning after a crash rewrites the same window (same id) and counts
  nothing twice. See docs/production.md.

Libraries are imported inside ``_run_*`` so ``synthloop --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from flows.commands import Action, add_group

DESCRIPTION = "Ingest a deployed model's production log: drift, failure proxies, merged failure report."


def _add_ingest(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ingest", help="ingest new production-log records and write drift and failure signals",
        description=(
            "Read the *.jsonl records under LOG that earlier runs have not consumed (malformed lines are "
            "skipped and reported with their line numbers), estimate each frame's conditions from its "
            "pixels and predicted boxes, test them for drift (PSI and KS) against the reference shards, "
            "compute low-confidence rate and score entropy per slice and real errors where labels were "
            "reviewed, and write REPORT_DIR atomically. With --real-val-report, also write the merged "
            "failure report (weak slices re-weighted by production prevalence) for `synthloop policy "
            "next`. A window without new records gives an explicit 'no data' result and no merged report."),
    )
    p.add_argument("--log", required=True, metavar="DIR", help="production log directory (*.jsonl, any depth)")
    p.add_argument("--state", default=None, metavar="FILE",
                   help="watermark state file (default LOG/ingest-state.json)")
    p.add_argument("--frames-root", default=None, metavar="DIR",
                   help="every record's image must resolve (symlinks followed) inside DIR and be a decodable "
                        "image; others are malformed (default: the parent of LOG, where log/ and frames/ sit "
                        "side by side)")
    p.add_argument("--reference", required=True, nargs="+", metavar="SHARD",
                   help="shards the model was trained on: the reference distribution for drift")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="output directory to create")
    p.add_argument("--real-val-report", default=None, metavar="REPORT",
                   help="real-val report.json (or its directory) to merge the production signals into")
    p.add_argument("--scenario", default="digits", metavar="S",
                   help="scenario name or YAML whose conditions define the slices (default digits)")
    p.add_argument("--score-threshold", type=float, default=None, metavar="T",
                   help="operating score threshold (default: the real-val report's, else 0.3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return p


def _summary(signals: dict[str, Any], merged: dict[str, Any] | None, out: str) -> list[str]:
    c = signals["counts"]
    lines = [f"window {signals['window']['id']}: lines {c['total']} (new {c['new']}, duplicate {c['duplicate']}, "
             f"malformed {c['malformed']}); incomplete last lines left for later {c['partial_lines']}"]
    lines += [f"  malformed {m['file']}:{m['line']} {m['field']}: {m['rule']}" for m in signals["malformed"][:5]]
    if signals["status"] != "ok":
        return [*lines, f"no data: {signals['reason']}; no drift or failure signal, no merged report",
                f"wrote {out}/signals.json"]
    lines.append(f"drifted conditions: {', '.join(signals['drifted']) or 'none'}")
    if merged is not None:
        for w in merged["weak_slices"][:3]:
            weight = (w.get("production") or {}).get("weight")
            lines.append(f"  {w['rank']}. {w['condition']} {w['side']} ({w['source']}): score {w['score']:.2f}"
                         + (f" (weight {weight:.2f})" if weight is not None else ""))
    files = "signals.json, signals.md" + (", report.json, report.md" if merged is not None else "")
    return [*lines, f"wrote {out}: {files}"]


def _run_ingest(args: argparse.Namespace) -> int:
    from evaluator.production import commit, read_window
    from evaluator.production.merge import load_val_report, measure_window
    from evaluator.production.report import window_id_at, write_outputs
    from generator.atomic import prepare_output_dir
    from generator.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    val = load_val_report(args.real_val_report) if args.real_val_report is not None else None
    result = read_window(args.log, args.state, classes=scenario.classes, frames_root=args.frames_root)
    if window_id_at(args.out) == result.window_id:  # a run that crashed before its commit
        commit(result)
        print(f"window {result.window_id} was already written to {args.out}; watermark committed")
        return 0
    prepare_output_dir(args.out, args.overwrite)
    signals, merged = measure_window(result, scenario, args.reference, val, args.score_threshold)
    write_outputs(args.out, signals, merged, args.overwrite)
    commit(result)
    print("\n".join(_summary(signals, merged, args.out)))
    return 0


ACTIONS: dict[str, Action] = {
    "ingest": (_add_ingest, _run_ingest),
}


def add_parser(sub: Any) -> None:
    """Register ``production`` and its actions on the top-level subparsers."""
    add_group(sub, "production", DESCRIPTION, DESCRIPTION, ACTIONS)
