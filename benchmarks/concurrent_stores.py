"""Concurrent writers on the loop's stores: SQLite files vs PostgreSQL (issue #13, docs/stores.md).

Several loops at once write to one MLflow tracking store and one Optuna storage. This drives
``--writers`` processes at once (released together by a barrier once each has imported its
library and opened the store), each doing ``--ops`` operations of the kind a loop iteration does:

- **mlflow**: ``create_run`` + ``log_batch`` (5 params, 5 metrics) + ``set_terminated``, through
  ``MlflowClient(tracking_uri=<store URL>)`` — the loop's own path when ``tracking_uri`` is a
  database (``sqlite:///…`` is the loop's default).
- **optuna**: ``study.ask()`` + ``study.tell(value)`` on one shared study through
  ``RDBStorage(<URL>)`` — the loop's ``study`` setting (``WORK/policy.db`` by default).

on each ``--stores`` backend: ``sqlite`` (a fresh file) and ``postgres`` (a fresh database on
``--postgres``, dropped afterwards). Per case: operations that succeeded, errors by message
(``database is locked`` …), wall time and successful operations per second, and what the store
holds afterwards — finished runs / complete trials vs. successes, half-written runs (RUNNING)
or trials (RUNNING: asked, never told), duplicated trial numbers.

    nice -n 5 .venv/bin/python benchmarks/concurrent_stores.py --writers 8 --ops 25 \\
        --out benchmarks/concurrent_stores.json

Prints the result as JSON (machine, date, command, versions included) and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.orchestration.stores import create_database, drop_database

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

KINDS = ("mlflow", "optuna")
STORES = ("sqlite", "postgres")
STUDY = "bench"
EXPERIMENT = "bench"


def _error_key(exc: BaseException) -> str:
    """A short, stable label for an error (numbers and ids removed) to count them by."""
    orig = getattr(exc, "orig", None) or exc
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    text = re.sub(r"[0-9a-f]{32}", "<id>", text)
    text = re.sub(r"\d+", "N", text)
    return f"{type(orig).__name__}: {text[:140]}"


def _quiet() -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:
        pass


def setup(kind: str, url: str) -> str:
    """Create the store's tables and the experiment / study, in one process; its id."""
    _quiet()
    if kind == "mlflow":
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=url)
        return str(c.create_experiment(EXPERIMENT, artifact_location=tempfile.mkdtemp(prefix="bench-art-")))
    import optuna

    optuna.create_study(storage=url, study_name=STUDY, direction="maximize")
    return STUDY


def _mlflow_op(c: Any, exp: str, worker: int, i: int) -> None:
    from mlflow.entities import Metric, Param

    run = c.create_run(exp, run_name=f"w{worker}-{i}")
    now = int(time.time() * 1000)
    c.log_batch(run.info.run_id, params=[Param(f"p{j}", str(j * i)) for j in range(5)],
                metrics=[Metric(f"m{j}", float(i + j), now, 0) for j in range(5)])
    c.set_terminated(run.info.run_id)


def worker(kind: str, url: str, exp: str, ops: int, idx: int, barrier: Any, out: Any) -> None:
    """One writer: open the store, wait for the others, do ``ops`` operations, report."""
    _quiet()
    errors: Counter[str] = Counter()
    ok = 0
    try:
        if kind == "mlflow":
            from mlflow import MlflowClient

            handle: Any = MlflowClient(tracking_uri=url)
            handle.get_experiment(exp)  # opens the store before the clock starts
        else:
            import optuna

            handle = optuna.load_study(study_name=exp, storage=url)
    except Exception as exc:  # counted, like every other failure
        errors[f"open: {_error_key(exc)}"] += 1
        handle = None
    barrier.wait()
    t0 = time.perf_counter()
    for i in range(ops if handle is not None else 0):
        try:
            if kind == "mlflow":
                _mlflow_op(handle, exp, idx, i)
            else:
                trial = handle.ask()
                handle.tell(trial, float(idx * 1000 + i))
            ok += 1
        except Exception as exc:  # counted by message
            errors[_error_key(exc)] += 1
    out.put({"worker": idx, "ok": ok, "errors": dict(errors), "start": t0, "end": time.perf_counter()})


def audit(kind: str, url: str, exp: str) -> dict[str, Any]:
    """What the store holds afterwards."""
    _quiet()
    if kind == "mlflow":
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=url)
        runs = []
        token = None
        while True:
            page = c.search_runs([exp], max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        status = Counter(r.info.status for r in runs)
        names = Counter(r.info.run_name for r in runs)
        return {"finished": status.get("FINISHED", 0), "half_written": status.get("RUNNING", 0),
                "duplicated": sum(n - 1 for n in names.values() if n > 1)}
    import optuna

    trials = optuna.load_study(study_name=exp, storage=url).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    numbers = Counter(t.number for t in trials)
    return {"finished": states.get("COMPLETE", 0), "half_written": states.get("RUNNING", 0),
            "duplicated": sum(n - 1 for n in numbers.values() if n > 1)}


def run_case(store: str, kind: str, writers: int, ops: int, postgres: str, tmp: Path) -> dict[str, Any]:
    """One store kind on one backend: set up, run the writers, audit, clean up."""
    db = f"synthloop_bench_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp / f'{kind}-{db}.db'}" if store == "sqlite" else f"{postgres}/{db}"
    if store == "postgres":
        create_database("--postgres", url)
    ctx = mp.get_context("spawn")
    try:
        with ctx.Pool(1) as pool:  # tables created in a process of their own, as a first loop would
            exp = pool.apply(setup, (kind, url))
        barrier, out = ctx.Barrier(writers), ctx.Queue()
        procs = [ctx.Process(target=worker, args=(kind, url, exp, ops, i, barrier, out)) for i in range(writers)]
        for p in procs:
            p.start()
        results = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
        with ctx.Pool(1) as pool:
            held = pool.apply(audit, (kind, url, exp))
    finally:
        if store == "postgres":
            drop_database("--postgres", url)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    ok = sum(r["ok"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"store": store, "kind": kind, "writers": writers, "ops_per_writer": ops, "attempted": writers * ops,
            "ok": ok, "failed": sum(errors.values()), "errors": dict(errors.most_common()),
            "wall_s": round(wall, 2), "ok_per_s": round(ok / wall, 1) if wall > 0 else None,
            "store_holds": held, "lost": max(0, ok - held["finished"])}


def _versions(postgres: str | None) -> dict[str, str]:
    from importlib.metadata import version

    out = {p: version(p) for p in ("mlflow", "optuna", "SQLAlchemy", "psycopg")}
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    if postgres:
        import sqlalchemy as sa

        engine = sa.create_engine(f"{postgres}/postgres", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            out["postgresql"] = " ".join(str(conn.execute(sa.text("SELECT version()")).scalar()).split()[:2])
        engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--writers", type=int, default=8, help="processes writing at once (default 8)")
    p.add_argument("--ops", type=int, default=25, help="operations per writer (default 25)")
    p.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                   help="server URL without a database; a fresh database is created and dropped per case")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.writers < 1 or args.ops < 1:
        p.error(f"--writers and --ops: must be integers >= 1, but got {args.writers} and {args.ops}")
    cases = []
    with tempfile.TemporaryDirectory(prefix="concurrent-stores-") as tmp:
        for kind in args.kinds:
            for store in args.stores:
                print(f"{kind} on {store}: {args.writers} writers x {args.ops} ops ...", file=sys.stderr, flush=True)
                case = run_case(store, kind, args.writers, args.ops, args.postgres, Path(tmp))
                print(f"  ok {case['ok']}/{case['attempted']}, {case['ok_per_s']} ok/s, errors {case['errors']}",
                      file=sys.stderr, flush=True)
                cases.append(case)
    result = {
        "benchmark": "concurrent_stores",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "machine": {"host": socket.gethostname(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": _versions(args.postgres if "postgres" in args.stores else None),
        "cases": cases,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        tmp_out = args.out.with_name(f".{args.out.name}.tmp")
        tmp_out.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp_out, args.out)  # atomic
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
