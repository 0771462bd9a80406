"""``synthloop preview DIR -o grid.png``: a picture of a shard's labels (boxes, masks, depth)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "preview",
        help="draw a grid of shard images with boxes, class labels, masks and depth",
        description=(
            "Write a PNG grid of n images of a shard (chosen by --seed), each with its "
            "translucent instance masks, boxes and class names drawn, and its colour-mapped "
            "depth map beside it when the shard has depth."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="shard directory (the one holding manifest.json)")
    p.add_argument("-o", "--out", metavar="GRID.png", required=True,
                   help="PNG file to write (atomically)")
    p.add_argument("-n", type=int, default=16, metavar="N",
                   help="number of images (default 16; all when the shard has fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed that picks the images (default 0)")
    p.add_argument("--tile", type=int, default=160, metavar="PX",
                   help="size of each image panel in pixels (default 160)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from generator.atomic import prepare_output_file
    from generator.preview import write_preview

    prepare_output_file(args.out, "--out")
    grid = write_preview(args.dir, args.out, n=args.n, seed=args.seed, tile=args.tile)
    print(f"preview {args.dir}: wrote {args.out} ({grid.width}x{grid.height} px)")
    return 0
