"""``synthloop demo``: the main job on the embedded defaults, end to end on a CPU.

Renders a digits shard (uniform parameters — classic domain randomization), validates it
and draws a preview, builds the built-in real set, trains the default detector on the
synthetic shard, and writes a failure report on real-val: which conditions of *real* data
the synthetic-only model misses, mapped back to generator parameters. A second run reuses
the shard and the real set (same fingerprints) and redoes training and evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="render → validate → preview → real set → train → failure report",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--out", default="runs/demo", help="working directory (default: runs/demo)")
    p.add_argument("-n", type=int, default=1000, help="synthetic images to render (default: 1000)")
    p.add_argument("--epochs", type=float, default=10.0, help="training epochs over the shard (default: 10)")
    p.add_argument("--workers", type=int, default=2, help="render processes (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for rendering, the real set and training (default: 0)")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.1,
        help="operating threshold for recall and slices; the demo's short training gives low scores (default: 0.1)",
    )
    p.set_defaults(func=run)


def _step(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def _done(t0: float, what: str) -> None:
    print(f"   {what} ({time.perf_counter() - t0:.0f} s)", flush=True)


def _synthetic(out: Path, args: argparse.Namespace) -> Path:
    from generator.params import uniform_params
    from generator.pipeline import RenderJob, render_shard
    from generator.preview import write_preview
    from generator.qc import validate_shard
    from generator.scenario import load_scenario

    t0 = _step(f"render {args.n} digits images (uniform domain randomization, {args.workers} workers)")
    s = load_scenario("digits")
    job = RenderJob(s, uniform_params(s), n=args.n, seed=args.seed, width=128, height=128)
    r = render_shard(job, out / "synthetic", workers=args.workers, reuse=True)
    _done(
        t0,
        f"{r.images} images, {r.annotations} objects, fingerprint {r.fingerprint}"
        + (" (reused)" if r.reused else f", {r.images_per_s:.1f} img/s"),
    )
    t0 = _step("validate the shard")
    qc = validate_shard(r.path)
    _done(t0, qc.summary())
    if not qc.ok:
        from generator.errors import ShardError

        raise ShardError(f"the demo shard failed validation: {qc.issues[0].message}")
    write_preview(r.path, out / "preview.png")
    print(f"   preview: {out / 'preview.png'}")
    t0 = _step("render a held-out synthetic validation shard (same distribution, other seed)")
    val_job = RenderJob(s, job.params, n=max(100, args.n // 5), seed=args.seed + 1000, width=128, height=128)
    v = render_shard(val_job, out / "synthetic-val", workers=args.workers, reuse=True)
    _done(t0, f"{v.images} images" + (" (reused)" if v.reused else ""))
    return r.path


def _real(out: Path, seed: int) -> Path:
    from generator.real.build import build_real_set
    from generator.real.splits import has_real_set

    root = out / "real"
    t0 = _step("build the real set (MNIST digits on real photos)")
    if has_real_set(root):
        _done(t0, f"reused {root}")
        return root
    rows = build_real_set(root, seed=seed, overwrite=True)
    _done(t0, ", ".join(f"{r.split}: {r.images} images" for r in rows))
    return root


def run(args: argparse.Namespace) -> int:
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model, headline
    from generator.atomic import prepare_output_dir
    from trainer.api import train

    out = Path(args.out)
    prepare_output_dir(out, overwrite=True)
    out.mkdir(parents=True, exist_ok=True)
    shard = _synthetic(out, args)
    real = _real(out, args.seed)
    t0 = _step(f"train the default detector on the synthetic shard ({args.epochs:g} epochs, CPU)")
    res = train(
        [str(shard)],
        out / "model",
        strategy="synthetic-only",
        epochs=args.epochs,
        seed=args.seed,
        overwrite=True,
        progress=True,
    )
    _done(t0, f"{res.steps} steps, {res.images_per_s:.0f} img/s, final loss {res.final_loss:.3f}")
    reports: dict[str, Any] = {}
    for name, data in (("synthetic-val", out / "synthetic-val"), ("real-val", real / "real-val")):
        t0 = _step(f"evaluate on {name}")
        path, ev = evaluate_model(
            out / "model",
            data,
            out / f"report-{name}",
            EvalOptions(score_threshold=args.score_threshold),
            overwrite=True,
            progress=False,
        )
        reports[name] = headline(ev.report)
        _done(t0, f"mAP@0.5 {reports[name]['map50']:.3f}, recall {reports[name]['recall']:.3f} -> {path}")
    print("\n== summary")
    print(json.dumps(reports, indent=1))
    print(f"failure report on real-val: {out / 'report-real-val' / 'report.md'} (gallery.png beside it)")
    return 0
