"""Closed loop (policy ``optuna``) vs. domain randomization (``uniform``) at equal render budget.

For each seed and each policy, :func:`flows.loop.run_loop` runs the same number of iterations
with the same images per iteration, the same training budget and the same per-iteration seeds
on the built-in real digits set (built once under ``WORK/real``, real seed 0, shared by every
run). Iteration 0 is uniform for both, so the curves start together. After every iteration the
current model is scored on **real-test** (``final_report=True``) for this report only: the
policy sees real-val reports and nothing else, and nothing here is tuned on real-test.

Recorded per iteration: images rendered so far, real-test mAP@0.5 and recall, the worst real
slice recall (min recall over slices with support >= the report's ``min_support``), and the
real-test recall on the slices the policy targeted (for ``uniform``: on the slices the loop of
the same seed targeted). Two target comparisons, on the mean curves over seeds:

1. images the loop needs to reach uniform's final real-test mAP@0.5 (linear interpolation,
   starting from (0 images, mAP 0)) ÷ uniform's total images — target <= 50 %;
2. worst-slice recall, loop − uniform, at the full (equal) budget — target >= +10 points.

Writes ``WORK/loop_vs_uniform.json`` and a plot (default ``benchmarks/loop_vs_uniform.png``),
prints a Markdown table. Re-running with the same ``--work`` resumes every loop.

    .venv/bin/python benchmarks/loop_vs_uniform.py --preset cpu --work runs/loop-bench
    .venv/bin/python benchmarks/loop_vs_uniform.py --preset gpu --work runs/loop-bench-gpu --seeds 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # before anything can import OpenGL

import numpy as np

from flows.loop import IterationRecord, LoopConfig, evaluate_step, run_loop
from generator import atomic

POLICIES = ("uniform", "optuna")
# cpu: the first sizing (4 × 300 images, 150 steps × 16 per iteration) left the model at
# real-val mAP@0.5 ≈ 0.01 with no weak slice: no signal to steer on, so the loop equalled
# uniform by construction. A loop at 400 images and 300 steps × 32 per iteration reached 0.04 →
# 0.05 → 0.10 over 3 iterations with weak slices from iteration 0 on. Now: 3 iterations ×
# 300 images, 200 steps × 32 (≈ 6,400 training images ≈ 90 s at ~70 img/s on 2 idle cores),
# real-val and real-test evaluations ≈ 15 s each: ≈ 2.3 min per iteration; 3 seeds × (3 uniform
# + 2 loop iterations, iteration 0 shared) ≈ 35 min on idle cores. gpu: larger, not measured.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"iterations": 3, "images_per_iteration": 300, "steps_per_iteration": 200, "batch_size": 32,
            "render_workers": 2, "eval_resamples": 0, "backend": "pyrender", "real_sizes": None, "seeds": 3},
    "gpu": {"iterations": 8, "images_per_iteration": 2000, "steps_per_iteration": 1000, "batch_size": 64,
            "render_workers": 12, "eval_resamples": 200, "backend": "pyrender", "real_sizes": None, "seeds": 3},
    # plumbing check only (fake renderer, tiny real set): numbers mean nothing
    "smoke": {"iterations": 2, "images_per_iteration": 6, "steps_per_iteration": 3, "batch_size": 4,
              "render_workers": 1, "eval_resamples": 0, "backend": "fake", "width": 64, "height": 64,
              "real_sizes": {"real-train": 30, "real-val": 30, "real-test": 40}, "seeds": 1},
}
SHARED = ("params.yaml", "shard-*", "model", "report-test")  # iteration 0: identical for every policy


def worst_slice(report: dict[str, Any]) -> dict[str, Any] | None:
    """The slice with the lowest recall among those with support >= the report's min_support."""
    min_support = int((report.get("settings") or {}).get("min_support", 20))
    rows = [s for s in report.get("slices") or []
            if s.get("recall") is not None and (s.get("support_objects") or 0) >= min_support]
    if not rows:
        return None
    s = min(rows, key=lambda r: (r["recall"], r["condition"], r["bin"]))
    return {"condition": s["condition"], "bin": s["bin"], "side": s.get("side"), "range": s.get("range"),
            "recall": s["recall"], "support": s["support_objects"]}


def slice_recall(report: dict[str, Any], targets: list[dict[str, Any]]) -> float | None:
    """Support-weighted recall of ``report``'s slices overlapping the targeted slices' ranges."""
    from policy.reports import objective_value

    if not targets:
        return None
    value, _ = objective_value(report, "slice_recall", targets)
    return value


def images_to_reach(images: list[float], values: list[float], target: float) -> float | None:
    """Images at which the piecewise-linear curve through (0, 0) and (images, values) first
    reaches ``target``; None when it never does or ``target`` is not > 0."""
    if not target > 0:
        return None
    xs, ys = [0.0, *images], [0.0, *values]
    for i in range(1, len(xs)):
        if ys[i] >= target:
            return xs[i - 1] + (target - ys[i - 1]) * (xs[i] - xs[i - 1]) / (ys[i] - ys[i - 1])
    return None


def loop_config(args: argparse.Namespace, preset: dict[str, Any], policy: str, seed: int) -> LoopConfig:
    keys = ("iterations", "images_per_iteration", "steps_per_iteration", "batch_size", "render_workers",
            "eval_resamples", "backend", "real_sizes", "width", "height")
    kw = {k: preset[k] for k in keys if k in preset}
    for k in ("iterations", "images_per_iteration", "steps_per_iteration", "batch_size"):
        if getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    return LoopConfig(workdir=str(Path(args.work) / policy / f"seed{seed}"), real_dir=str(Path(args.work) / "real"),
                      policy=policy, seed=seed, device=args.device, strategy=args.strategy, **kw).validate()


def score_iteration(cfg: LoopConfig, rec: IterationRecord, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """Score iteration ``rec``'s model on real-test (reused when already scored for this model)."""
    path = cfg.iter_dir(rec.iteration) / "report-test" / "report.json"
    val = json.loads((cfg.work / rec.evaluate["path"] / "report.json").read_text())
    report = json.loads(path.read_text()) if path.is_file() else None
    t0 = time.perf_counter()
    if report is None or report["model"].get("sha256") != val["model"].get("sha256"):
        report = evaluate_step(cfg, rec.iteration, cfg.work / rec.train["path"], "real-test").report
    o = report["overall"]
    return {"policy": cfg.policy, "seed": cfg.seed, "iteration": rec.iteration, "images": rec.images_rendered,
            "map50": o["map50"], "recall": o["recall"], "val_map50": rec.evaluate["map50"],
            "worst_slice": worst_slice(report), "targets": targets, "target_recall": slice_recall(report, targets),
            "render_s": rec.render["seconds"], "train_s": rec.train["seconds"], "val_eval_s": rec.evaluate["seconds"],
            "reused": {"shard": rec.render["reused"], "model": rec.train.get("reused", False)},
            "decision": {"changed": rec.decision["changed"], "trial": rec.decision["trial"],
                         "slices": rec.decision["slices"]},
            "test_eval_s": round(time.perf_counter() - t0, 3), "iteration_s": rec.seconds,
            "report_test": str(path)}


def share_iteration_0(src: LoopConfig, dst: LoopConfig) -> None:
    """Copy ``src``'s finished iteration-0 params, shard, model and real-test report into a
    fresh ``dst`` loop.

    Iteration 0 is the same for every policy (uniform params, the same seeds and training), so
    the loop reuses them instead of recomputing: :func:`flows.loop.render_step` keeps a shard
    with the same fingerprint and :func:`flows.loop.train_step` a model from the same inputs;
    the real-test report is reused only for the same model (sha256); anything that does not
    match is simply redone. Each copy is renamed into place whole.
    """
    if (dst.work / "history.json").exists() or not (src.work / "history.json").is_file():
        return
    for source in sorted(p for pattern in SHARED for p in src.iter_dir(0).glob(pattern)):
        name = source.name
        target = dst.iter_dir(0) / name
        if target.exists() or not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-copy-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp)
        os.replace(tmp, target)


def run_policy(args: argparse.Namespace, preset: dict[str, Any], policy: str, seed: int) -> list[dict[str, Any]]:
    """Run (or resume) one loop and return one real-test row per iteration."""
    cfg = loop_config(args, preset, policy, seed)
    if policy != POLICIES[0]:
        share_iteration_0(loop_config(args, preset, POLICIES[0], seed), cfg)
    rows: dict[int, dict[str, Any]] = {}

    def on_iteration(rec: IterationRecord) -> None:
        r = rows[rec.iteration] = score_iteration(cfg, rec, targets_of(cfg, rec.iteration))
        worst = r["worst_slice"]["recall"] if r["worst_slice"] else None
        print(f"  {policy} seed {seed} iter {rec.iteration}: {r['images']} images, real-test mAP@0.5 "
              f"{fmt(r['map50'])}, worst slice recall {fmt(worst)} ({rec.seconds:.0f} s + real-test "
              f"{r['test_eval_s']:.0f} s)", file=sys.stderr, flush=True)

    history = run_loop(cfg, on_iteration=on_iteration)
    for rec in history.entries:  # iterations completed by an earlier (interrupted) run
        if rec.iteration not in rows:
            rows[rec.iteration] = score_iteration(cfg, rec, targets_of(cfg, rec.iteration))
    return [rows[k] for k in sorted(rows)]


def targets_of(cfg: LoopConfig, k: int) -> list[dict[str, Any]]:
    """The weak slices that drove iteration ``k``'s params (iteration k-1's decision)."""
    if k == 0:
        return []
    decision = json.loads((cfg.iter_dir(k - 1) / "decision.json").read_text())
    return [{"condition": s["condition"], "range": s["range"], "side": s.get("side")}
            for s in decision.get("slices") or []]


def cross_target_recall(rows: list[dict[str, Any]]) -> None:
    """For uniform rows: real-test recall on the slices the loop of the same seed targeted."""
    loop = {(r["seed"], r["iteration"]): r for r in rows if r["policy"] == "optuna"}
    for r in rows:
        other = loop.get((r["seed"], r["iteration"]))
        if r["policy"] == "uniform" and other is not None:
            report = json.loads(Path(r["report_test"]).read_text())
            r["loop_targets"] = other["targets"]
            r["recall_on_loop_targets"] = slice_recall(report, other["targets"])


def mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    return float(np.mean(v)), float(np.std(v)), len(v)


def fmt(x: float | None, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def curves(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per policy, per iteration: mean ± std over seeds of the recorded metrics."""
    out: dict[str, list[dict[str, Any]]] = {}
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        for k in sorted({r["iteration"] for r in mine}):
            at = [r for r in mine if r["iteration"] == k]
            point: dict[str, Any] = {"iteration": k, "images": at[0]["images"], "seeds": len(at)}
            for name, get in (("map50", lambda r: r["map50"]), ("val_map50", lambda r: r["val_map50"]),
                              ("worst_recall", lambda r: r["worst_slice"] and r["worst_slice"]["recall"]),
                              ("target_recall", lambda r: r.get("target_recall")),
                              ("recall_on_loop_targets", lambda r: r.get("recall_on_loop_targets"))):
                m, s, n = mean_std([get(r) for r in at])
                point[name] = {"mean": m, "std": s, "n": n}
            out.setdefault(policy, []).append(point)
    return out


def comparisons(rows: list[dict[str, Any]], cv: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The two target comparisons (mean curves), plus per-seed values for the spread."""
    uni, opt = cv.get("uniform") or [], cv.get("optuna") or []
    if not uni or not opt or len(uni) != len(opt):
        return {"note": "both policies need the same completed iterations"}
    total = uni[-1]["images"]
    target = uni[-1]["map50"]["mean"]
    need = images_to_reach([p["images"] for p in opt], [p["map50"]["mean"] for p in opt], target or 0.0)
    per_seed_ratio, per_seed_diff = [], []
    for seed in sorted({r["seed"] for r in rows}):
        u = sorted((r for r in rows if r["seed"] == seed and r["policy"] == "uniform"), key=lambda r: r["iteration"])
        o = sorted((r for r in rows if r["seed"] == seed and r["policy"] == "optuna"), key=lambda r: r["iteration"])
        if len(u) != len(uni) or len(o) != len(opt):
            continue
        n = images_to_reach([r["images"] for r in o], [r["map50"] for r in o], u[-1]["map50"])
        per_seed_ratio.append(None if n is None else n / total)
        wu, wo = u[-1]["worst_slice"], o[-1]["worst_slice"]
        per_seed_diff.append(None if not (wu and wo) else 100 * (wo["recall"] - wu["recall"]))
    wu, wo = uni[-1]["worst_recall"]["mean"], opt[-1]["worst_recall"]["mean"]
    diff = None if wu is None or wo is None else 100 * (wo - wu)
    decisions = [r["decision"] for r in rows if r["policy"] == "optuna"]
    return {
        "loop_decisions": len(decisions), "loop_moves": sum(1 for d in decisions if d["changed"]),
        "images_total": total, "uniform_final_map50": target, "loop_images_to_reach": need,
        "images_ratio": None if need is None else need / total, "images_ratio_target": 0.5,
        "images_ratio_met": need is not None and need / total <= 0.5,
        "images_ratio_per_seed": per_seed_ratio,
        "worst_recall_uniform": wu, "worst_recall_loop": wo, "worst_recall_diff_points": diff,
        "worst_recall_diff_per_seed": per_seed_diff, "worst_recall_diff_target": 10.0,
        "worst_recall_diff_met": diff is not None and diff >= 10.0,
    }


def markdown(cv: dict[str, list[dict[str, Any]]], cmp: dict[str, Any]) -> str:
    def ms(p: dict[str, Any], key: str) -> str:
        m = p[key]
        return "–" if m["mean"] is None else f"{m['mean']:.3f} ± {m['std']:.3f}"

    lines = ["| policy | iter | images | real-test mAP@0.5 | worst-slice recall | targeted-slice recall | "
             "real-val mAP@0.5 |", "|---|---|---|---|---|---|---|"]
    for policy, points in cv.items():
        for p in points:
            tgt = "recall_on_loop_targets" if policy == "uniform" else "target_recall"
            lines.append(f"| {policy} | {p['iteration']} | {p['images']} | {ms(p, 'map50')} | "
                         f"{ms(p, 'worst_recall')} | {ms(p, tgt)} | {ms(p, 'val_map50')} |")
    if "images_total" in cmp:
        ratio, target = cmp["images_ratio"], cmp["uniform_final_map50"]
        lines += ["", f"1. Images for the loop to reach uniform's final real-test mAP@0.5 ({fmt(target)}): "
                  + ("undefined (uniform's final mAP is 0)" if not (target or 0) > 0 else
                     "not reached within the budget" if ratio is None else
                     f"{cmp['loop_images_to_reach']:.0f} of {cmp['images_total']} = {100 * ratio:.0f}%")
                  + f" (target <= 50%: {'met' if cmp['images_ratio_met'] else 'not met'})",
                  f"2. Worst-slice recall at equal budget: loop {fmt(cmp['worst_recall_loop'])} vs uniform "
                  f"{fmt(cmp['worst_recall_uniform'])} = {fmt(cmp['worst_recall_diff_points'], 1)} points "
                  f"(target >= +10: {'met' if cmp['worst_recall_diff_met'] else 'not met'})",
                  f"Loop decisions that changed the params: {cmp['loop_moves']} of {cmp['loop_decisions']}"
                  + ("" if cmp["loop_moves"] else " (no weak real-val slice with evidence: the loop rendered "
                     "exactly what uniform did)")]
    return "\n".join(lines)


def plot(cv: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((axes[0], "map50", "real-test mAP@0.5"), (axes[1], "worst_recall", "worst real slice recall"))
    for ax, key, label in panels:
        for policy, points in cv.items():
            pts = [p for p in points if p[key]["mean"] is not None]
            x = np.array([p["images"] for p in pts], float)
            m = np.array([p[key]["mean"] for p in pts])
            s = np.array([p[key]["std"] for p in pts])
            ax.plot(x, m, marker="o", label=policy)
            ax.fill_between(x, m - s, m + s, alpha=0.2)
            if key == "map50" and policy == "uniform" and len(m):
                ax.axhline(m[-1], color="grey", ls="--", lw=1, label="uniform final")
        ax.set_xlabel("synthetic images rendered")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, buf.getvalue())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="sizes (default: cpu)")
    ap.add_argument("--seeds", type=int, default=None, help="loop seeds 0..N-1 (default: the preset's, 3)")
    ap.add_argument("--work", default="runs/loop-vs-uniform", help="work directory (resumable)")
    ap.add_argument("--plot", default=None, help="plot path (default: benchmarks/loop_vs_uniform.png)")
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    ap.add_argument("--images-per-iteration", dest="images_per_iteration", type=int, default=None,
                    help="override the preset's images per iteration")
    ap.add_argument("--steps-per-iteration", dest="steps_per_iteration", type=int, default=None,
                    help="override the preset's training steps per iteration")
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="override the preset's batch size")
    ap.add_argument("--strategy", choices=("synthetic-only", "mixed"), default="synthetic-only",
                    help="training data: synthetic shards only (default) or mixed with real-train (same for both)")
    ap.add_argument("--device", default="auto", help="training/inference device: auto, cpu, cuda")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    seeds = list(range(args.seeds if args.seeds is not None else preset["seeds"]))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for policy in POLICIES:
            rows += run_policy(args, preset, policy, seed)
    cross_target_recall(rows)
    cv = curves(rows)
    cmp = comparisons(rows, cv)
    cfg = loop_config(args, preset, "optuna", 0)
    result = {"benchmark": "loop_vs_uniform", "preset": args.preset, "seeds": seeds,
              "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.python_version()}",
              "loop": {k: v for k, v in cfg.to_dict().items() if k not in ("workdir", "policy", "seed", "study")},
              "wall_s": round(time.perf_counter() - t0, 1), "curves": cv, "comparisons": cmp, "rows": rows}
    work = Path(args.work)
    atomic.write_json(work / "loop_vs_uniform.json", result)
    plot_path = Path(args.plot) if args.plot else Path(__file__).resolve().parent / "loop_vs_uniform.png"
    plot(cv, plot_path, f"loop (optuna) vs uniform, preset {args.preset}, {len(seeds)} seed(s)")
    print(markdown(cv, cmp))
    print(f"\nwall time {result['wall_s']:.0f} s; {work / 'loop_vs_uniform.json'}; plot {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
