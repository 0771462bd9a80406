"""``synthloop calibrate``: fit generation params so renders measure like a real set.

Renders small sets of images (no training) and moves the distributions of the parameters the
scenario maps to measured conditions until the rendered conditions match the real set's
(1-D Wasserstein per condition, in units of the real spread). Works on a labelled shard
(image and object conditions) or an unlabeled directory of frames (image conditions only);
the held-out real-test split is refused. See docs/calibration.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="fit generation params so renders measure like a real set (no training)",
        description=(
            "Fit the generation distributions to a real set: render small image sets, measure the "
            "conditions the evaluator slices on (brightness, contrast, sharpness, noise, clutter; with labels "
            "also object size, object contrast, stroke width, slant, count, visibility) and search with "
            "Optuna for the params whose renders match the real values (mean 1-D Wasserstein distance, "
            "normalised by the real spread). --real is a shard (real-val or real-train; real-test is "
            "refused) or a directory of frames. Writes a plain params file; --report adds "
            "calibration.json/.md/.png. Default: ~1-3 min at 128x128 on 2 CPU cores."))
    p.add_argument("--scenario", required=True, metavar="S", help="scenario name or YAML path")
    p.add_argument("--real", required=True, metavar="DIR",
                   help="real shard (e.g. data/real/real-val) or a directory of frames (unlabeled)")
    p.add_argument("--params", default=None, metavar="START",
                   help="plain params file to start from (default: uniform over every range)")
    p.add_argument("--out", required=True, metavar="PARAMS", help="where to write the fitted params (YAML)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write calibration.json, calibration.md and calibration.png here (replaced)")
    p.add_argument("--failures", default=None, metavar="REPORT_DIR",
                   help="weight --real toward a model's misses: the report directory `synthloop evaluate` "
                        "wrote for that model on the same shard (its objects.parquet); each missed object, "
                        "and each image holding one, counts --failure-weight times (what a `refit` loop "
                        "does every round)")
    p.add_argument("--failure-weight", type=int, default=2, metavar="W",
                   help="with --failures: how many times a miss counts (default 2)")
    p.add_argument("--trials", type=int, default=30, metavar="N",
                   help="renders of the trial images, the start included (default 30)")
    p.add_argument("--images-per-trial", type=int, default=48, metavar="M", help="images per trial (default 48)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the trial images, Optuna samplers and verification renders (default 0)")
    p.add_argument("--uniform-share", type=float, default=0.1, metavar="U",
                   help="share of images drawn uniformly over every range, kept in the result (default 0.1)")
    p.add_argument("--conditions", default=None, metavar="C1,C2",
                   help="compare only these conditions (default: every condition a parameter controls that the "
                        "real set measures)")
    p.add_argument("--parameters", default=None, metavar="P1,P2",
                   help="fit only these parameters (default: those that visibly move a compared condition)")
    p.add_argument("--max-real-images", type=int, default=2000, metavar="N",
                   help="use at most N real images (a seeded subsample; default 2000)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("W", "H"),
                   help="render size (default: the scenario's image size)")
    p.add_argument("--executor", default=None, choices=["process", "dask"],
                   help="render each trial's images in chunks on: process (a pool of --workers spawned processes "
                        "here) | dask (a local Dask cluster of --workers processes, or the scheduler at "
                        "--dask-address); the result is the same as without (default: this process)")
    p.add_argument("--dask-address", default=None, metavar="ADDR",
                   help="with --executor dask: an existing scheduler, e.g. tcp://HOST:8786 (workers started with "
                        "`dask worker ADDR --nthreads 1`; nothing is written on them)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes of --executor process, or of the local Dask cluster (default: CPU count)")
    p.add_argument("--backend", default="pyrender", choices=["pyrender", "fake"], help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def run(args: argparse.Namespace) -> int:
    import optuna

    from flows.orchestration.executor import check_command, command_executor
    from generator import atomic
    from generator.params import load_params
    from generator.scenario import load_scenario
    from policy.calibrate import CalibrationOptions, calibrate
    from policy.calibration_report import to_markdown, write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_command(args.executor, args.dask_address, args.workers)  # before anything is written
    out = atomic.prepare_output_file(args.out, "--out")
    assert out is not None  # --out is required
    scenario = load_scenario(args.scenario)
    start = load_params(args.params, scenario) if args.params else None
    width, height = args.size if args.size else (None, None)
    options = CalibrationOptions(
        trials=args.trials, images_per_trial=args.images_per_trial, seed=args.seed,
        uniform_share=args.uniform_share, conditions=_names(args.conditions), parameters=_names(args.parameters),
        max_real_images=args.max_real_images, width=width, height=height, backend=args.backend).check(scenario)
    real = args.real
    if args.failures is not None:
        from policy.failure_set import check_weight, load_failure_weighted

        weight = check_weight(args.failure_weight, "--failure-weight")
        real = load_failure_weighted(args.real, args.failures, weight, options.max_real_images, options.seed)
    if args.report is not None:
        atomic.prepare_output_dir(args.report, overwrite=True)
    with command_executor(args.executor, args.dask_address, args.workers) as (executor, workers):
        result = calibrate(scenario, real, start, options,
                           progress=lambda line: print(line, file=sys.stderr, flush=True), executor=executor,
                           chunks=workers)
    if args.report is not None:
        write_report(result, args.report)
    result.params.save(out)
    print(to_markdown(result.report))
    print(f"wrote {out}" + (f" and {Path(args.report) / 'calibration.json'} (.md, .png)" if args.report else ""))
    return 0
