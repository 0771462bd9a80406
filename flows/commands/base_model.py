"""``synthloop base-model``: re-run the recipe of a scenario's committed base model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """\
Make the base model of a scenario (the warm start of `make demo` and the benchmarks): render
--images images uniform over every parameter range, train the default detector synthetic-only
for --steps, export the weights without optimizer moments, score it on real-val, and write
model.pt, model.json and recipe.json (data fingerprint, weights sha256, real-val metrics) to
--out atomically. The defaults are the recipe of the committed trainer/base_models/digits.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from flows.loop.base_model import BASE_MODELS, BaseRecipe

    d = BaseRecipe()
    p = sub.add_parser("base-model", help="make a scenario's base model (the loop's warm start)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=d.scenario, help=f"scenario (default {d.scenario})")
    p.add_argument("--images", type=int, default=d.images, help=f"uniform images (default {d.images})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"render and training seed (default {d.seed})")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"output directory (default {BASE_MODELS}/<scenario>)")
    p.add_argument("--work", default="runs/base-model", metavar="DIR",
                   help="scratch: the rendered shard, the full checkpoint, the real set (default runs/base-model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.loop.base_model import BASE_MODELS, BaseRecipe, build_base_model
    from generator.progress import bars_on

    recipe = BaseRecipe(scenario=args.scenario, images=args.images, seed=args.seed, steps=args.steps,
                        batch_size=args.batch_size, lr=args.lr)
    out = Path(args.out) if args.out else BASE_MODELS / args.scenario
    record = build_base_model(recipe, out, Path(args.work), overwrite=args.overwrite, progress=bars_on())
    print(json.dumps(record, indent=1))
    print(f"base-model: wrote {out}")
    return 0
