"""``synthloop validate DIR``: quality-control a shard (schema, masks vs boxes, files, sha256)."""

from __future__ import annotations

import argparse
from typing import Any

SHOWN = 20  # issues printed on stdout; the JSON report holds all of them


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check a shard's labels, files and checksums",
        description=(
            "Check a shard: COCO schema, unique ids and references, every box equal to its mask's "
            "tight extent, area = mask pixels, declared label types (amodal, visibility, pose, "
            "depth, semantic) on every record, images decoding at the declared size, sha256 of "
            "every file against the manifest, counts. Exit 0 when clean, 1 when errors are found."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="shard directory (the one holding manifest.json)")
    p.add_argument("--report", metavar="FILE.json",
                   help="also write the per-record report as JSON (atomically)")
    p.add_argument("--box-tolerance", metavar="PX", type=float, default=0.0,
                   help="allowed difference in pixels between a box and its mask's tight extent "
                        "(default 0: synthloop writers compute boxes exactly)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from generator import atomic
    from generator.qc import validate_shard

    atomic.prepare_output_file(args.report, "--report")
    report = validate_shard(args.dir, box_tolerance=args.box_tolerance, progress=True)
    for issue in report.issues[:SHOWN]:
        print(f"  {issue.record}: [{issue.check}] {issue.message}")
    if len(report.issues) > SHOWN:
        more = " (see --report)" if args.report else " (pass --report FILE.json for all)"
        print(f"  … and {len(report.issues) - SHOWN} more{more}")
    if args.report:
        atomic.write_json(args.report, report.to_dict())
    print(report.summary())
    return 0 if report.ok else 1
