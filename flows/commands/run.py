"""``synthloop run``: run (or resume) the closed loop as a Prefect flow, tracked in MLflow.

Settings come from the embedded defaults (flows/orchestration/settings.py), then ``--config FILE`` (YAML),
then the options below, then ``--set key=value`` for any other setting. Without
``PREFECT_API_URL`` Prefect starts a temporary local server for the run; with it the run is
recorded on that server. Running the same loop (same work directory and settings) again
continues after its last completed iteration; ``--iterations`` may grow.
"""

from __future__ import annotations

import argparse
from typing import Any

from generator.errors import field_error

OPTIONS = (("workdir", str, "the loop's work directory (default: runs/loop)"),
           ("iterations", int, "iterations to complete (default: 3)"),
           ("images_per_iteration", int, "images rendered per iteration (default: 400)"),
           ("steps_per_iteration", int, "training steps per iteration (default: 300)"),
           ("policy", str, "optuna | mixture | refit | calibrated | uniform | fixed (default: optuna; "
                           "docs/policy.md)"),
           ("strategy", str, "synthetic-only | mixed (default: synthetic-only)"),
           ("seed", int, "the loop's seed (default: 0)"),
           ("tracking_uri", str, "MLflow tracking URI (default: sqlite:///runs/mlflow.db)"),
           ("study", str, "Optuna storage URL (default: WORK/policy.db)"),
           ("init_model", str, "warm start: a model directory (`synthloop train --out`) the loop improves; "
                               "evaluated on real-val before iteration 0 renders (default: none)"),
           ("policy_base", str, "policies mixture, refit, calibrated: the calibrated base, a params file "
                                "(`synthloop calibrate --out`) or 'calibrate' (the loop fits it to real-val "
                                "first; default: none, i.e. uniform)"),
           ("executor", str, "where the render tasks run: process (this machine's process pool, the default) | "
                             "dask (a local Dask cluster, or the scheduler at --dask-address; "
                             "docs/orchestration.md, 'Scaling out')"),
           ("dask_address", str, "executor dask: an existing scheduler, e.g. tcp://HOST:8786, whose workers "
                                 "mount the work directory at the same path (default: a local cluster)"))
ALIASES = {"init_model": ["--init"], "policy_base": ["--base"]}  # shorter names: --init MODEL, --base PARAMS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run or resume the closed loop (Prefect flow, MLflow lineage)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--config", help="YAML file of loop settings (any field of flows/orchestration/settings.py)")
    for name, kind, text in OPTIONS:
        p.add_argument(*ALIASES.get(name, []), "--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                       help=text)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting, value parsed as YAML (e.g. --set batch_size=16); repeatable")
    p.set_defaults(func=run)


def parse_sets(items: list[str]) -> dict[str, Any]:
    from flows.orchestration.settings import set_value

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise field_error("--set", "must be KEY=VALUE", item, "e.g. --set batch_size=16")
        out[key.strip().replace("-", "_")] = set_value(key.strip(), value)
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| iteration | images rendered | real-val mAP@0.5 | real-val recall | weakest slice | parameters changed |")
    print("|---|---|---|---|---|---|")
    def f(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    for r in rows:
        changed = ", ".join(r["changed"][:4]) + (" …" if len(r["changed"]) > 4 else "") or "–"
        print(f"| {r['iteration']} | {r['images_rendered']} | {f(r['real_val_map50'])} | {f(r['real_val_recall'])} "
              f"| {r['weakest'] or '–'} | {changed} |")


def verdict(rows: list[dict[str, Any]]) -> str:
    """One honest sentence on whether real-val improved over the loop."""
    vals = [r["real_val_map50"] for r in rows if r["real_val_map50"] is not None]
    if len(vals) < 2:
        return "one iteration only: nothing to compare yet."
    first, last, best = vals[0], vals[-1], max(vals)
    # a warm start's first row is the init model (the bar to beat), when it has a number
    warm = next(r["iteration"] for r in rows if r["real_val_map50"] is not None) == "init"
    start = "the init model" if warm else "iteration 0"
    if last > first:
        return f"real-val mAP@0.5 went from {first:.3f}{' (the init model)' if warm else ''} to {last:.3f} " \
               f"(best {best:.3f})."
    return f"real-val mAP@0.5 did NOT improve: {first:.3f} at {start}, {last:.3f} at the end."


def print_plan(settings: Any, cfg: Any) -> None:
    """What this run is about to do and about how long it should take (flows/loop/plan.py), on stderr."""
    import sys

    from flows.loop.plan import completed_iterations, plan_run

    target = completed_iterations(cfg) + settings.add_iterations if settings.add_iterations else None
    for line in plan_run(cfg, iterations=target).lines():
        print(line, file=sys.stderr, flush=True)
    if cfg.device != "cpu":  # after the plan: importing torch takes seconds on a busy machine
        import torch

        if torch.cuda.is_available():
            print("plan: CUDA is available: training runs there, faster than this CPU estimate",
                  file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from flows.loop import lock
    from flows.orchestration.closed_loop import loop_flow, prefect_api, tracking_for
    from flows.orchestration.executor import check_cluster
    from flows.orchestration.settings import LoopSettings

    given = {name: getattr(args, name) for name, _, _ in OPTIONS if getattr(args, name) is not None}
    settings = LoopSettings.from_file(args.config, **{**given, **parse_sets(args.sets)})  # --set last
    if "progress" not in settings.model_fields_set:  # the CLI shows progress unless told not to
        settings = settings.model_copy(update={"progress": True})
    cfg = settings.loop_config()
    check_cluster(settings, cfg.work)  # executor dask with dask_address: workers see the work directory
    # the lock before the server starts; the plan once the loop is ours (a busy loop: one line)
    with lock.hold(cfg.work, settings.wait_for_loop_s):
        print_plan(settings, cfg)
        with prefect_api():
            rows = loop_flow(settings)(settings)  # on the executor's task runner (flows/orchestration/executor.py)
    print_table(rows)
    print(f"\n{verdict(rows)}")
    t = tracking_for(settings, cfg)
    print(f"\nwork directory: {cfg.workdir} (history.json, iter_*/report/report.md)")
    print(f"MLflow UI:      mlflow ui --backend-store-uri {t.uri}   (experiment {t.experiment!r}, "
          f"model {t.model_name!r}@champion)")
    if cfg.policy == "optuna":
        study = cfg.study_url if "://" in cfg.study_url else f"sqlite:///{cfg.study_url}"
        print(f"Optuna:         optuna-dashboard {study}   (study {cfg.study_name!r})")
    print(f"lineage:        synthloop lineage models:/{t.model_name}@champion --tracking-uri {t.uri}")
    return 0
