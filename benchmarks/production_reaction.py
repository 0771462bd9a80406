"""Does the loop react to production? Recall on the drifted slice before and after, with and
without the production window, at the same budget and seed.

1. **Champion**: the last model of a loop — built here with the preset (``WORK/champion``), or
   an existing loop given with ``--loop WORK_DIR`` (its Optuna study must live inside it).
2. **Production**: ``simulate_production`` with that model as the deployed one: ``--batches``
   batches drifting to full strength (darker, noisier, busier frames, smaller digits), a share
   of frames with reviewed labels in the log, the others held out (``WORK/production/holdout``,
   never shown to the loop).
3. **Window**: the log ingested and frozen as the monitor does it (``read_window`` →
   ``window_signals`` + ``merge_reports`` against the loop's shards and latest real-val report →
   ``freeze_window``), without Prefect.
4. **Three arms**, each a copy of the loop grown by ``--extra`` iterations (default 2) with the same
   settings and seeds: ``with`` merges the window into every report its policy reads
   (``production=WINDOW``; a mixture loop also re-fits its base to the window's frames,
   :mod:`flows.loop.drift`), ``with-tilt-only`` the same without that re-fit (the
   ablation), ``without`` does not see the window. The first extra iteration renders what the
   loop had already decided (identical in both arms: the ``with`` arm reuses the ``without``
   arm's shard and model by fingerprint); its decision is the first the window steers, so the
   steered data is rendered and trained on from the second extra iteration on.
5. **Measurement**, on the held-out production frames only: recall at the loop's operating
   score threshold on the *drifted slice* (frames with ``drift_level >= --slice-level``, the late
   batches) and overall, for the champion and both arms' final models; plus their real-val
   mAP@0.5 from the loops' histories.

Prints one JSON object and writes it to ``WORK/production_reaction.json``. Re-running with the
same ``--work`` reuses the champion, the stream and the window, and resumes both arms.

    .venv/bin/python benchmarks/production_reaction.py --work runs/reaction   # warm preset
    .venv/bin/python benchmarks/production_reaction.py --seed 1 --work runs/reaction-s1
    .venv/bin/python benchmarks/production_reaction.py --combine runs/reaction*/production_reaction.json \
        --work runs/reaction-all   # mean ± sd over the runs and the paired with − without
    .venv/bin/python benchmarks/production_reaction.py --loop runs/loop --work runs/reaction-loop
    .venv/bin/python benchmarks/production_reaction.py --loop runs/lvu/optuna/seed0 runs/lvu/optuna/seed1 \
        --extra 3 --work runs/reaction-3   # one run per loop, then mean ± sd and the paired difference
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # before anything can import OpenGL

import numpy as np

from flows.loop.run import run_loop
from flows.loop.state import LoopConfig
from generator import atomic
from generator.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # warm: the regime of loop_vs_uniform's cpu preset: the closed loop (bounded mixture policy)
    # warm-started from the committed base model, 3 small rounds (120 images, 50 steps × 32 at lr
    # 5e-4); a 6 × 40-frame stream; 2 arms × 2 extra rounds. ≈ 10 min on 2 idle cores.
    "warm": {"loop": {"iterations": 3, "images_per_iteration": 120, "steps_per_iteration": 50, "batch_size": 32,
                      "lr": 5e-4, "policy": "mixture", "init_model": "base", "render_shards": 1,
                      "eval_resamples": 0, "backend": "pyrender"},
             "batches": 6, "frames_per_batch": 40, "label_share": 0.25},
    # cpu (the first, cold regime): the champion of the old loop_vs_uniform cpu preset (3 × 300
    # images, 200 steps × 32 from scratch; ≈ 2.3 min per iteration on 2 idle cores), a 6 × 40-frame
    # stream (≈ 1 min), then 2 arms × 2 extra iterations (the with-arm's first one reuses shard
    # and model): ≈ 20 min in all, not measured.
    "cpu": {"loop": {"iterations": 3, "images_per_iteration": 300, "steps_per_iteration": 200, "batch_size": 32,
                     "render_workers": 2, "eval_resamples": 0, "backend": "pyrender"},
            "batches": 6, "frames_per_batch": 40, "label_share": 0.25},
    # plumbing check only (fake renderer, tiny sizes): numbers mean nothing
    "smoke": {"loop": {"iterations": 1, "images_per_iteration": 8, "steps_per_iteration": 2, "batch_size": 2,
                       "eval_resamples": 0, "backend": "fake", "width": 64, "height": 64, "num_threads": 1,
                       "device": "cpu", "render_shards": 1,
                       "real_sizes": {"real-train": 20, "real-val": 30, "real-test": 20}},
              "batches": 2, "frames_per_batch": 12, "label_share": 0.5},
}


def champion(args: argparse.Namespace, preset: dict[str, Any]) -> LoopConfig:
    """The loop whose last model is deployed: ``--loop`` as it is, or built with the preset.
    The stream's seed is the loop's seed (``args.seed`` is set to it)."""
    if args.loop is not None:
        try:
            config = json.loads((Path(args.loop) / "history.json").read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"--loop: {args.loop!r} must be a loop work directory with history.json ({exc})") from exc
        cfg = LoopConfig.from_dict({**config, "workdir": str(args.loop), "production": None})
        args.seed = cfg.seed
    else:
        loop = dict(preset["loop"])
        if loop.get("init_model") == "base":  # the committed warm start of the scenario
            from flows.loop.base_model import base_model_path

            loop["init_model"] = str(base_model_path(loop.get("scenario", "digits")))
        cfg = LoopConfig(workdir=str(args.work / "champion"), seed=args.seed, **loop)
    if cfg.study is not None:
        raise ConfigError(f"--loop: the loop's Optuna study must live in its work directory (study=None), but got "
                          f"{cfg.study!r}; the arms copy the work directory and must not share a study")
    run_loop(cfg)  # builds the champion, or finds the given loop complete
    return cfg


def last_model(cfg: LoopConfig) -> Path:
    history = json.loads((cfg.work / "history.json").read_text(encoding="utf-8"))
    return cfg.work / history["iterations"][-1]["train"]["path"]


def simulate(args: argparse.Namespace, preset: dict[str, Any], cfg: LoopConfig) -> Path:
    """The drifting production stream of the champion (reused when already written)."""
    from evaluator.predict import model_identity, open_detector
    from generator.real.camera_log import simulate_production
    from generator.real.camera_stream import StreamConfig

    out = args.work / "production"
    if (out / "manifest.json").is_file():
        return out
    model = last_model(cfg)
    detector = open_detector(model)
    identity = model_identity(model, detector)
    stream = StreamConfig(batches=preset["batches"], frames_per_batch=preset["frames_per_batch"],
                          label_share=preset["label_share"], drift=1.0, seed=args.seed)
    simulate_production(out, detector, str(identity.get("fingerprint") or identity["sha256"])[:16], stream,
                        real_set=cfg.real_root, real_seed=cfg.real_seed, progress=sys.stderr.isatty())
    return out


def freeze(args: argparse.Namespace, cfg: LoopConfig, log: Path) -> Path:
    """Ingest the whole log as one window and freeze it as the monitor does (no commit: the
    benchmark's window is read again identically on a rerun)."""
    from evaluator.production import (
        ProductionOptions,
        Window,
        merge_reports,
        read_window,
        reference_tables,
        window_signals,
    )
    from evaluator.production.frozen import freeze_window
    from evaluator.production.merge import load_val_report
    from flows.loop.run import loop_shards
    from flows.loop.state import LoopHistory
    from generator.scenario import load_scenario

    sc = load_scenario(cfg.scenario)
    history = LoopHistory.open(cfg)
    val = load_val_report(history.resolve(history.entries[-1].evaluate["path"]))
    result = read_window(log, args.work / "ingest-state.json", classes=sc.classes)
    if not isinstance(result, Window):
        raise ConfigError(f"production log {str(log)!r}: no valid records ({result.reason}); simulate it again")
    options = ProductionOptions(score_threshold=cfg.score_threshold, confident=max(0.5, cfg.score_threshold))
    signals = window_signals(result, reference_tables(loop_shards(history)), sc, options, val)
    return freeze_window(result, args.work / "windows", signals, merge_reports(val, signals, sc, options))


def run_arm(cfg: LoopConfig, out: Path, extra: int, window: Path | None, reuse_from: Path | None) -> LoopConfig:
    """A copy of the champion's loop grown by ``extra`` iterations (with or without the window)."""
    n = len(json.loads((cfg.work / "history.json").read_text(encoding="utf-8"))["iterations"])
    if not (out / "history.json").is_file():
        shutil.copytree(cfg.work, out, dirs_exist_ok=True)
    if reuse_from is not None:  # iteration n renders and trains the same in both arms: reuse it
        (out / f"iter_{n}").mkdir(exist_ok=True)
        for item in ("params.yaml", "model", *[p.name for p in (reuse_from / f"iter_{n}").glob("shard-*")]):
            src, dst = reuse_from / f"iter_{n}" / item, out / f"iter_{n}" / item
            if src.exists() and not dst.exists():
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    # real_dir as in the champion: None means the real set copied with the work directory
    arm = replace(cfg, workdir=str(out), iterations=n + extra, production=None if window is None else str(window))
    run_loop(arm)
    return arm


def holdout_recall(model: Path, holdout: Path, threshold: float, level: float) -> dict[str, Any]:
    """Recall at ``threshold`` on the held-out frames: all of them and those with drift_level >= level."""
    from evaluator.matching import match_predictions
    from evaluator.predict import open_detector, predict_shard
    from generator.shard import Shard

    shard = Shard(holdout)
    preds = predict_shard(open_detector(model), shard, progress=False)
    gt = match_predictions(shard.coco, preds, 0.5, threshold).gt
    drifted = {int(i["id"]) for i in shard.coco["images"] if i["conditions"]["drift_level"] >= level}
    sub = gt[gt["image_id"].isin(drifted)]

    def rate(frame: Any) -> float | None:
        return round(float(frame["detected"].mean()), 4) if len(frame) else None

    return {"model": str(model), "recall": rate(gt), "slice_recall": rate(sub), "slice_objects": len(sub),
            "slice_images": len(drifted), "objects": len(gt)}


def _arm_summary(arm: LoopConfig, holdout: Path, level: float) -> dict[str, Any]:
    history = json.loads((arm.work / "history.json").read_text(encoding="utf-8"))["iterations"]
    last = history[-1]
    return {**holdout_recall(arm.work / last["train"]["path"], holdout, arm.score_threshold, level),
            "real_val_map50": last["evaluate"]["map50"], "iterations": len(history),
            "production": [e.get("production") and e["production"]["window"] for e in history],
            "changed": [e["decision"]["changed"] for e in history]}


def measure(args: argparse.Namespace, cfg: LoopConfig, stream: Path, window: Path) -> dict[str, Any]:
    holdout, level = stream / "holdout", args.slice_level
    t0 = time.perf_counter()
    without = run_arm(cfg, args.work / "without", args.extra, None, None)
    with_window = run_arm(cfg, args.work / "with", args.extra, window, args.work / "without")
    # ablation: the window as weak slices only, no re-fit of the base to its frames (mixture/calibrated)
    tilt_only = run_arm(replace(cfg, drift_calibration_trials=0), args.work / "with-tilt-only", args.extra, window,
                        args.work / "without")
    info = json.loads((window / "window.json").read_text(encoding="utf-8"))
    merged = json.loads((window / "report.json").read_text(encoding="utf-8"))
    before = holdout_recall(last_model(cfg), holdout, cfg.score_threshold, level)
    after_with, after_without = _arm_summary(with_window, holdout, level), _arm_summary(without, holdout, level)
    after_tilt = _arm_summary(tilt_only, holdout, level)
    delta = None
    if after_with["slice_recall"] is not None and after_without["slice_recall"] is not None:
        delta = round(after_with["slice_recall"] - after_without["slice_recall"], 4)
    for row in (before, after_with, after_without, after_tilt):  # relative to --work: no machine prefix
        row["model"] = os.path.relpath(row["model"], args.work)
    return {
        "preset": args.preset, "loop": os.path.relpath(cfg.work, args.work), "policy": cfg.policy, "seed": cfg.seed,
        "iterations_before": len(json.loads((cfg.work / "history.json").read_text())["iterations"]),
        "extra_iterations": args.extra, "slice": f"held-out production frames with drift_level >= {level}",
        "window": {"id": info["id"], "frames": info["frames"], "reviewed_frames": info["reviewed_frames"],
                   "drifted": json.loads((window / "signals.json").read_text())["drifted"],
                   "top_weak_slices": [{k: w.get(k) for k in ("condition", "side", "source", "score")}
                                       | {"weight": (w.get("production") or {}).get("weight")}
                                       for w in merged["weak_slices"][:5]]},
        "before": before, "with_window": after_with, "without_window": after_without,
        "with_window_tilt_only": after_tilt,
        "slice_recall_with_minus_without": delta, "seconds": round(time.perf_counter() - t0, 1),
        "note": None if cfg.policy in ("optuna", "mixture") else
        f"policy {cfg.policy!r} ignores reports: the arms can only tie",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="warm", help="sizes (default: warm)")
    ap.add_argument("--work", type=Path, default=Path("runs/production-reaction"), help="output directory")
    ap.add_argument("--loop", nargs="+", default=None,
                    help="existing loop work directories to use as champions (one run each, in WORK/<name> "
                         "when several; the stream's seed is each loop's seed)")
    ap.add_argument("--extra", type=int, default=2, help="iterations each arm adds (default 2; >= 2 to render "
                                                         "the steered data)")
    ap.add_argument("--slice-level", type=float, default=0.5, help="drift_level of the drifted slice (default 0.5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the champion loop and the stream (default 0)")
    ap.add_argument("--combine", nargs="+", type=Path, default=None, metavar="JSON",
                    help="only summarise runs made separately (their production_reaction.json files, e.g. "
                         "one per --seed) into WORK/production_reaction.json")
    args = ap.parse_args(argv)
    if args.extra < 1:
        ap.error("--extra must be >= 1")
    return args


def one_run(args: argparse.Namespace, preset: dict[str, Any]) -> dict[str, Any]:
    args.work.mkdir(parents=True, exist_ok=True)
    cfg = champion(args, preset)
    stream = simulate(args, preset, cfg)
    window = freeze(args, cfg, stream / "log")
    result = atomic.jsonable(measure(args, cfg, stream, window))
    atomic.write_json(args.work / "production_reaction.json", result)
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over runs of the drifted-slice recalls and the paired with − without."""
    def stats(values: list[float]) -> dict[str, Any]:
        a = np.asarray(values, dtype=float)
        return {"mean": round(float(a.mean()), 4), "sd": round(float(a.std(ddof=1)), 4) if a.size > 1 else None,
                "values": [round(float(v), 4) for v in a]}

    def diff(arm: str, rows: list[dict[str, Any]]) -> list[float]:
        return [r[arm]["slice_recall"] - r["without_window"]["slice_recall"] for r in rows]

    out = {k: stats([r[k]["slice_recall"] for r in runs]) for k in ("before", "with_window", "without_window")}
    out["with_minus_without"] = stats(diff("with_window", runs))
    ablated = [r for r in runs if "with_window_tilt_only" in r]  # results before the ablation arm lack it
    if ablated:
        out["with_window_tilt_only"] = stats([r["with_window_tilt_only"]["slice_recall"] for r in ablated])
        out["tilt_only_minus_without"] = stats(diff("with_window_tilt_only", ablated))
    out["real_val_map50"] = {k: stats([r[k]["real_val_map50"] for r in runs])
                             for k in ("with_window", "without_window")}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    loops, root = args.loop or [None], args.work
    runs = []
    if args.combine:
        for path in args.combine:
            try:
                runs.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                raise SystemExit(f"error: --combine: {str(path)!r} must be a production_reaction.json "
                                 f"({exc})") from None
        runs = [r for run in runs for r in run.get("runs", [run])]
        root.mkdir(parents=True, exist_ok=True)
    for loop in [] if args.combine else loops:
        args.loop, args.work = loop, root / Path(loop).name if loop is not None and len(loops) > 1 else root
        runs.append(one_run(args, preset))
    result = runs[0] if len(runs) == 1 else atomic.jsonable({"runs": runs, "summary": summary(runs)})
    atomic.write_json(root / "production_reaction.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
