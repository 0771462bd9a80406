"""Several loops at once on one set of stores, all on PostgreSQL (issue #13, docs/stores.md).

A session creates three fresh databases on 127.0.0.1:5432 (``synthloop_test_<tag>_{prefect,
mlflow,optuna}``, dropped at the end, failures included), starts a real ``prefect server`` on
the first (``PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://…``) and a real
``mlflow server`` on the second (``--backend-store-uri postgresql+psycopg://…``); the Optuna
storage of every loop is the third. ``synthloop serve --limit 2`` serves the loop deployment;
four tiny loops (seeds 0-3, one registered model) are triggered at once through
``closed-loop/manual``. What must hold: four completed flow runs, never more than two running
at once, per loop one MLflow parent run with exactly one child per iteration, one model version
per iteration (unique numbers, each on its own child run), Optuna trials neither lost nor
duplicated. benchmarks/concurrent_stores.py shows the same writers failing on SQLite files.

Also here: the one-line errors of a wrong or unreachable store URL (quick, no server).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loopcheck
import pytest
import servers

from flows.orchestration.settings import LoopSettings
from generator.errors import ConfigError

SEEDS = (0, 1, 2, 3)
AT_ONCE = 2  # synthloop serve --limit
ITERATIONS = 1  # after the warm start's pre-step ("iteration -1"): two MLflow child runs, two versions, two trials
INIT_MODEL = Path(__file__).resolve().parents[1] / "trainer" / "base_models" / "digits"
CRON = "17 3 1 1 *"  # no scheduled run fires while the test runs
RUN_TIMEOUT_S = 420.0
# real-val large enough for weak slices with evidence: the Optuna policy asks a trial at each decision
REAL_SIZES = {"real-train": 20, "real-val": 120, "real-test": 20}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Stores:
    tag: str
    prefect_api: str
    mlflow_url: str
    study: str  # the Optuna storage URL, shared by every loop
    databases: list[str]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """Three fresh PostgreSQL databases, a Prefect server and an MLflow server on two of them.
    ``SYNTHLOOP_TEST_STORES=sqlite`` runs the same test on the SQLite defaults instead (the
    contrast, run by hand: Prefect's and MLflow's servers on files, the Optuna study in a file)."""
    root = tmp_path_factory.mktemp("pg-stores")
    tag = uuid.uuid4().hex[:10]
    if os.environ.get("SYNTHLOOP_TEST_STORES") == "sqlite":
        with servers.prefect_server(root / "prefect") as api, servers.mlflow_server(root / "mlflow") as mlflow_url:
            yield Stores(tag, api, mlflow_url, f"sqlite:///{root / 'optuna.db'}", [])
        return
    names = [f"synthloop_test_{tag}_{kind}" for kind in ("prefect", "mlflow", "optuna")]
    with servers.postgres_databases(*names) as urls:
        prefect_db = urls[names[0]].replace("postgresql+psycopg://", "postgresql+asyncpg://")
        with servers.prefect_server(root / "prefect", database=prefect_db) as api, \
                servers.mlflow_server(root / "mlflow", backend_store=urls[names[1]]) as mlflow_url:
            yield Stores(tag, api, mlflow_url, urls[names[2]], names)
    assert servers.existing_databases(f"synthloop_test_{tag}") == []


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from generator.real.build import build_real_set

    out = tmp_path_factory.mktemp("pg-real") / "real"
    build_real_set(out, seed=0, sizes=REAL_SIZES)
    return out


def loop_settings(root: Path, real: Path, st: Stores, seed: int) -> dict[str, Any]:
    """The tiny loop (tests/loopcheck.py) with ``seed``, its own work directory and experiment,
    the registered model and the Optuna storage every loop shares; warm-started from the
    committed base model on the fake renderer, so the policy has weak slices to ask trials for."""
    return loopcheck.tiny_settings(root / f"loop-{seed}", real, st.mlflow_url, f"pg-{st.tag}-seed{seed}",
                                   seed=seed, iterations=ITERATIONS, model_name=f"pg-{st.tag}", study=st.study,
                                   init_model=str(INIT_MODEL), backend="fake", images_per_iteration=40,
                                   render_shards=1, steps_per_iteration=2)


@dataclass
class Ran:
    settings: dict[int, dict[str, Any]]  # seed -> the loop's settings
    flow_runs: list[Any]  # the four triggered runs, read back once all ended
    serve_log: Path
    left: list[int]  # processes of the serve group or its tree still alive after it was stopped
    seconds: float


def _flow_runs(ids: list[Any]) -> list[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [client.read_flow_run(i) for i in ids]


def _trigger(settings: dict[str, Any]) -> Any:
    """Trigger closed-loop/manual with ``settings`` (no wait); the flow run's id."""
    from prefect.deployments import run_deployment

    flow_run: Any = run_deployment(name="closed-loop/manual", parameters={"settings": settings}, timeout=0)
    return flow_run.id


def _served() -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name("closed-loop/manual")
        except ObjectNotFound:
            return False
    return True


@pytest.fixture(scope="module")
def ran(stores: Stores, real: Path, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """``synthloop serve --limit 2`` on the PostgreSQL-backed Prefect server; the four loops
    triggered at once through closed-loop/manual; wait until all ended; stop serve."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("pg-loops")
    settings = {seed: loop_settings(root, real, stores, seed) for seed in SEEDS}
    env = servers.prefect_env(stores.prefect_api, root / "prefect-home")
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"  # pick triggered runs up within 2 s, not 10
    log = root / "serve.log"
    cmd = [str(loopcheck.SYNTHLOOP), "serve", "--cron", CRON, "--limit", str(AT_ONCE),
           *loopcheck.set_args(settings[SEEDS[0]])]
    t0 = time.monotonic()
    proc = loopcheck.start_group(cmd, env=env, cwd=root / "cwd", log=log)
    try:
        with temporary_settings({PREFECT_API_URL: stores.prefect_api}):
            loopcheck.wait_for(_served, "closed-loop/manual served", 120, proc=proc, log=log, every=0.5)
            ids = [_trigger(settings[seed]) for seed in SEEDS]
            runs = loopcheck.wait_for(
                lambda: (lambda rs: rs if all(r.state.type.value in TERMINAL for r in rs) else None)(_flow_runs(ids)),
                "the four loops ended", RUN_TIMEOUT_S, proc=proc, log=log, every=2)
    finally:
        servers.stop_group(proc, "synthloop serve")
    return Ran(settings, runs, log, loopcheck.wait_gone(proc), time.monotonic() - t0)


def max_running(runs: list[Any]) -> int:
    """The most flow runs whose [start_time, end_time] overlap at one instant."""
    events = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:  # an end at the same instant as a start counts first (-1 sorts before +1)
        now += step
        most = max(most, now)
    return most


@pytest.mark.servers
@pytest.mark.slow
def test_four_loops_two_at_a_time_share_postgres_backed_stores(ran: Ran, stores: Stores) -> None:
    import optuna

    states = {str(r.id): r.state.type.value for r in ran.flow_runs}
    assert sorted(states.values()) == ["COMPLETED"] * len(SEEDS), \
        f"{states}; serve log:\n{servers.log_tail(ran.serve_log, 60)}"
    assert ran.left == [], f"serve left processes {ran.left} behind"
    # the limit held, and it was used: two ran together at some point
    assert max_running(ran.flow_runs) == AT_ONCE, [(r.start_time, r.end_time) for r in ran.flow_runs]

    versions_seen: list[Any] = []
    children_seen: list[str] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    steps = [-1, *range(ITERATIONS)]  # the warm start's pre-step, then the iterations
    for s in ran.settings.values():
        history = json.loads((Path(s["workdir"]) / "history.json").read_text(encoding="utf-8"))
        assert [e["iteration"] for e in history["iterations"]] == list(range(ITERATIONS))
        # MLflow: one parent, exactly one child per step, nothing lost or duplicated
        t = loopcheck.tracked(stores.mlflow_url, s["experiment"], s["model_name"])
        assert len(t.parents) == 1 and t.parents[0].info.status == "FINISHED"
        assert {k: len(v) for k, v in t.children.items()} == dict.fromkeys(steps, 1)
        assert len(t.runs) == 1 + len(steps), [r.info.run_name for r in t.runs]
        assert all(t.children[k][0].data.tags["mlflow.parentRunId"] == t.parents[0].info.run_id for k in steps)
        children_seen += [t.children[k][0].info.run_id for k in steps]
        versions_seen = t.versions  # the registered model is shared: the same list for every loop
        # Optuna: the loop's study in the shared storage holds exactly the trials its decisions recorded
        study = optuna.load_study(study_name=LoopSettings.build(s).loop_config().study_name, storage=stores.study)
        trials = study.get_trials(deepcopy=False)
        decisions = [history["init"]["decision"], *(e["decision"] for e in history["iterations"])]
        assert [d["trial"] for d in decisions] == list(range(len(decisions))), decisions
        assert [t.number for t in trials] == list(range(len(decisions)))
        assert sorted(int(t.user_attrs["iteration"]) for t in trials) == list(range(len(decisions)))
        # each told its gain when the next report came; the last one waits for the next iteration's
        assert [t.state.name for t in trials] == ["COMPLETE"] * (len(decisions) - 1) + ["RUNNING"]
    # the registry: one version per step of every loop, numbers 1..N without a gap or a repeat, each
    # on its own child run
    numbers = [int(v.version) for v in versions_seen]
    assert sorted(numbers) == list(range(1, len(SEEDS) * len(steps) + 1)), numbers
    assert sorted(v.run_id for v in versions_seen) == sorted(children_seen)


# ---- wrong or unreachable store URLs: one line each, nothing written -------------------------------


@pytest.mark.parametrize(("field", "value", "expect"), [
    ("study", "postgresql+asyncpg://postgres@127.0.0.1:5432/x",
     "loop.study: MLflow and Optuna need a sync driver: use postgresql+psycopg://"),
    ("tracking_uri", "postgres://postgres@127.0.0.1:5432/x",
     "loop.tracking_uri: must start with postgresql"),
    ("study", "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x",
     "loop.study: cannot connect to postgresql+psycopg://postgres:***@127.0.0.1:1/x ("),
])
def test_a_wrong_store_url_is_one_line_without_the_password(tmp_path: Path, field: str, value: str,
                                                             expect: str) -> None:
    with pytest.raises(ConfigError) as err:
        LoopSettings.build({"workdir": str(tmp_path / "loop"), "backend": "fake", field: value}).loop_config()
    msg = str(err.value)
    assert msg.startswith(expect) and "\n" not in msg and "s3cret" not in msg, msg
    assert not (tmp_path / "loop").exists()


@pytest.mark.servers
def test_a_missing_database_names_the_fix_and_stores_create_makes_it(tmp_path: Path) -> None:
    from flows.cli import main

    servers.require_postgres()
    name = f"synthloop_test_{uuid.uuid4().hex[:10]}_cli"
    url = f"{servers.POSTGRES}/{name}"
    with pytest.raises(ConfigError, match=rf"^loop\.study: cannot connect .*{name}.* does not exist.*createdb"):
        LoopSettings.build({"workdir": str(tmp_path / "loop"), "backend": "fake", "study": url}).loop_config()
    try:
        assert main(["stores", "--study", url, "--create"]) == 0
        assert servers.existing_databases(name) == [name]
        assert main(["stores", "--study", url]) == 0  # now it answers
    finally:
        servers.drop_database(name)
    assert servers.existing_databases(name) == []


@pytest.mark.servers
def test_loops_opening_a_fresh_optuna_database_at_once_all_get_it() -> None:
    """Optuna creates its tables on first use; six openers of a fresh PostgreSQL database at
    the same moment used to leave five with `duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"` (found by the four-loop test). policy.study.open_storage retries."""
    import threading

    from policy.study import open_storage

    name = f"synthloop_test_{uuid.uuid4().hex[:10]}_race"
    errors: list[str] = []
    with servers.postgres_databases(name) as urls:
        barrier = threading.Barrier(6)

        def open_it() -> None:
            barrier.wait()
            try:
                open_storage(urls[name]).remove_session()
            except ConfigError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert servers.existing_databases(name) == []
