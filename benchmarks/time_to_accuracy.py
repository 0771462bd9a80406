"""Time to accuracy (DAWNBench-style) of the default detector on this machine.

For each recipe, in one run (same data, same machine state as far as a shared machine allows):

(a) train synthetic-only on ``--n`` uniform digits images and score mAP@0.5 on a held-out
    uniform synthetic shard every ``--every`` steps → the curve (training minutes, mAP@0.5) and
    the minutes to reach ``--target-a`` (0.7);
(b) fine-tune the final (a) model on real-train, scoring real-test mAP@0.5 every ``--every``
    fine-tuning steps → minutes (pre-training + fine-tuning) to reach ``--target-b`` (0.50).
    real-test is read only here, as a reference number: nothing steers on it.

Also measured in the same run: a float32 2048² matmul's GFLOP/s (the machine's ceiling), the
detector's training GFLOP/s (forward + backward ≈ 3 × forward FLOPs × images/s) and the time to
evaluate the 600-image held-out shard. Evaluation time is not counted as training time.

Recipes (``--recipes``): ``old`` = the default detector, NCHW batches (the trainer before
channels-last); ``new`` = the trainer's defaults now. Writes ``WORK/time_to_accuracy.json`` and
a plot (default ``benchmarks/time_to_accuracy.png``).

    .venv/bin/python benchmarks/time_to_accuracy.py --work runs/tta --minutes 15
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from generator import atomic

RECIPES: dict[str, dict[str, Any]] = {
    "old": {"lr": 2e-3, "batch_size": 32, "channels_last": False, "model_options": {}},
    "new": {"lr": 2e-3, "batch_size": 32, "channels_last": True, "model_options": {}},
}


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def forward_gflops(detector: Any, size: int) -> float:
    """FLOPs of one forward pass at ``size``² (2 × multiply-accumulates of convolutions)."""
    macs = 0

    def hook(m: torch.nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs += out.numel() * k

    handles = [m.register_forward_hook(hook) for m in detector.module.modules() if isinstance(m, torch.nn.Conv2d)]
    detector.module.eval()
    with torch.inference_mode():
        detector.module(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return 2 * macs / 1e9


class Curve:
    """A trainer step hook: score the detector on one shard every ``every`` steps."""

    def __init__(self, every: int, data: Path, minutes0: float = 0.0) -> None:
        from generator.shard import Shard

        self.every, self.points, self.minutes0 = every, [], minutes0
        self.shard = Shard(data)
        self.eval_s: list[float] = []

    def __call__(self, steps: int, detector: Any, seconds: float) -> None:
        from evaluator.cocometrics import coco_metrics
        from evaluator.predict import _as_results

        t = time.perf_counter()
        train_min = seconds / 60 + self.minutes0
        images = self.shard.coco["images"]
        preds: list[dict[str, Any]] = []
        for i in range(0, len(images), 64):
            batch = images[i:i + 64]
            out = detector.predict([self.shard.load_image(im) for im in batch], score_threshold=0.05)
            for im, dets in zip(batch, out, strict=True):
                preds.extend(_as_results(int(im["id"]), dets))
        detector.module.train()
        m = coco_metrics(self.shard.coco, preds)["bbox"]["map50"]
        self.eval_s.append(time.perf_counter() - t)
        self.points.append({"steps": steps, "minutes": round(train_min, 3), "map50": m})
        print(f"    step {steps}: {train_min:.1f} min, mAP@0.5 {m:.3f} (eval {self.eval_s[-1]:.1f} s)",
              file=sys.stderr, flush=True)


def minutes_to(points: list[dict[str, Any]], target: float) -> float | None:
    for p in points:
        if (p["map50"] or 0) >= target:
            return p["minutes"]
    return None


def run_recipe(name: str, args: argparse.Namespace, syn: Path, val: Path, real: Path) -> dict[str, Any]:
    from trainer.api import train

    r = RECIPES[name]
    work = Path(args.work) / name
    steps = max(1, int(args.minutes * 60 * args.img_s / r["batch_size"]))
    print(f"  {name}: (a) {steps} steps", file=sys.stderr, flush=True)
    a = Curve(args.every, val)
    ra = train([syn], work / "a", steps=steps, batch_size=r["batch_size"], lr=r["lr"], seed=0, overwrite=True,
               model_options=r["model_options"] or None, checkpoint=a, channels_last=r["channels_last"])
    b = Curve(args.every, real / "real-test", minutes0=ra.seconds / 60)
    rb = train([real / "real-train"], work / "b", strategy="real-only", steps=args.finetune_steps,
               batch_size=r["batch_size"], lr=r["lr"] / 2, seed=0, overwrite=True, init=work / "a",
               checkpoint=b, channels_last=r["channels_last"])
    from trainer.api import load_detector

    det = load_detector(work / "a", device="cpu")
    gf = forward_gflops(det, det.config.input_size)
    return {"recipe": r, "steps": steps, "curve_a": a.points, "curve_b": b.points,
            "minutes_to_a": minutes_to(a.points, args.target_a), "minutes_to_b": minutes_to(b.points, args.target_b),
            "train_img_s": round(ra.images_per_s, 1), "finetune_img_s": round(rb.images_per_s, 1),
            "forward_gflop": round(gf, 3), "train_gflops": round(3 * gf * ra.images_per_s, 1),
            "eval_600_s": round(float(np.median(a.eval_s)), 2) if a.eval_s else None}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, r in result["recipes"].items():
        for ax, key in ((axes[0], "curve_a"), (axes[1], "curve_b")):
            ax.plot([p["minutes"] for p in r[key]], [p["map50"] for p in r[key]], marker="o", label=name)
    axes[0].axhline(result["target_a"], color="grey", ls="--", lw=1)
    axes[1].axhline(result["target_b"], color="grey", ls="--", lw=1)
    axes[0].set_title("(a) held-out uniform synthetic shard")
    axes[1].set_title("(b) real-test after fine-tuning on real-train")
    for ax in axes:
        ax.set_xlabel("training minutes (2 CPU cores)")
        ax.set_ylabel("mAP@0.5")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    from generator.params import uniform_params
    from generator.pipeline import RenderJob, render_shard
    from generator.real.build import build_real_set
    from generator.scenario import load_scenario

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/time-to-accuracy")
    ap.add_argument("--recipes", default="old,new")
    ap.add_argument("--n", type=int, default=4000, help="uniform training images (default 4000)")
    ap.add_argument("--val-n", type=int, default=600, help="held-out uniform images (default 600)")
    ap.add_argument("--minutes", type=float, default=15.0, help="(a) training budget per recipe, in minutes")
    ap.add_argument("--img-s", type=float, default=60.0, help="assumed img/s that turns minutes into steps")
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=150, help="score every N steps")
    ap.add_argument("--target-a", type=float, default=0.7)
    ap.add_argument("--target-b", type=float, default=0.5)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    work = Path(args.work)
    sc = load_scenario("digits")
    syn = render_shard(RenderJob(sc, uniform_params(sc), args.n, 0, 128, 128), work / "syn-train", reuse=True).path
    val = render_shard(RenderJob(sc, uniform_params(sc), args.val_n, 1, 128, 128), work / "syn-val", reuse=True).path
    real = work / "real"
    if not (real / "real-test" / "manifest.json").is_file():
        build_real_set(real, seed=0, overwrite=True)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    result: dict[str, Any] = {"machine": f"{platform.node()}, {threads} CPUs", "args": vars(args),
                              "target_a": args.target_a, "target_b": args.target_b,
                              "matmul_gflops": round(matmul_gflops(threads), 1), "recipes": {}}
    for name in args.recipes.split(","):
        result["recipes"][name] = run_recipe(name, args, syn, val, real)
        atomic.write_json(work / "time_to_accuracy.json", result)
    for name, r in result["recipes"].items():
        share = r["train_gflops"] / result["matmul_gflops"]
        print(f"{name}: (a) {r['minutes_to_a']} min to {args.target_a} (final {r['curve_a'][-1]['map50']:.3f}); "
              f"(b) {r['minutes_to_b']} min to {args.target_b} (final {r['curve_b'][-1]['map50']:.3f}); "
              f"{r['train_img_s']} img/s = {r['train_gflops']} GFLOP/s = {share:.0%} of matmul "
              f"{result['matmul_gflops']} GFLOP/s; eval 600 images {r['eval_600_s']} s")
    plot(result, Path(args.plot) if args.plot else Path(__file__).resolve().parent / "time_to_accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
