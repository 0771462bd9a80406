"""Closed loop vs. calibrated open loop vs. uniform domain randomization, from one warm start.

Arms (every one starts from the same base model, renders the same images per round, trains the
same steps per round with the same per-round seeds, on the built-in real digits set):

- **U** — uniform DR: every parameter uniform over its range, every round (policy ``uniform``);
- **C** — calibrated, open loop: the distributions ``synthloop calibrate`` fitted to real-val
  (plus its uniform share), every round (policy ``calibrated``);
- **L** — the closed loop: the bounded mixture (uniform share + the same calibrated base + a
  capped tilt toward real-val weak slices whose CI lies below the overall recall; policy
  ``mixture``), steered by real-val every round;
- **F** — the failure re-fit closed loop: the same mixture, its tilt moved toward the calibrated
  base re-fitted each round to real-val with the current model's misses counted twice (policy
  ``refit``; the re-fit's renders, like the calibration's, train nothing and are not counted);
- **R** — F's ablation: the same re-fit with every missed object counted once (``failure_weight``
  1), so its target is a second calibration search from the base with F's search seed; F − R is
  what counting the model's misses adds, over the re-fit's extra search alone.

Each arm is measured **synthetic-only** (the loop's final model) and **hybrid** (that model
fine-tuned on real-train, the same steps and learning rate for every arm). real-val drives the
loop; real-test is read only here, for the report (``final_report=True``), after every round.
The calibration is computed once (seed 0, on real-val) and shared by C and L; its renders are
not counted in the image budget (they train nothing) and its time is reported.

Reported: per arm mean ± sd over seeds; paired differences L−U, C−U, F−U, F−C and F−R per seed with a
bootstrap 95 % CI over seeds for real-test mAP@0.5 and worst-slice recall (synthetic-only and
hybrid); sample efficiency = images L (and F) needs to reach U's final real-test mAP@0.5 ÷ U's images
(curves start at the base model's score with 0 images). Every final model is kept and listed
(arm, seed, kind, path). ``--eval NAME=DIR`` adds evaluation sets (any shard, e.g. one made by
``synthloop data import-coco``), reported beside real-test.

    .venv/bin/python benchmarks/loop_vs_uniform.py --preset cpu --work runs/loop-bench
    .venv/bin/python benchmarks/loop_vs_uniform.py --preset gpu --work runs/loop-bench-gpu

Writes ``WORK/loop_vs_uniform.json`` (resumable: re-running with the same ``--work`` reuses
every finished loop and score) and a plot (default ``benchmarks/loop_vs_uniform.png``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # before anything can import OpenGL
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from flows.loop.run import run_loop
from flows.loop.state import IterationRecord, LoopConfig
from generator import atomic

ARMS = {"U": "uniform", "C": "calibrated", "L": "mixture", "F": "refit", "R": "refit"}  # arm -> loop policy
LABELS = {**ARMS, "R": "refit, misses x1"}  # how tables and plots name an arm
ARM_SETTINGS: dict[str, dict[str, Any]] = {"R": {"failure_weight": 1}}  # LoopConfig fields beyond the policy
PAIRS = (("L", "U"), ("C", "U"), ("F", "U"), ("F", "C"), ("F", "R"))  # paired differences reported, when both ran
# cpu: sized to fit ~60 min on 2 idle cores: per arm and seed the warm start's real-val evaluation,
# 3 rounds × (render 120 images ≈ 10 s, train 50 × 32 ≈ 25 s, real-val + real-test evaluation
# ≈ 20 s) and a 50-step fine-tune + its evaluation ≈ 3.5 min; 15 loops.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"rounds": 3, "images": 120, "steps": 50, "batch_size": 32, "lr": 5e-4, "replay_share": 0.5,
            "finetune_steps": 50, "seeds": 5,
            "calib_trials": 16, "calib_images": 32, "eval_resamples": 0, "backend": "pyrender"},
    "gpu": {"rounds": 8, "images": 500, "steps": 200, "batch_size": 64, "lr": 5e-4, "replay_share": 0.5,
            "finetune_steps": 300, "seeds": 5,
            "calib_trials": 40, "calib_images": 96, "eval_resamples": 200, "backend": "pyrender"},
    # the new data's share raised: 4 rounds × 300 images, 150 steps a round, replay at a quarter of
    # the samples (the cpu preset's 360 new images were ~8 % of what the model saw); ~45 min on
    # 2 idle cores for U and L over 3 seeds
    "cpu-steered": {"rounds": 4, "images": 300, "steps": 150, "batch_size": 32, "lr": 5e-4, "replay_share": 0.25,
                    "finetune_steps": 50, "seeds": 3,
                    "calib_trials": 16, "calib_images": 32, "eval_resamples": 0, "backend": "pyrender"},
    # cpu-steered with a converged calibration: 48 trials instead of 16 (at seed 0 the distance of
    # rendered to real-val conditions falls 0.70 -> 0.44 with 16 trials, -> 0.34 with 48; ~40 s); each
    # round's re-fit keeps 16 trials x 32 images
    "cpu-steered-long": {"rounds": 4, "images": 300, "steps": 150, "batch_size": 32, "lr": 5e-4, "replay_share": 0.25,
                         "finetune_steps": 50, "seeds": 5,
                         "calib_trials": 48, "calib_images": 32, "refit_trials": 16, "refit_images": 32,
                         "eval_resamples": 0, "backend": "pyrender"},
    # plumbing check only (fake renderer, tiny real set): the numbers mean nothing
    "smoke": {"rounds": 2, "images": 6, "steps": 2, "batch_size": 4, "lr": 5e-4, "replay_share": 0.5,
              "finetune_steps": 2, "seeds": 2,
              "calib_trials": 2, "calib_images": 4, "eval_resamples": 0, "backend": "fake", "width": 64,
              "height": 64, "real_sizes": {"real-train": 30, "real-val": 30, "real-test": 40}},
}
FINETUNE_LR = 1e-3
BOOT = 10_000


def worst_slice(report: dict[str, Any]) -> dict[str, Any] | None:
    """The slice with the lowest recall among those with support >= the report's min_support."""
    min_support = int((report.get("settings") or {}).get("min_support", 20))
    rows = [s for s in report.get("slices") or []
            if s.get("recall") is not None and (s.get("support_objects") or 0) >= min_support]
    if not rows:
        return None
    s = min(rows, key=lambda r: (r["recall"], r["condition"], r["bin"]))
    return {"condition": s["condition"], "bin": s["bin"], "recall": s["recall"], "support": s["support_objects"]}


def summary(report: dict[str, Any]) -> dict[str, Any]:
    o = report["overall"]
    w = worst_slice(report)
    return {"map50": o.get("map50"), "recall": o.get("recall"), "worst_recall": w and w["recall"], "worst": w}


def images_to_reach(images: list[float], values: list[float], target: float) -> float | None:
    """Images at which the piecewise-linear curve through the points first reaches ``target``
    (the first point is the warm start at 0 images); None when it never does."""
    if values and values[0] >= target:
        return images[0]
    for i in range(1, len(images)):
        if values[i] >= target:
            return images[i - 1] + (target - values[i - 1]) * (images[i] - images[i - 1]) / (values[i] - values[i - 1])
    return None


def score(model: Path, data: Path, out: Path, scenario: str, final: bool, resamples: int) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` into ``out`` (reused when already scored for this model)."""
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model
    from generator.shard import sha256_file

    sha = sha256_file(model / "model.pt")
    path = out / "report.json"
    if path.is_file():
        report = json.loads(path.read_text())
        if (report.get("model") or {}).get("sha256") == sha:
            return summary(report)
    _, ev = evaluate_model(model, data, out, EvalOptions(resamples=resamples), scenario=scenario,
                           final_report=final, overwrite=True, progress=False)
    return summary(ev.report)


def loop_config(args: argparse.Namespace, p: dict[str, Any], arm: str, seed: int, base: Path,
                calibration: Path | None) -> LoopConfig:
    extra = {k: p[k] for k in ("width", "height", "real_sizes") if k in p}
    return LoopConfig(
        workdir=str(Path(args.work) / arm / f"seed{seed}"), real_dir=str(Path(args.work) / "real"),
        policy=ARMS[arm], seed=seed, init_model=str(base), iterations=p["rounds"],
        policy_base=None if arm == "U" else (str(calibration) if calibration else None),
        images_per_iteration=p["images"], steps_per_iteration=p["steps"], batch_size=p["batch_size"], lr=p["lr"],
        render_shards=1, eval_resamples=p["eval_resamples"], backend=p["backend"], device=args.device,
        replay=[str(args.replay)] if args.replay else None, replay_share=p["replay_share"],
        refit_trials=p.get("refit_trials", p["calib_trials"]), refit_images=p.get("refit_images", p["calib_images"]),
        progress=False, **extra,
        **ARM_SETTINGS.get(arm, {})).validate()


def run_arm(args: argparse.Namespace, p: dict[str, Any], arm: str, seed: int, base: Path,
            calibration: Path | None, base_test: dict[str, Any]) -> dict[str, Any]:
    """One loop (resumable), real-test after every round, then the hybrid fine-tune."""
    from trainer.api import train

    cfg = loop_config(args, p, arm, seed, base, calibration)
    t0 = time.perf_counter()
    history = run_loop(cfg)
    loop_s = time.perf_counter() - t0
    curve = [{"round": -1, "images": 0, **{k: base_test[k] for k in ("map50", "worst_recall")}}]
    rounds: list[IterationRecord] = list(history.entries)
    for rec in rounds:
        model = cfg.work / rec.train["path"]
        s = score(model, cfg.real_root / "real-test", cfg.iter_dir(rec.iteration) / "report-test", cfg.scenario,
                  True, p["eval_resamples"])
        curve.append({"round": rec.iteration, "images": rec.images_rendered, "map50": s["map50"],
                      "worst_recall": s["worst_recall"], "val_map50": rec.evaluate["map50"],
                      "changed": rec.decision["changed"], "slices": rec.decision["slices"]})
    final = cfg.work / rounds[-1].train["path"]
    hybrid = cfg.work / "hybrid"
    t1 = time.perf_counter()
    if not (hybrid / "model.json").is_file():
        train([cfg.real_root / "real-train"], hybrid, strategy="real-only", steps=p["finetune_steps"],
              batch_size=p["batch_size"], lr=FINETUNE_LR, seed=seed, device=args.device, init=final,
              overwrite=True)
    finetune_s = time.perf_counter() - t1
    row: dict[str, Any] = {"arm": arm, "policy": ARMS[arm], "seed": seed, "curve": curve,
                           "loop_s": round(loop_s, 1), "finetune_s": round(finetune_s, 1),
                           "models": {"synthetic": shown(final), "hybrid": shown(hybrid)}}
    last = curve[-1]  # the final model's real-test score is the curve's last point
    row["synthetic"] = {"real-test": {"map50": last["map50"], "worst_recall": last["worst_recall"]}}
    row["hybrid"] = {"real-test": score(hybrid, cfg.real_root / "real-test", cfg.work / "score-hybrid-real-test",
                                       cfg.scenario, True, p["eval_resamples"])}
    for kind, model in (("synthetic", final), ("hybrid", hybrid)):
        for name, data in args.eval:
            row[kind][name] = score(model, data, cfg.work / f"score-{kind}-{name}", cfg.scenario, False,
                                    p["eval_resamples"])
    print(f"  {arm} seed {seed}: real-test mAP@0.5 synthetic {fmt(row['synthetic']['real-test']['map50'])} "
          f"hybrid {fmt(row['hybrid']['real-test']['map50'])} ({loop_s + finetune_s:.0f} s)", file=sys.stderr,
          flush=True)
    return row


def shown(path: Path | str | None) -> str | None:
    """A path as the JSON records it: relative to the working directory when inside it (no
    machine-specific prefix in a committed result), else as given."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def fmt(x: float | None, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def paired(a: list[float | None], b: list[float | None], seed: int = 0) -> dict[str, Any]:
    """Mean of the paired differences a − b (×100: points) with a bootstrap 95 % CI over pairs."""
    d = np.array([100 * (x - y) for x, y in zip(a, b, strict=True) if x is not None and y is not None])
    if len(d) == 0:
        return {"mean": None, "ci": None, "n": 0, "per_seed": []}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(BOOT, len(d)))].mean(axis=1)
    return {"mean": float(d.mean()), "ci": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "n": len(d), "per_seed": [round(float(x), 2) for x in d]}


def efficiency(by: dict[tuple[str, int], dict[str, Any]], arm: str, seeds: list[int]) -> list[float | None]:
    """Per seed: images ``arm`` needs to reach U's final real-test mAP@0.5 ÷ U's images (None:
    never, or U did not improve on the warm start)."""
    ratios: list[float | None] = []
    for s in seeds:
        u, c = by[("U", s)]["curve"], by[(arm, s)]["curve"]
        if not u[-1]["map50"] > u[0]["map50"]:  # U did not improve on the warm start: nothing to reach
            ratios.append(None)
            continue
        need = images_to_reach([x["images"] for x in c], [x["map50"] for x in c], u[-1]["map50"])
        ratios.append(None if need is None else need / u[-1]["images"])
    return ratios


CLOSED_LOOP = ("L", "F")  # the arms held to the targets against U


def compare(rows: list[dict[str, Any]], eval_names: list[str]) -> dict[str, Any]:
    """Paired differences (:data:`PAIRS` whose arms both ran), and for each closed-loop arm that
    ran (:data:`CLOSED_LOOP`) its sample efficiency and the targets against U."""
    by = {(r["arm"], r["seed"]): r for r in rows}
    ran = {r["arm"] for r in rows}
    seeds = sorted({r["seed"] for r in rows if all((a, r["seed"]) in by for a in ran)})
    out: dict[str, Any] = {"seeds": seeds, "targets": {}}
    for a, b in [pair for pair in PAIRS if set(pair) <= ran]:
        for kind in ("synthetic", "hybrid"):
            for data in ("real-test", *eval_names):
                for metric in ("map50", "worst_recall"):
                    out[f"{a}-{b} {kind} {data} {metric}"] = paired([by[(a, s)][kind][data][metric] for s in seeds],
                                                                   [by[(b, s)][kind][data][metric] for s in seeds])
    for arm in [a for a in CLOSED_LOOP if a in ran]:
        ratios = efficiency(by, arm, seeds)
        done = [x for x in ratios if x is not None]
        median = float(np.median(done)) if len(done) == len(ratios) and done else None
        prefix = "" if arm == "L" else f"{arm} "  # L's keys keep their original names
        out[f"{prefix}sample_efficiency_per_seed"] = ratios
        out[f"{prefix}sample_efficiency_median"] = median
        out["targets"].update({
            f"{arm}-U synthetic map50 >= +3 points, CI above 0": _met(out[f"{arm}-U synthetic real-test map50"], 3.0),
            f"{arm}-U hybrid map50 >= +3 points, CI above 0": _met(out[f"{arm}-U hybrid real-test map50"], 3.0),
            f"{arm}-U worst-slice recall >= +5 points (synthetic)": _met(
                out[f"{arm}-U synthetic real-test worst_recall"], 5.0, ci=False),
            f"{arm} sample efficiency <= 0.5 (median over seeds)": median is not None and median <= 0.5,
        })
    return out


def _met(d: dict[str, Any], points: float, ci: bool = True) -> bool:
    return d["mean"] is not None and d["mean"] >= points and (not ci or (d["ci"] is not None and d["ci"][0] > 0))


def per_arm(rows: list[dict[str, Any]], eval_names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        for kind in ("synthetic", "hybrid"):
            for data in ("real-test", *eval_names):
                for metric in ("map50", "worst_recall"):
                    v = [r[kind][data][metric] for r in mine if r[kind][data][metric] is not None]
                    out[f"{arm} {kind} {data} {metric}"] = (
                        {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
                        if v else None)
    return out


def markdown(arms: dict[str, Any], cmp: dict[str, Any], base_test: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        m = arms.get(key)
        return "–" if not m else f"{m['mean']:.3f} ± {m['sd']:.3f}"

    def pd(key: str) -> str:
        d = cmp.get(key) or {}
        if d.get("mean") is None:
            return "–"
        return f"{d['mean']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"

    lines = [f"Warm start (base model) real-test mAP@0.5 {fmt(base_test['map50'])}, worst-slice recall "
             f"{fmt(base_test['worst_recall'])}.", "",
             "| arm | synthetic mAP@0.5 | synthetic worst-slice recall | hybrid mAP@0.5 | hybrid worst-slice recall |",
             "|---|---|---|---|---|"]
    for arm, name in [(a, n) for a, n in LABELS.items() if arms.get(f"{a} synthetic real-test map50")]:
        lines.append(f"| {arm} ({name}) | {ms(f'{arm} synthetic real-test map50')} | "
                     f"{ms(f'{arm} synthetic real-test worst_recall')} | {ms(f'{arm} hybrid real-test map50')} | "
                     f"{ms(f'{arm} hybrid real-test worst_recall')} |")
    lines += ["", "| paired difference (points, bootstrap 95% CI) | synthetic mAP@0.5 | synthetic worst slice | "
              "hybrid mAP@0.5 | hybrid worst slice |", "|---|---|---|---|---|"]
    for a, b in PAIRS:
        if f"{a}-{b} synthetic real-test map50" in cmp:
            lines.append(f"| {a} − {b} | {pd(f'{a}-{b} synthetic real-test map50')} | "
                         f"{pd(f'{a}-{b} synthetic real-test worst_recall')} | "
                         f"{pd(f'{a}-{b} hybrid real-test map50')} | "
                         f"{pd(f'{a}-{b} hybrid real-test worst_recall')} |")
    lines.append("")
    for arm, key in (("L", "sample_efficiency_per_seed"), ("F", "F sample_efficiency_per_seed")):
        if key in cmp:
            lines.append(f"Sample efficiency (images {arm} needs to reach U's final real-test mAP@0.5 ÷ U's images), "
                         "per seed: " + ", ".join("not reached (or U not above the warm start)" if x is None
                                                  else f"{x:.2f}" for x in cmp[key]))
    lines.append("")
    lines += [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in (cmp.get("targets") or {}).items()]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((axes[0], "map50", "real-test mAP@0.5"), (axes[1], "worst_recall", "worst real-test slice recall"))
    for ax, key, label in panels:
        for arm, name in LABELS.items():
            curves = [r["curve"] for r in rows if r["arm"] == arm]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            x = np.array([curves[0][i]["images"] for i in range(n)], float)
            v = np.array([[c[i][key] if c[i][key] is not None else np.nan for i in range(n)] for c in curves])
            m, s = np.nanmean(v, axis=0), np.nanstd(v, axis=0)
            ax.plot(x, m, marker="o", label=f"{arm} {name}")
            ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_xlabel("synthetic images rendered (after the warm start)")
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


def calibration_params(args: argparse.Namespace, p: dict[str, Any], real: Path) -> tuple[Path, float]:
    """The calibrated base (computed once, on real-val, seed 0; reused when present)."""
    from generator.scenario import load_scenario
    from policy.calibrate import CalibrationOptions, calibrate
    from policy.calibration_report import write_report

    out = Path(args.work) / "calibration" / "params.yaml"
    if args.calibration:
        return Path(args.calibration), 0.0
    if out.is_file():
        return out, 0.0
    t0 = time.perf_counter()
    extra = {k: p[k] for k in ("width", "height") if k in p}
    result = calibrate(load_scenario("digits"), real / "real-val", None,
                       CalibrationOptions(trials=p["calib_trials"], images_per_trial=p["calib_images"], seed=0,
                                          backend=p["backend"], **extra))
    write_report(result, out.parent / "report")
    result.params.save(out)
    return out, time.perf_counter() - t0


def replay_shard(choice: str, base: Path, work: Path) -> Path | None:
    """The replay buffer: ``none``, a shard directory, or ``base`` = the data the base model saw
    (its recipe re-rendered with the same fingerprint when not already in ``WORK/base-data``)."""
    if choice == "none":
        return None
    if choice != "base":
        return Path(choice)
    from flows.loop.base_model import BaseRecipe, read_recipe
    from generator.pipeline import render_shard

    return render_shard(BaseRecipe(**read_recipe(base)["recipe"]).render_job(), work / "base-data", reuse=True).path


def merged_rows(paths: list[Path], preset: str, p: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """The rows of earlier results by (arm, seed), a later file's row winning; each file refused
    unless it was made with the same benchmark version, preset and settings (rows marked ``merged_from``)."""
    rows = {}
    for path in paths:
        old = json.loads(path.read_text())
        for field, want in (("benchmark", "loop_vs_uniform/2"), ("preset", preset), ("settings", p)):
            if old.get(field) != want:
                raise SystemExit(f"--merge: {path} has {field} {old.get(field)!r}, this run {want!r}; "
                                 "merge only results of the same preset and settings")
        for r in old["rows"]:
            rows[(r["arm"], r["seed"])] = {**r, "merged_from": r.get("merged_from") or shown(path)}
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="sizes (default: cpu)")
    ap.add_argument("--seeds", default=None, metavar="N|a,b,...",
                    help="seeds 0..N-1, or an explicit comma list (default: the preset's count)")
    ap.add_argument("--arms", default="U,C,L", help="arms to run (default U,C,L)")
    ap.add_argument("--work", default="runs/loop-vs-uniform", help="work directory (resumable)")
    ap.add_argument("--base-model", default=None, help="warm start (default: the committed digits base model)")
    ap.add_argument("--calibration", default=None, help="a calibrated params file (default: calibrate now)")
    ap.add_argument("--replay", default="base", metavar="DIR|base|none",
                    help="replay shard trained on beside each loop's own shards (default: the base model's "
                         "training data, re-rendered from its recipe into WORK/base-data when absent)")
    ap.add_argument("--eval", action="append", default=[], metavar="NAME=DIR",
                    help="an extra evaluation shard, reported beside real-test (repeatable)")
    ap.add_argument("--merge", action="append", default=[], metavar="RESULT.json",
                    help="an earlier result of this benchmark (same preset and settings): every arm/seed pair "
                         "it holds is taken from it (marked merged_from) instead of being run (repeatable; "
                         "a later file's row wins over an earlier file's)")
    ap.add_argument("--plot", default=None, help="plot path (default: benchmarks/loop_vs_uniform.png)")
    ap.add_argument("--device", default="auto", help="training/inference device: auto, cpu, cuda")
    args = ap.parse_args(argv)
    pairs = []
    for item in args.eval:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path, "manifest.json").is_file():
            ap.error(f"--eval: must be NAME=DIR with DIR a shard (manifest.json), but got {item!r}")
        pairs.append((name, Path(path)))
    args.eval = pairs
    text, items = args.seeds, (args.seeds or "").split(",")
    if text is None:
        pass
    elif "," not in text and text.isdigit() and int(text) > 0:
        args.seeds = list(range(int(text)))
    elif "," in text and all(x.isdigit() for x in items) and len(set(items)) == len(items):
        args.seeds = [int(x) for x in items]
    else:
        ap.error(f"--seeds: must be a count N >= 1 or a comma list of distinct seeds, but got {text!r}")
    for item in args.merge:
        if not Path(item).is_file():
            ap.error(f"--merge: must be an earlier result file of this benchmark, but {item!r} does not exist")
    unknown = [a for a in args.arms.split(",") if a and a not in ARMS]
    if unknown or "U" not in args.arms.split(","):
        ap.error(f"--arms: must be a comma list of {', '.join(ARMS)} including U (the reference), "
                 f"but got {args.arms!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    from flows.loop.base_model import base_model_path
    from flows.loop.steps import prepare_real

    args = parse_args(argv)
    p = PRESETS[args.preset]
    seeds = args.seeds if args.seeds is not None else list(range(p["seeds"]))
    arms = [a for a in args.arms.split(",") if a]
    merged = merged_rows([Path(m) for m in args.merge], args.preset, p)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    work = Path(args.work)
    base = Path(args.base_model) if args.base_model else base_model_path("digits")
    args.replay = replay_shard(args.replay, base, work)
    probe = loop_config(args, p, "U", 0, base, None)
    prepare_real(probe)
    real = probe.real_root
    calibration, calib_s = calibration_params(args, p, real) if set(arms) - {"U"} else (None, 0.0)
    base_test = score(base, real / "real-test", work / "score-base-real-test", "digits", True, p["eval_resamples"])
    rows = [merged.get((arm, seed)) or run_arm(args, p, arm, seed, base, calibration, base_test)
            for seed in seeds for arm in arms]
    names = [n for n, _ in args.eval]
    arm_stats = per_arm(rows, names)
    cmp = compare(rows, names) if {"U", "L"} <= set(arms) else {}
    result = {"benchmark": "loop_vs_uniform/2", "preset": args.preset, "settings": p, "seeds": seeds, "arms": ARMS,
              "finetune_lr": FINETUNE_LR, "base_model": shown(base),
              "replay": shown(args.replay), "calibration": shown(calibration),
              "calibration_s": round(calib_s, 1),
              "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.python_version()}",
              "wall_s": round(time.perf_counter() - t0, 1), "base_real_test": base_test,
              "per_arm": arm_stats, "comparisons": cmp,
              "models": [{"arm": r["arm"], "seed": r["seed"], "kind": k, "path": r["models"][k]}
                         for r in rows for k in ("synthetic", "hybrid")], "rows": rows}
    atomic.write_json(work / "loop_vs_uniform.json", result)
    plot_path = Path(args.plot) if args.plot else Path(__file__).resolve().parent / "loop_vs_uniform.png"
    names_run = " / ".join(a for a in ARMS if a in arms)
    plot(rows, plot_path, f"{names_run} from one warm start, preset {args.preset}, {len(seeds)} seed(s)")
    print(markdown(arm_stats, cmp, base_test))
    print(f"\nwall time {result['wall_s']:.0f} s (calibration {calib_s:.0f} s); {work / 'loop_vs_uniform.json'}; "
          f"plot {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
