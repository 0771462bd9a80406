"""Scale-out: the loop's render tasks on the process runner vs Dask (``executor: dask``), same run.

Two measurements, one temporary Prefect server for all of them (``closed_loop.prefect_api``):

1. **Shard set.** ``--images`` images (default 5,000) in ``--shards`` shards of the digits
   scenario at its image size, rendered by the closed loop's own ``render-shard`` task inside a
   small flow, once per runner: the process runner (``ProcessPoolTaskRunner``, as the loop uses it)
   with 1 and 2 worker processes, and a Dask ``LocalCluster`` (``DaskTaskRunner``, processes, one
   thread each) with 1 and 2 workers. Wall time from the flow's call to its return: worker
   start-up, task submission and result transfer included. Each runner renders into a fresh
   directory (the tasks skip Prefect's cache: every run renders).
2. **Loop iteration.** One iteration of the closed loop (``--loop-images`` images in 2 shards,
   ``--loop-steps`` training steps, real-val evaluation, policy, MLflow tracking) with
   ``executor: process`` and ``executor: dask`` (a LocalCluster of 2), each in a fresh work
   directory on one real set built first (not timed): the flow's wall time and history.json's
   iteration seconds.

3. **Evaluation of a large split** (``--eval-images``, default 2,000 images at 128², rendered
   first with the fake backend, not timed): the committed base model
   (``trainer/base_models/digits``) through ``evaluator.run.evaluate_model``, serially in this
   process and in chunks of ``--eval-chunk`` images on a Dask ``LocalCluster`` of 1 and 2 workers
   (``Client.get_executor()``, the path the loop takes on Dask). Wall time of ``evaluate_model``
   with the cluster already up (its start is recorded apart); ``same_report``: the report's
   overall, per-class and slice blocks equal the serial path's.
4. **Calibration** (``--calibrate-trials`` trials of ``--calibrate-images`` images on the real
   set's real-val, pyrender at 128²): ``policy.calibrate.calibrate`` serially and with each
   trial's images in 2 chunks on a 2-worker ``LocalCluster``; ``same_result``: fitted params and
   every trial's objective values equal.

``dask_overhead_1worker_pct`` = (Dask 1 worker − process 1 worker) / process 1 worker, on the
shard set's wall time. The machine, date and command are recorded with the numbers.

    nice -n 5 .venv/bin/python benchmarks/scale_out.py --work runs/scale-out
    .venv/bin/python benchmarks/scale_out.py --work runs/scale-out-small --images 400 --loop-images 100

    nice -n 5 .venv/bin/python benchmarks/scale_out.py --work runs/scale-out --skip-set --skip-loop \
        --json scale_out_parallel.json        # evaluation and calibration only

Prints the result as JSON and writes it to ``WORK/<--json>`` and beside this script
(``benchmarks/<--json>``, default ``scale_out.json``; ``--no-copy`` to skip); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # before anything can import OpenGL
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[scale_out {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def runner(kind: str, workers: int) -> Any:
    from prefect.task_runners import ProcessPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from generator.workers import exit_on_sigint

    if kind == "process":
        return ProcessPoolTaskRunner(max_workers=workers, initializer=exit_on_sigint)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "processes": True, "threads_per_worker": 1,
                                          "dashboard_address": None})


def shard_set(args: argparse.Namespace, kind: str, workers: int) -> dict[str, Any]:
    """Render the shard set through the loop's render task on one runner; wall time and counts."""
    from prefect import flow

    from flows.loop import steps as loop
    from flows.orchestration import closed_loop
    from flows.orchestration.settings import LoopSettings

    work = args.work / f"set-{kind}-{workers}"
    shutil.rmtree(work, ignore_errors=True)
    s = LoopSettings.build({"workdir": str(work), "images_per_iteration": args.images, "render_shards": args.shards,
                            "seed": args.seed, "backend": args.backend})
    cfg = s.loop_config()
    params = loop.starting_params(cfg)
    cfg.iter_dir(0).mkdir(parents=True)
    task = closed_loop.render_shard.with_options(refresh_cache=True)  # render every time

    @flow(name=f"scale-out-{kind}-{workers}", task_runner=runner(kind, workers))
    def render_set() -> list[Any]:
        n = len(loop.part_sizes(cfg.images_per_iteration, cfg.render_shards))
        jobs = [(i, loop.render_job(cfg, 0, params, i).fingerprint(), cfg.iter_dir(0) / f"shard-{i}")
                for i in range(n)]
        return [f.result() for f in [task.submit(cfg, 0, params, i, fp, out) for i, fp, out in jobs]]

    t0 = time.perf_counter()
    steps = render_set()
    wall = time.perf_counter() - t0
    images = sum(r.images for r in steps)
    out = {"runner": kind, "workers": workers, "wall_s": round(wall, 2), "images": images,
           "img_per_s": round(images / wall, 1), "fingerprints": [r.fingerprint for r in steps],
           "task_render_s": round(sum(r.seconds for r in steps), 2)}
    log(f"shard set {kind} x{workers}: {images} images in {wall:.1f} s ({images / wall:.1f} img/s)")
    shutil.rmtree(work, ignore_errors=True)
    return out


def loop_iteration(args: argparse.Namespace, executor: str, real: Path) -> dict[str, Any]:
    from flows.orchestration.closed_loop import loop_flow
    from flows.orchestration.settings import LoopSettings

    work = args.work / f"loop-{executor}"
    shutil.rmtree(work, ignore_errors=True)
    extra = {"dask_workers": 2} if executor == "dask" else {}
    s = LoopSettings.build({"workdir": str(work), "real_dir": str(real), "iterations": 1,
                            "images_per_iteration": args.loop_images, "render_shards": 2,
                            "steps_per_iteration": args.loop_steps, "seed": args.seed, "backend": args.backend,
                            "policy": "uniform", "device": "cpu", "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
                            "executor": executor, **extra})
    t0 = time.perf_counter()
    loop_flow(s)(s)
    wall = time.perf_counter() - t0
    entry = json.loads((work / "history.json").read_text(encoding="utf-8"))["iterations"][0]
    out = {"executor": executor, "workers": 2, "flow_wall_s": round(wall, 2), "iteration_s": entry["seconds"],
           "render_s": entry["render"].get("seconds"),
           "fingerprints": [x["fingerprint"] for x in entry["render"]["shards"]]}
    log(f"loop iteration {executor}: flow {wall:.1f} s, iteration {entry['seconds']:.1f} s")
    return out


def dask_executor(workers: int) -> Any:
    """A started ``LocalCluster`` of ``workers`` one-thread processes and its client."""
    import distributed

    cluster = distributed.LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None)
    return cluster, distributed.Client(cluster, set_as_default=False)


def evaluation(args: argparse.Namespace) -> dict[str, Any]:
    """The base model on a large split: serial, then Dask 1 and 2 workers (chunks)."""
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model
    from generator.params import GenerationParams
    from generator.pipeline import RenderJob, render_shard
    from generator.scenario import load_scenario

    data = args.work / f"eval-split-{args.eval_images}"
    if not (data / "manifest.json").is_file():
        log(f"rendering the {args.eval_images}-image evaluation split (fake backend, not timed)")
        shutil.rmtree(data, ignore_errors=True)
        s = load_scenario("digits")
        render_shard(RenderJob(s, GenerationParams(scenario="digits"), args.eval_images, args.seed, 128, 128, "fake"),
                     data)
    model = HERE.parent / "trainer" / "base_models" / "digits"
    opts = EvalOptions(resamples=200, seed=args.seed)
    runs: list[dict[str, Any]] = []
    serial: Any = None
    for workers in [0, *args.workers]:
        out = args.work / f"eval-report-{workers}"
        t_start = time.perf_counter()
        cluster: Any = None
        client: Any = None
        if workers:
            cluster, client = dask_executor(workers)
        start_s = time.perf_counter() - t_start
        try:
            t0 = time.perf_counter()
            _, ev = evaluate_model(model, data, out, opts, scenario="digits", overwrite=True, progress=False,
                                   executor=client.get_executor() if client else None, chunk_images=args.eval_chunk)
            wall = time.perf_counter() - t0
        finally:
            if client is not None:
                client.close()
                cluster.close()
        row: dict[str, Any] = {"runner": "dask" if workers else "serial", "workers": workers or 1,
                               "wall_s": round(wall, 2), "img_per_s": round(args.eval_images / wall, 1)}
        if workers:
            row["cluster_start_s"] = round(start_s, 2)
            row["same_report"] = all(ev.report[k] == serial.report[k] for k in ("overall", "per_class", "slices")) \
                and ev.matches.preds.equals(serial.matches.preds)
        else:
            serial = ev
        runs.append(row)
        log(f"evaluation {row['runner']} x{row['workers']}: {args.eval_images} images in {wall:.1f} s")
    return {"images": args.eval_images, "size": [128, 128], "chunk_images": args.eval_chunk,
            "model": "trainer/base_models/digits", "bootstrap_resamples": 200, "runs": runs}


def calibration(args: argparse.Namespace, real: Path) -> dict[str, Any]:
    """A calibration serially, then with each trial's images in 2 chunks on a 2-worker LocalCluster."""
    import optuna

    from generator.scenario import load_scenario
    from policy.calibrate import CalibrationOptions, calibrate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = load_scenario("digits")
    opts = CalibrationOptions(trials=args.calibrate_trials, images_per_trial=args.calibrate_images, seed=args.seed,
                              backend=args.backend)
    runs: list[dict[str, Any]] = []
    outcomes = []
    for workers in (0, 2):
        cluster, client = dask_executor(workers) if workers else (None, None)  # type: Any, Any
        try:
            t0 = time.perf_counter()
            r = calibrate(s, real / "real-val", None, opts, executor=client.get_executor() if client else None,
                          chunks=max(1, workers))
            wall = time.perf_counter() - t0
        finally:
            if client is not None:
                client.close()
                cluster.close()
        outcomes.append((r.params.to_dict(), [(t.distance, t.per_condition) for t in r.trials]))
        runs.append({"runner": "dask" if workers else "serial", "workers": workers or 1, "wall_s": round(wall, 2)})
        log(f"calibration {runs[-1]['runner']} x{runs[-1]['workers']}: {wall:.1f} s")
    runs[-1]["same_result"] = outcomes[0] == outcomes[1]
    return {"trials": opts.trials, "images_per_trial": opts.images_per_trial, "size": [128, 128],
            "backend": args.backend, "runs": runs,
            "speedup_2workers": round(runs[0]["wall_s"] / runs[1]["wall_s"], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/scale-out"), help="output directory")
    ap.add_argument("--images", type=int, default=5000, help="images in the shard set (default 5000)")
    ap.add_argument("--shards", type=int, default=8, help="shards in the set (default 8)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    ap.add_argument("--loop-images", type=int, default=400, help="images per loop iteration (default 400)")
    ap.add_argument("--loop-steps", type=int, default=60, help="training steps per loop iteration (default 60)")
    ap.add_argument("--skip-loop", action="store_true", help="only the shard set")
    ap.add_argument("--skip-set", action="store_true", help="only the loop iteration")
    ap.add_argument("--backend", default="pyrender")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-eval", action="store_true", help="no evaluation of a large split")
    ap.add_argument("--skip-calibrate", action="store_true", help="no calibration")
    ap.add_argument("--eval-images", type=int, default=2000, help="images in the evaluation split (default 2000)")
    ap.add_argument("--eval-chunk", type=int, default=500, help="images per evaluation chunk (default 500)")
    ap.add_argument("--calibrate-trials", type=int, default=12, help="calibration trials (default 12)")
    ap.add_argument("--calibrate-images", type=int, default=48, help="images per calibration trial (default 48)")
    ap.add_argument("--json", default="scale_out.json", help="result file name (default scale_out.json)")
    ap.add_argument("--no-copy", action="store_true", help="do not write benchmarks/<--json>")
    args = ap.parse_args(argv)
    args.work = args.work.absolute()
    args.work.mkdir(parents=True, exist_ok=True)

    from flows.orchestration.closed_loop import prefect_api

    result: dict[str, Any] = {
        "benchmark": "scale_out", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/scale_out.py", *(argv if argv is not None else sys.argv[1:])]).replace(
            str(args.work), "WORK"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"images": args.images, "shards": args.shards, "backend": args.backend,
                     "loop_images": args.loop_images, "loop_steps": args.loop_steps,
                     "eval_images": args.eval_images, "eval_chunk": args.eval_chunk,
                     "calibrate_trials": args.calibrate_trials, "calibrate_images": args.calibrate_images},
    }
    def save() -> str:  # after every measurement: what is done survives a later failure
        result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        text = json.dumps(result, indent=1)
        (args.work / args.json).write_text(text + "\n", encoding="utf-8")
        if not args.no_copy:
            (HERE / args.json).write_text(text + "\n", encoding="utf-8")
        return text

    with prefect_api():
        if not args.skip_set:
            sets: list[dict[str, Any]] = []
            result["shard_set"] = sets
            for n in args.workers:
                for kind in ("process", "dask"):
                    sets.append(shard_set(args, kind, n))
                    save()
            by = {(r["runner"], r["workers"]): r for r in sets}
            if ("process", 1) in by and ("dask", 1) in by:
                p1, d1 = by[("process", 1)]["wall_s"], by[("dask", 1)]["wall_s"]
                result["dask_overhead_1worker_pct"] = round(100 * (d1 - p1) / p1, 1)
            result["same_fingerprints"] = len({tuple(r["fingerprints"]) for r in sets}) == 1
        real = args.work / "real"
        if not (args.skip_loop and args.skip_calibrate) and not (real / "real-val").is_dir():
            from generator.real.build import build_real_set

            log("building the real set (not timed)")
            build_real_set(real, seed=0)
        if not args.skip_loop:
            loops: list[dict[str, Any]] = []
            result["loop_iteration"] = loops
            for ex in ("process", "dask"):
                loops.append(loop_iteration(args, ex, real))
                save()
    if not args.skip_eval:
        result["evaluation"] = evaluation(args)
        ev = {(r["runner"], r["workers"]): r["wall_s"] for r in result["evaluation"]["runs"]}
        result["evaluation"]["ratios"] = {f"serial/dask{n}": round(ev[("serial", 1)] / ev[("dask", n)], 2)
                                          for r, n in ev if r == "dask"}
        save()
    if not args.skip_calibrate:
        result["calibration"] = calibration(args, args.work / "real")
        save()
    print(save())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
