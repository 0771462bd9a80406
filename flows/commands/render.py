"""``synthloop render``: render a shard from a scenario and a generation distribution."""

from __future__ import annotations

import argparse
import re

from generator.errors import ConfigError


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--size: must look like 128 or 160x120, but got {text!r}")
    w = int(m.group(1))
    return w, int(m.group(2) or w)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="render a synthetic shard (COCO + depth + conditions + manifest)",
        description="Render N images of a scenario into a shard directory, atomically. "
        "Same scenario, params, seed, n and size give the same fingerprint and the same "
        "geometry (boxes, masks, depth, pose); pixel-measured fields may differ in their last "
        "decimals on llvmpipe (docs/shard-format.md, Reproducibility).",
    )
    p.add_argument(
        "--scenario", default="digits", help="built-in scenario name or path to a scenario YAML (default: digits)"
    )
    p.add_argument(
        "--params", help="generation distribution YAML/JSON (default: every parameter uniform over its range)"
    )
    p.add_argument("-n", type=int, default=64, help="number of images (default: 64)")
    p.add_argument(
        "--seed", type=int, default=0, help="shard seed; image i uses SeedSequence(seed).spawn(n)[i] (default: 0)"
    )
    p.add_argument("--out", required=True, help="output shard directory (must be empty or absent)")
    p.add_argument("--size", help="image size WxH or W (default: the scenario's)")
    p.add_argument("--workers", type=int, default=1, help="render processes, each with its own GL context (default: 1)")
    p.add_argument(
        "--backend",
        default="pyrender",
        choices=["pyrender", "fake"],
        help="pyrender (EGL: NVIDIA or Mesa llvmpipe) or fake (numpy, for tests)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from generator.atomic import prepare_output_dir
    from generator.params import load_params, uniform_params
    from generator.pipeline import RenderJob, check_job, render_shard
    from generator.progress import Stage
    from generator.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    params = load_params(args.params, scenario) if args.params else uniform_params(scenario)
    w, h = parse_size(args.size) if args.size else (scenario.spec.image.width, scenario.spec.image.height)
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, but got {args.workers}")
    job = RenderJob(scenario, params, n=args.n, seed=args.seed, width=w, height=h, backend=args.backend)
    check_job(job)
    prepare_output_dir(args.out, args.overwrite)  # refuse a non-empty --out before any work
    size = f"{w}x{h}, {args.workers} worker(s)"
    # a bar on a terminal, else one line when done (generator/progress.py, SYNTHLOOP_PROGRESS)
    with Stage(f"render {scenario.name}", total=args.n, what=f"{args.n} images ({size})") as stage:
        result = render_shard(job, args.out, workers=args.workers, overwrite=args.overwrite,
                              progress=lambda _entry: stage.update(1))
    print(f"shard        {result.path}")
    print(f"images       {result.images}  ({result.annotations} objects)")
    print(f"images/s     {result.images_per_s:.1f}  ({result.seconds:.1f} s, {args.workers} worker(s))")
    print(f"fingerprint  {result.fingerprint}")
    return 0
