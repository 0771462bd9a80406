"""``synthloop export DIR --format yolo``: write a shard as a training dataset of another tool."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a shard for other training tools (Ultralytics YOLO)",
        description=(
            "Export a shard as an Ultralytics-style dataset: images/<split>/, labels/<split>/*.txt "
            "(boxes 'class cx cy w h' or mask polygons, normalised) and data.yaml. The whole "
            "shard is train and val unless --val-fraction splits it by image id. Written "
            "atomically; a non-empty --out is refused unless --overwrite."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="shard directory (the one holding manifest.json)")
    p.add_argument("--format", choices=["yolo"], required=True, help="output format")
    p.add_argument("--out", metavar="OUT", help="output directory (default: <DIR>-yolo beside DIR)")
    p.add_argument("--task", choices=["detect", "segment"], default="detect",
                   help="detect: boxes; segment: polygons of the largest mask contour "
                        "(default detect)")
    p.add_argument("--val-fraction", metavar="F", type=float, default=None,
                   help="put this share of images (0 < F < 1, chosen by image id) in val; "
                        "default: the whole shard is both train and val")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from generator.export_yolo import export_yolo

    s = export_yolo(args.dir, out=args.out, task=args.task, val_fraction=args.val_fraction,
                    overwrite=args.overwrite, progress=True)
    print(f"export {args.dir}: wrote {s.out} (yolo {s.task}: {s.n_train} train, {s.n_val} val "
          f"images, {s.n_labels} labels" + (f", {s.skipped} without polygon" if s.skipped else "")
          + ")")
    return 0
