"""Orchestration overhead: the same loop through the Prefect flow (+ MLflow tracking) and through
plain library calls. Target (issue "The loop as a product"): flow − library <= 5 % of library.

For each ``--shards N`` the same settings run twice, each in a fresh Python process and a fresh
work directory, sharing one real set built first (its build is not timed):

- **library**: ``flows.loop.run.run_loop(cfg)``: the iteration's N shards rendered one after the
  other in this process, then train, evaluate on real-val, policy; no Prefect, no MLflow.
- **flow**: ``with prefect_api(): closed_loop(settings)``, as ``synthloop run`` does it: a
  temporary Prefect server (no ``PREFECT_API_URL``), the N render tasks in the flow's process
  pool (spawned workers), the other steps as tasks in the flow's process, MLflow lineage in a
  sqlite store and Prefect artifacts.

What each number holds (seconds, wall clock):

- ``call_s``: the call alone, measured inside the child (imports of the entry module done
  before; lazily imported libraries such as torch and pyrender inside). For the flow:
  ``prefect_start_s`` + ``flow_s`` + ``prefect_stop_s``.
- ``process_s``: the child process from the parent (interpreter start, all imports, exit).
- flow parts: ``prefect_start_s`` (temporary server start-up), ``prefect_stop_s`` (log flush +
  server stop), ``tracking_s`` (every ``flows.tracking`` call the flow makes: parent run with the
  store's first-use table creation, child runs, params, datasets, metrics, artifacts, images,
  logged model + registry), ``publish_s`` (Prefect artifacts), ``iterations_s`` (the history's
  per-iteration seconds: params → policy, task orchestration and the worker start-up of the
  first render included) and ``other_s`` (the rest: flow/task run bookkeeping, real-data task).
- ``steps``: per step, summed over iterations, from history.json (render = the shards' own
  render time inside their process; worker start-up is not in it).
- ``overhead_pct`` = (flow call_s − library call_s) / library call_s; ``overhead_process_pct``
  the same on process_s.

``--shards 1`` is the like-for-like comparison (one shard either way); with 2 the flow renders
its shards in parallel processes while the library renders them one after the other.

    .venv/bin/python benchmarks/orchestration_overhead.py --preset small --work runs/overhead-small
    .venv/bin/python benchmarks/orchestration_overhead.py --preset demo --work runs/overhead-demo --shards 1 2

Prints the result as JSON and writes it to ``WORK/overhead.json``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # before anything can import OpenGL
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PRESETS: dict[str, dict[str, Any]] = {
    # LoopSettings' embedded defaults (3 iterations x 400 images x 300 steps): what `make demo` runs
    "demo": {},
    "small": {"iterations": 2, "images_per_iteration": 100, "steps_per_iteration": 60,
              "real_sizes": {"real-train": 100, "real-val": 300, "real-test": 100}},
    # a smoke check of this script (seconds of work: the numbers say nothing)
    "tiny": {"iterations": 1, "images_per_iteration": 4, "steps_per_iteration": 2, "batch_size": 2, "width": 64,
             "height": 64, "eval_resamples": 0, "real_sizes": {"real-train": 20, "real-val": 30, "real-test": 20}},
}
TRACKING_CALLS = ("open_loop_run", "open_iteration_run", "log_iteration", "log_model", "close_run")
PUBLISH_CALLS = ("loop_progress", "iteration_artifacts", "update_progress")


def _instrument(module: Any, names: tuple[str, ...], acc: dict[str, float]) -> None:
    """Replace ``module.<name>`` with a wrapper adding its wall time to ``acc[name]``."""
    for name in names:
        fn = getattr(module, name)

        def timed(*args: Any, _fn: Any = fn, _name: str = name, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                acc[_name] = acc.get(_name, 0.0) + time.perf_counter() - t0

        setattr(module, name, timed)


def history_summary(work: Path) -> dict[str, Any]:
    """Per-step seconds summed over iterations, fingerprints and the last real-val mAP@0.5."""
    entries = json.loads((work / "history.json").read_text(encoding="utf-8"))["iterations"]
    steps = {"render": 0.0, "train": 0.0, "evaluate": 0.0, "policy": 0.0}
    for e in entries:
        steps["render"] += e["render"]["seconds"]
        steps["train"] += e["train"]["seconds"]
        steps["evaluate"] += e["evaluate"]["seconds"]
        steps["policy"] += e["decision"]["seconds"]
    return {"iterations": len(entries), "iterations_s": round(sum(e["seconds"] for e in entries), 3),
            "steps": {k: round(v, 3) for k, v in steps.items()},
            "fingerprints": [[s["fingerprint"] for s in e["render"]["shards"]] for e in entries],
            "final_real_val_map50": entries[-1]["evaluate"]["map50"] if entries else None}


def run_library(settings: dict[str, Any]) -> dict[str, Any]:
    from flows.loop.run import run_loop
    from flows.orchestration.settings import LoopSettings

    cfg = LoopSettings.build(settings).loop_config()
    t0 = time.perf_counter()
    run_loop(cfg)
    return {"call_s": round(time.perf_counter() - t0, 3), **history_summary(cfg.work)}


def run_flow(settings: dict[str, Any]) -> dict[str, Any]:
    from flows.orchestration import closed_loop as cl
    from flows.orchestration import publish
    from flows.orchestration.settings import LoopSettings
    from flows.tracking import runs as tracking

    tracked: dict[str, float] = {}
    published: dict[str, float] = {}
    _instrument(tracking, TRACKING_CALLS, tracked)
    _instrument(publish, PUBLISH_CALLS, published)
    s = LoopSettings.build(settings)
    t0 = time.perf_counter()
    api = cl.prefect_api()
    api.__enter__()
    t1 = time.perf_counter()
    try:
        cl.closed_loop(s)
    finally:
        t2 = time.perf_counter()
        stop_error = None
        try:
            api.__exit__(None, None, None)
        except Exception as exc:  # recorded: the loop itself completed
            stop_error = f"{type(exc).__name__}: {exc}"
        t3 = time.perf_counter()
    out = history_summary(Path(s.workdir))
    tracking_s, publish_s = sum(tracked.values()), sum(published.values())
    return {"call_s": round(t3 - t0, 3), "prefect_start_s": round(t1 - t0, 3), "flow_s": round(t2 - t1, 3),
            "prefect_stop_s": round(t3 - t2, 3), "prefect_stop_error": stop_error,
            "tracking_s": round(tracking_s, 3), "tracking_calls_s": {k: round(v, 3) for k, v in tracked.items()},
            "publish_s": round(publish_s, 3),
            "other_s": round((t2 - t1) - out["iterations_s"] - tracking_s - publish_s, 3), **out}


def child_env(work: Path) -> dict[str, str]:
    """No PREFECT_API_URL (a temporary server, as `synthloop run` starts), state under WORK."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    return env


def measure(mode: str, settings: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one mode in a fresh process and work directory; its result with ``process_s``."""
    run_dir = Path(settings["workdir"])
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh work directory each time: nothing reused
    db = Path(settings["tracking_uri"].removeprefix("sqlite:///"))
    db.unlink(missing_ok=True)
    result = work / f"{run_dir.name}.result.json"
    cmd = [sys.executable, __file__, "--work", str(work), "--one", mode, "--settings", json.dumps(settings),
           "--result", str(result)]
    print(f"[overhead] {mode} render_shards={settings['render_shards']} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=child_env(work), check=True, stdout=sys.stderr)
    out = json.loads(result.read_text(encoding="utf-8"))
    out["process_s"] = round(time.perf_counter() - t0, 3)
    print(f"[overhead] {mode}: call {out['call_s']:.1f} s, process {out['process_s']:.1f} s",
          file=sys.stderr, flush=True)
    return out


def compare(library: dict[str, Any], flow: dict[str, Any], shards: int) -> dict[str, Any]:
    def pct(a: float, b: float) -> float:
        return round(100.0 * (b - a) / a, 2)

    return {"render_shards": shards, "library_s": library["call_s"], "flow_s": flow["call_s"],
            "difference_s": round(flow["call_s"] - library["call_s"], 3),
            "overhead_pct": pct(library["call_s"], flow["call_s"]),
            "overhead_process_pct": pct(library["process_s"], flow["process_s"]),
            "overhead_without_prefect_start_pct": pct(library["call_s"], flow["call_s"] - flow["prefect_start_s"]),
            "same_fingerprints": library["fingerprints"] == flow["fingerprints"],
            "library": library, "flow": flow}


def build_real(work: Path, settings: dict[str, Any]) -> tuple[Path, float]:
    from flows.orchestration.settings import LoopSettings
    from generator.real.build import build_real_set

    real = work / "real"
    t0 = time.perf_counter()
    if not all((real / s / "manifest.json").is_file() for s in ("real-train", "real-val", "real-test")):
        cfg = LoopSettings.build({**settings, "workdir": str(work / "unused")}).loop_config()
        build_real_set(real, seed=cfg.real_seed, sizes=cfg.real_sizes, overwrite=True)
    return real, round(time.perf_counter() - t0, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="loop size (default: small)")
    p.add_argument("--work", required=True, help="benchmark directory (real set, work dirs, overhead.json)")
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2], help="render_shards values (default: 1 2)")
    p.add_argument("--one", choices=("library", "flow"), help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:  # child: one measured run
        run = run_library if args.one == "library" else run_flow
        Path(args.result).write_text(json.dumps(run(json.loads(args.settings))), encoding="utf-8")
        return 0
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = dict(PRESETS[args.preset])
    real, real_s = build_real(work, base)
    runs = []
    for shards in args.shards:
        measured = {}
        for mode in ("library", "flow"):
            settings = {**base, "render_shards": shards, "workdir": str(work / f"{mode}-s{shards}"),
                        "real_dir": str(real), "tracking_uri": f"sqlite:///{work / f'mlflow-{mode}-s{shards}.db'}"}
            measured[mode] = measure(mode, settings, work)
        runs.append(compare(measured["library"], measured["flow"], shards))
    result = {"benchmark": "orchestration_overhead", "preset": args.preset, "settings": base,
              "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "real_set_build_s": real_s, "target_pct": 5.0, "runs": runs}
    (work / "overhead.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_end": load}


if __name__ == "__main__":
    sys.exit(main())
