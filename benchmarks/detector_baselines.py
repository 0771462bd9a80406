"""Detector baselines on the built-in real set (issue: real data, training, failure analysis).

One run measures, at one stated training budget (optimizer steps × batch size):
  sanity  synthetic-only on N uniform digits images → mAP@0.5 on a held-out synthetic shard
          of the same distribution (proves the detector learns; target >= 0.7)
  (a)     synthetic-only (uniform parameters)                 → real-test
  (b)     real-train only                                      → real-test
  (c)     real-train + real-val (upper reference: more real)   → real-test
  (d)     (a)'s checkpoint fine-tuned on real-train            → real-test
plus training throughput (images/s) and wall time of every stage. real-test is read only
here, with final_report=True: these are reference numbers, not a loop decision.

Usage: python benchmarks/detector_baselines.py --work runs/bench [--n 5000] [--steps 3000]
Prints a JSON document and writes it to WORK/baselines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from evaluator.evaluate import EvalOptions
from evaluator.run import evaluate_model
from generator.params import uniform_params
from generator.pipeline import RenderJob, render_shard
from generator.real.build import build_real_set
from generator.scenario import load_scenario
from trainer.api import train


def timed(fn: Any, *a: Any, **kw: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, round(time.perf_counter() - t0, 1)


def score(model: Path, data: Path, out: Path, final: bool) -> dict[str, Any]:
    opts = EvalOptions(resamples=200)
    (_, ev), secs = timed(evaluate_model, model, data, out, opts, scenario="digits", final_report=final,
                          overwrite=True, progress=False)
    o = ev.report["overall"]
    weak = ev.report.get("weak_slices") or []
    worst = min((s["recall"] for s in ev.report.get("slices", []) if s.get("recall") is not None), default=None)
    return {"map50": round(o["map50"], 4), "map": round(o["map"], 4), "recall": round(o["recall"], 4),
            "worst_slice_recall": None if worst is None else round(worst, 4),
            "top_weak": [f"{w['condition']} {w['side']} {w['recall']:.2f}" for w in weak[:3]], "eval_s": secs}


def _same_budget(model: Path, steps: int) -> bool:
    try:
        return int(json.loads((model / "model.json").read_text())["steps"]) == steps
    except (OSError, ValueError, KeyError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/bench")
    ap.add_argument("--n", type=int, default=5000, help="synthetic training images")
    ap.add_argument("--val-n", type=int, default=1000, help="synthetic validation images")
    ap.add_argument("--steps", type=int, default=3000, help="optimizer steps per training run")
    ap.add_argument("--finetune-steps", type=int, default=750)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="a,b,c,d", help="which of a,b,c,d to run (d needs a)")
    ap.add_argument("--reuse-models", action="store_true",
                    help="keep a model already in WORK trained with the same steps (its train time is not re-measured)")
    ap.add_argument("--pretrained", default=None,
                    help="(a)'s checkpoint for (d) when (a) is not run now (default: WORK/model-a_synthetic_only)")
    args = ap.parse_args()
    wanted = set(args.runs.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    s = load_scenario("digits")
    res: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} cores, CPU", "args": vars(args)}
    syn, t = timed(render_shard, RenderJob(s, uniform_params(s), args.n, args.seed, 128, 128), work / "syn-train",
                   workers=args.workers, reuse=True)
    res["render_train_s"] = t
    val, t = timed(render_shard, RenderJob(s, uniform_params(s), args.val_n, args.seed + 1, 128, 128), work / "syn-val",
                   workers=args.workers, reuse=True)
    res["render_val_s"] = t
    real = work / "real"
    if not (real / "real-test" / "manifest.json").is_file():
        _, res["build_real_s"] = timed(build_real_set, real, seed=args.seed, overwrite=True)
    budget = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "overwrite": True}
    runs = {
        "a_synthetic_only": ([str(syn.path)], {"strategy": "synthetic-only"}),
        "b_real_train_only": ([str(real / "real-train")], {"strategy": "real-only"}),
        "c_real_train_plus_val": ([str(real / "real-train"), str(real / "real-val")], {"strategy": "real-only"}),
    }
    for name, (data, kw) in runs.items():
        if name[0] not in wanted:
            continue
        out = work / f"model-{name}"
        if args.reuse_models and _same_budget(out, args.steps):
            meta = json.loads((out / "model.json").read_text())
            res[name] = {"train_s": "reused", "img_s": None, "final_loss": round(meta["final_loss"], 4),
                         "real_test": score(out, real / "real-test", work / f"rep-{name}", True)}
            print(name, json.dumps(res[name]), flush=True)
            continue
        r, t = timed(train, data, out, **budget, **kw)
        res[name] = {"train_s": t, "img_s": round(r.images_per_s, 1), "final_loss": round(r.final_loss, 4),
                     "real_test": score(work / f"model-{name}", real / "real-test", work / f"rep-{name}", True)}
        if name == "a_synthetic_only":
            res["sanity_synthetic_val"] = score(work / f"model-{name}", val.path, work / "rep-sanity", False)
        print(name, json.dumps(res[name]), flush=True)
    if "d" not in wanted:
        (work / "baselines.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    pre = Path(args.pretrained) if args.pretrained else work / "model-a_synthetic_only"
    r, t = timed(train, [str(real / "real-train")], work / "model-d_pretrain_finetune", strategy="real-only",
                 steps=args.finetune_steps, batch_size=args.batch_size, seed=args.seed, overwrite=True,
                 init=pre)
    res["d_pretrain_finetune"] = {"train_s": t, "finetune_steps": args.finetune_steps, "init": str(pre),
                                  "real_test": score(work / "model-d_pretrain_finetune", real / "real-test",
                                                     work / "rep-d", True)}
    (work / "baselines.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
