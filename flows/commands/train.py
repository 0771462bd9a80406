"""``synthloop train``: train a detector on shards and write a checkpoint directory."""

from __future__ import annotations

import argparse
import json
from typing import Any

DESCRIPTION = """\
Train an object detector on one or more shards and write a checkpoint directory (model.pt +
model.json) atomically. Strategies: synthetic-only, real-only, mixed (--real-ratio of every
batch from real/imported shards), pretrain-finetune (synthetic first, then --finetune-steps on
real shards). Shards with split real-test are refused: they are held out for final reporting.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from trainer.config import DEFAULT_EPOCHS, STRATEGIES

    p = sub.add_parser("train", help="train a detector on shards", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, metavar="DIR[:WEIGHT]",
                   help="a shard directory, optionally with a sampling weight (default 1; 2 shows "
                        "each of its images twice as often); repeat for several shards")
    p.add_argument("--strategy", default="synthetic-only", metavar="S",
                   help=f"one of {', '.join(STRATEGIES)} (default synthetic-only)")
    p.add_argument("--out", required=True, metavar="MODEL", help="checkpoint directory to write")
    p.add_argument("--epochs", type=float, help=f"passes over the data (default {DEFAULT_EPOCHS:g})")
    p.add_argument("--steps", type=int, help="optimisation steps instead of --epochs")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, sampling, augmentation")
    p.add_argument("--device", default="auto",
                   help="auto = CUDA when available (default), else CPU")
    p.add_argument("--init", metavar="MODEL", help="continue from this checkpoint (same classes)")
    p.add_argument("--real-ratio", type=float, metavar="R",
                   help="mixed: share of every batch drawn from real shards (default 0.3)")
    p.add_argument("--finetune-steps", type=int, metavar="N",
                   help="pretrain-finetune: steps on the real shards after synthetic pretraining")
    p.add_argument("--finetune-epochs", type=float, metavar="E",
                   help="pretrain-finetune: epochs over the real shards instead of --finetune-steps")
    p.add_argument("--finetune-lr", type=float, help="pretrain-finetune: learning rate (default lr/5)")
    p.add_argument("--model", metavar="NAME",
                   help="registered model or package.module:NAME (default centernet)")
    p.add_argument("--input-size", type=int, metavar="PX",
                   help="square model input; images are letterboxed to it (default 128)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON",
                   help="a field of the model config, e.g. width=48 or blocks=[1,2,2]; repeatable")
    p.add_argument("--no-augment", action="store_true", help="turn off augmentation")
    p.add_argument("--num-threads", type=int, help="CPU threads (default: all available)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _model_options(items: list[str]) -> dict[str, Any]:
    from generator.errors import ConfigError

    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-option: must be KEY=VALUE, but got {item!r}; e.g. width=48")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    # OpenMP threads that sleep instead of spinning: on a shared 2-core machine the default
    # busy-wait made training ~8x slower whenever another process was running (measured).
    # Effective only if torch is not imported yet; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from trainer.api import train_with_config
    from trainer.config import TrainConfig
    from trainer.data import parse_data_arg

    cfg = TrainConfig(strategy=args.strategy, epochs=args.epochs, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                      real_ratio=args.real_ratio, finetune_steps=args.finetune_steps,
                      finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                      augment=not args.no_augment, num_threads=args.num_threads).validate()
    sources = [parse_data_arg(d) for d in args.data]
    result = train_with_config(sources, Path(args.out), cfg, model=args.model,
                               input_size=args.input_size,
                               model_options=_model_options(args.model_option) or None,
                               init=args.init, overwrite=args.overwrite, progress=not args.quiet)
    phases = ", ".join(f"{k} {v}" for k, v in result.phase_steps.items())
    print(f"trained {result.model_json['model']} ({args.strategy}: {phases} steps) on "
          f"{result.device}: {result.steps} steps, {result.images_seen} images seen, "
          f"{result.images_per_s:.1f} images/s, {result.seconds:.1f} s, "
          f"final loss {result.final_loss:.4f}")
    print(f"checkpoint: {result.path}")
    return 0
