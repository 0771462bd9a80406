"""``synthloop evaluate``: measure a detector on a shard and write a failure report.

Runs the model over every image (a progress bar on a terminal, else one line on stderr), or
reads another detector's COCO results file (``--predictions``), computes COCO mAP, recall and
precision at an operating score threshold, slices by the scenario's conditions and ranks the
weak slices with the generator parameters that control them. Output directory (atomic):
report.json (schema: docs/failure-report.md), report.md, slices.csv, gallery.png.
"""

from __future__ import annotations

import argparse
from typing import Any

from generator.fmt import number


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="measure a detector on a shard and find its failure modes",
        description=(
            "Run MODEL over the shard DATA, compute COCO mAP and recall/precision at an "
            "operating threshold, slice them by the scenario's conditions (brightness, object "
            "size, …), rank the slices whose recall is significantly below the overall recall, "
            "map each to the generator parameters that control it, and write REPORT_DIR with "
            "report.json, report.md, slices.csv and gallery.png. Instead of --model, "
            "--predictions evaluates any detector from its COCO results file on DATA (same "
            "report, computed by the same code). The real-test split is refused unless "
            "--final-report is given."),
        epilog=(
            "example (your own detector): synthloop evaluate --predictions dets.json --data "
            "runs/loop/real/real-val --out runs/report-mine   where dets.json is "
            '[{"image_id": 1, "category_id": 3, "bbox": [x, y, w, h], "score": 0.9}, ...] with '
            "the image and category ids of DATA/annotations.json (docs/failure-report.md)"),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", default=None,
                        help="detector checkpoint written by `synthloop train`")
    source.add_argument("--predictions", default=None, metavar="DETS.json",
                        help="another detector's detections on DATA as a COCO results file: a "
                             'JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], '
                             '"score"} with the shard\'s image and category ids (file_name may '
                             "replace image_id); predict with a low score threshold (e.g. 0.05) "
                             "so AP sees the whole curve")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="shard directory with ground truth (e.g. real-val)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR",
                   help="report directory to create (must be empty or absent)")
    p.add_argument("--scenario", default=None, metavar="S",
                   help="scenario name or YAML whose conditions define the slices "
                        "(default: the shard's, else the model's)")
    p.add_argument("--score-threshold", type=float, default=0.3, metavar="T",
                   help="operating score threshold for recall, precision and the gallery "
                        "(default 0.3)")
    p.add_argument("--iou", type=float, default=0.5, metavar="IOU",
                   help="IoU a prediction needs to match a true object (default 0.5)")
    p.add_argument("--min-support", type=int, default=20, metavar="N",
                   help="objects a slice needs before its AP and bootstrap interval are "
                        "computed (default 20)")
    p.add_argument("--resamples", type=int, default=200, metavar="N",
                   help="bootstrap resamples over images for AP intervals; 0 turns them off "
                        "(default 200)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the bootstrap (default 0)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N",
                   help="images per predict() call, with --model (default 16)")
    p.add_argument("--gallery-size", type=int, default=12, metavar="N",
                   help="worst images drawn in gallery.png (default 12)")
    p.add_argument("--final-report", action="store_true",
                   help="allow the held-out real-test split (only for the final report)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evaluator.evaluate import EvalOptions
    from evaluator.report import summary_lines
    from evaluator.run import evaluate_model, evaluate_predictions
    from generator.errors import field_error
    from generator.progress import Stage

    options = EvalOptions(iou=args.iou, score_threshold=args.score_threshold,
                          min_support=args.min_support, resamples=args.resamples, seed=args.seed,
                          gallery_size=args.gallery_size).validate()
    if args.batch_size < 1:
        raise field_error("--batch-size", "must be an integer >= 1", args.batch_size)
    # a predict bar on a terminal, else one line when done (generator/progress.py)
    with Stage("evaluate", None, show=not args.no_progress) as stage:
        if args.predictions is not None:
            out, ev = evaluate_predictions(args.predictions, args.data, args.out, options,
                                           scenario=args.scenario, final_report=args.final_report,
                                           overwrite=args.overwrite)
        else:
            out, ev = evaluate_model(args.model, args.data, args.out, options,
                                     scenario=args.scenario, final_report=args.final_report,
                                     batch_size=args.batch_size, overwrite=args.overwrite,
                                     progress=not args.no_progress)
        n = int((ev.report["data"].get("counts") or {}).get("images") or 0)
        stage.done(f"{n} images of {args.data}", count=n,
                   extra=f"mAP@0.5 {number(ev.report['overall'].get('map50'))}")
    print(f"evaluated {args.model or args.predictions} on {args.data} -> {out}")
    print("\n".join(summary_lines(ev.report)))
    return 0
