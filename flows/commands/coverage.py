"""``synthloop coverage DIR``: were values sampled as asked, and does each parameter matter?"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "coverage",
        help="compare sampled values with the requested distributions; find ignored parameters",
        description=(
            "Coverage report of a shard: for every scenario parameter, the realised histogram "
            "against the requested distribution (TVD, chi-square); whether each parameter "
            "measurably moves the conditions it declares (Spearman / Kruskal-Wallis on "
            "conditions.parquet: catches a scene builder that ignores a parameter); class "
            "balance; histograms of other recorded conditions. Real or imported shards (no "
            "scenario) get class balance and condition histograms only."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="shard directory (the one holding manifest.json)")
    p.add_argument("--out", metavar="REPORT.json",
                   help="write the full report as JSON (atomically)")
    p.add_argument("--markdown", metavar="FILE.md", help="also write a Markdown rendering")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when anything is flagged (default: report only, exit 0)")
    p.add_argument("--max-class-ratio", metavar="R", type=float, default=10.0,
                   help="flag class imbalance when max/min annotations per class exceeds R "
                        "(default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from generator import atomic, coverage
    from generator.errors import ConfigError

    if not args.max_class_ratio >= 1:
        raise ConfigError(f"--max-class-ratio: must be >= 1, but got {args.max_class_ratio}")
    atomic.prepare_output_file(args.out, "--out")
    atomic.prepare_output_file(args.markdown, "--markdown")
    report = coverage.coverage_report(args.dir, max_class_ratio=args.max_class_ratio)
    for flag in report["flags"]:
        print(f"  flag: {flag}")
    if args.out:
        atomic.write_json(args.out, report)
    if args.markdown:
        atomic.write_text(args.markdown, coverage.to_markdown(report))
    print(coverage.summary(report))
    return 1 if args.strict and report["flags"] else 0
