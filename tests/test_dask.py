"""The loop's render tasks on Dask (``executor: dask``, flows/orchestration/executor.py), on loopback.

A real cluster, started here like a user starts one: ``dask scheduler`` and two ``dask worker
--nthreads 1`` processes (one with ``--resources GPU=1``), each in its own process group and
registered with tests/servers.py, so ``servers.stop_all()`` finds any left over. The flow joins
it with ``dask_address`` and renders its shards with the real pyrender backend (EGL/llvmpipe).

What a user relies on: the shards are those the process runner renders (same fingerprints, same
geometry); ``dask_gpu`` keeps renders on GPU workers when joining an existing cluster (the path
prefect-dask#47 reported broken); a worker SIGKILLed mid-render costs a retry, not the loop; a
cluster whose workers cannot see the work directory is refused in one line, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import servers
from test_flow import prefect, settings  # noqa: F401  (module fixtures, reused)

from flows.loop import steps as loop
from generator.errors import ConfigError

BIN = Path(sys.executable).parent


def synthloop(*args: str) -> tuple[int, list[str]]:
    """``synthloop ARGS`` in a process of its own (as a user runs it): exit status, stderr lines."""
    proc = subprocess.run([str(BIN / "synthloop"), *args], env=worker_env(), capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stderr.strip().splitlines()


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYOPENGL_PLATFORM="egl", OMP_WAIT_POLICY="PASSIVE", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


@contextmanager
def dask_scheduler(log_dir: Path) -> Iterator[str]:
    """``dask scheduler`` on 127.0.0.1 (a free port; health on its HTTP port); yields its address."""
    port, http = servers.free_port(), servers.free_port()
    cmd = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
           "--dashboard-address", f"127.0.0.1:{http}", "--no-show"]
    with servers.serve_process(cmd, env=worker_env(), log=log_dir / "scheduler.log",
                               health_url=f"http://127.0.0.1:{http}/health", what=f"dask scheduler on {port}"):
        yield f"tcp://127.0.0.1:{port}"


@contextmanager
def dask_worker(address: str, log: Path, *extra: str, wrap: list[str] | None = None
                ) -> Iterator[subprocess.Popen[bytes]]:
    """One ``dask worker --nthreads 1 --no-nanny`` (its process is the worker: a SIGKILL ends it,
    no nanny brings it back), optionally under ``wrap`` (e.g. ``unshare``); yields the process."""
    http = servers.free_port()
    cmd = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
           "--dashboard-address", f"127.0.0.1:{http}", *extra]
    if wrap:  # a shell prefix that ends in `exec`: the worker replaces it
        cmd = [*wrap[:-1], f"{wrap[-1]} {' '.join(cmd)}"]
    with servers.serve_process(cmd, env=worker_env(), log=log, health_url=f"http://127.0.0.1:{http}/health",
                               what=f"dask worker ({log.stem})") as proc:
        yield proc


def wait_workers(address: str, n: int, timeout: float = 60.0) -> dict[str, Any]:
    import distributed

    with distributed.Client(address, timeout=10, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=timeout)
        return dict(client.scheduler_info(n_workers=-1)["workers"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A scheduler and two single-thread workers: ``gpu`` (offers GPU=1, though it renders on
    llvmpipe like the other: Dask resources are labels) and ``cpu``."""
    logs = tmp_path_factory.mktemp("dask-logs")
    with ExitStack() as stack:
        address = stack.enter_context(dask_scheduler(logs))
        procs = {name: stack.enter_context(dask_worker(address, logs / f"{name}.log", "--name", name, *extra))
                 for name, extra in (("gpu", ("--resources", "GPU=1")), ("cpu", ()))}
        workers = wait_workers(address, 2)
        yield {"address": address, "procs": procs, "logs": logs,
               "addr": {info["name"]: addr for addr, info in workers.items()}}


def ran_on(address: str, prefix: str) -> dict[str, list[str]]:
    """The keys starting with ``prefix`` each worker has run (its transition log)."""
    import distributed

    def keys(dask_worker: Any) -> list[str]:
        return sorted({str(entry[0]) for entry in dask_worker.state.log
                       if str(entry[0]).startswith(prefix) and "executing" in entry})

    with distributed.Client(address, timeout=10, set_as_default=False) as client:
        return client.run(keys)


def shards_of(work: Path) -> list[dict[str, Any]]:
    history = json.loads((work / "history.json").read_text())
    return [s for e in history["iterations"] for s in e["render"]["shards"]]


def leftovers(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in work.rglob(".tmp-*"))


# -- settings: one line naming the field, before anything is contacted or written -------------------------

@pytest.mark.parametrize(("over", "words"), [
    ({"executor": "ray"}, "loop.executor: must be one of ['process', 'dask'], but got 'ray'"),
    ({"dask_address": "tcp://127.0.0.1:8786"}, "loop.dask_address: applies to executor 'dask' only"),
    ({"executor": "dask", "dask_address": "not an address"}, "loop.dask_address: must be a Dask scheduler address"),
    ({"executor": "dask", "dask_workers": 0}, "loop.dask_workers: must be an integer >= 1"),
    ({"executor": "dask", "dask_gpu": True}, "loop.dask_gpu: needs dask_address"),
    ({"executor": "dask", "eval_chunk_images": 0}, "loop.eval_chunk_images: must be an integer >= 1, but got 0"),
])
def test_bad_executor_settings_are_one_line(tmp_path: Path, over: dict[str, Any], words: str) -> None:
    from flows.orchestration.settings import LoopSettings

    with pytest.raises(ConfigError) as err:
        LoopSettings.build({"workdir": str(tmp_path / "loop"), "backend": "fake", **over}).loop_config()
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "loop").exists()


@pytest.mark.slow  # the connection attempt times out (flows.orchestration.executor.CONNECT_TIMEOUT_S)
def test_an_unreachable_scheduler_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    work = tmp_path / "loop"
    code, err = synthloop("run", "--workdir", str(work), "--set", "backend=fake", "--executor", "dask",
                          "--dask-address", f"tcp://127.0.0.1:{servers.free_port()}")
    assert code != 0 and len(err) == 1 and err[0].startswith("error: loop.dask_address: must reach a running Dask")
    assert not work.exists()


# -- a real cluster on loopback -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.render
def test_dask_renders_the_process_runners_shards_on_gpu_workers_only(
        prefect: None, real: Path, cluster: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    from test_render_egl import assert_same_render

    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model
    from flows.loop.state import iteration_seeds
    from flows.orchestration.closed_loop import closed_loop
    from generator.params import load_params
    from generator.pipeline import render_shard, shard_problem

    s = settings(tmp_path, real, iterations=1, images_per_iteration=4, backend="pyrender",
                 executor="dask", dask_address=cluster["address"], dask_gpu=True, eval_chunk_images=4)
    cfg = s.loop_config()
    rows = closed_loop(s)  # a direct call (as a deployment runs it): the loop becomes a subflow on Dask
    assert [r["images_rendered"] for r in rows] == [4]
    shards = shards_of(cfg.work)
    params = load_params(cfg.iter_dir(0) / "params.yaml", loop._scenario(cfg))
    # the same seed gives the same fingerprints as the process runner (whose tasks call the same
    # render_step in a pool process): the jobs, and the shards rendered by this process
    for part, shard in enumerate(shards):
        job = loop.render_job(cfg, 0, params, part)
        assert shard["fingerprint"] == job.fingerprint()
        assert shard_problem(cfg.work / shard["path"], job.fingerprint()) is None
        here = render_shard(job, tmp_path / f"here-{part}")
        assert here.fingerprint == shard["fingerprint"]
        assert_same_render(cfg.work / shard["path"], here.path)
    # dask_gpu on an existing cluster: every render ran on the worker offering GPU (annotations kept)
    ran = ran_on(cluster["address"], "render_shard")
    assert len(ran[cluster["addr"]["gpu"]]) == 2 and ran[cluster["addr"]["cpu"]] == []
    assert leftovers(cfg.work) == []
    # the evaluation of real-val (12 images > eval_chunk_images) predicted its chunks on the cluster
    # (GPU workers too, under dask_gpu), with the report this process computes serially
    chunks = ran_on(cluster["address"], "predict_chunk")
    assert chunks[cluster["addr"]["gpu"]] and chunks[cluster["addr"]["cpu"]] == []
    entry = json.loads((cfg.work / "history.json").read_text())["iterations"][0]
    opts = EvalOptions(resamples=cfg.eval_resamples, seed=iteration_seeds(cfg.seed, 0)["evaluate"],
                       score_threshold=cfg.score_threshold)
    _, here_ev = evaluate_model(cfg.work / entry["train"]["path"], cfg.real_root / "real-val", tmp_path / "serial",
                                opts, scenario=cfg.scenario, progress=False)
    on_dask = json.loads((cfg.iter_dir(0) / "report" / "report.json").read_text())
    assert on_dask["overall"] == here_ev.report["overall"] and on_dask["slices"] == here_ev.report["slices"]


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.render
def test_calibration_renders_on_the_cluster_give_the_serial_result(real: Path, cluster: dict[str, Any]) -> None:
    """`synthloop calibrate --executor dask --dask-address`: each trial's images in chunks on the
    workers (one EGL context per worker process, real pyrender), the result of one process."""
    from test_calibrate_parallel import outcome

    from flows.orchestration.executor import command_executor
    from generator.scenario import load_scenario
    from policy.calibrate import CalibrationOptions, calibrate

    s = load_scenario("digits")
    opts = CalibrationOptions(trials=3, images_per_trial=6, seed=2, width=32, height=32, backend="pyrender")
    with command_executor("dask", cluster["address"]) as (ex, workers):
        assert workers == 2
        on_dask = calibrate(s, real / "real-val", None, opts, executor=ex, chunks=workers)
    serial = calibrate(s, real / "real-val", None, opts)
    assert outcome(on_dask) == outcome(serial)
    ran = ran_on(cluster["address"], "measure_chunk")
    assert all(ran[a] for a in cluster["addr"].values())  # both workers rendered


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.render
def test_a_worker_killed_mid_render_costs_a_retry_not_the_loop(
        prefect: None, real: Path, cluster: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    import distributed

    from flows.orchestration.closed_loop import closed_loop
    from generator.params import load_params
    from generator.pipeline import shard_problem

    s = settings(tmp_path, real, iterations=1, images_per_iteration=48, backend="pyrender",
                 executor="dask", dask_address=cluster["address"])
    cfg = s.loop_config()
    killed: dict[str, Any] = {}

    def kill_a_renderer() -> None:
        """Once a shard is half-written, SIGKILL the worker rendering it."""
        with distributed.Client(cluster["address"], timeout=10, set_as_default=False) as client:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not killed:
                busy = {w: keys for w, keys in client.processing().items()
                        if any(str(k).startswith("render_shard") for k in keys)}
                if busy and any(cfg.iter_dir(0).glob(".tmp-*/images/*")):  # images on disk: mid-write
                    name = next(n for n, a in cluster["addr"].items() if a in busy)
                    os.kill(cluster["procs"][name].pid, signal.SIGKILL)
                    killed.update(name=name, keys=busy[cluster["addr"][name]])
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_renderer, daemon=True)
    killer.start()
    rows = closed_loop(s)
    killer.join(timeout=5)
    assert killed, "no render was caught mid-write: the test did not test the fault"
    assert [r["images_rendered"] for r in rows] == [48]
    shards = shards_of(cfg.work)
    params = load_params(cfg.iter_dir(0) / "params.yaml", loop._scenario(cfg))
    assert len(shards) == 2 and len({s["path"] for s in shards}) == 2
    for part, shard in enumerate(shards):
        fp = loop.render_job(cfg, 0, params, part).fingerprint()
        assert shard["fingerprint"] == fp and shard_problem(cfg.work / shard["path"], fp) is None
    assert sorted(p.name for p in cfg.iter_dir(0).iterdir() if p.name.startswith("shard")) == ["shard-0", "shard-1"]
    assert leftovers(cfg.work) == []
    # the survivor ran the killed worker's render again
    survivor = next(a for n, a in cluster["addr"].items() if n != killed["name"])
    ran = ran_on(cluster["address"], "render_shard")
    assert set(killed["keys"]) & set(ran[survivor])


@pytest.mark.slow
@pytest.mark.servers
def test_a_cluster_whose_workers_cannot_see_the_work_directory_is_refused(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to hide the work directory from a worker (a mount namespace)")
    base = tmp_path / "shared"
    base.mkdir()
    work = base / "loop"
    # the worker's own mount namespace: an empty tmpfs over `base`, so it sees another directory there
    hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"mount -t tmpfs none {base} && exec"]
    with dask_scheduler(tmp_path) as address, dask_worker(address, tmp_path / "blind.log", wrap=hide):
        wait_workers(address, 1)
        code, err = synthloop("run", "--workdir", str(work), "--set", "backend=fake", "--executor", "dask",
                              "--dask-address", address)
    assert code != 0 and len(err) == 1, err
    assert err[0].startswith("error: loop.dask_address: worker tcp://127.0.0.1:")
    assert "cannot use the work directory" in err[0] and "shared filesystem" in err[0]
    assert list(base.iterdir()) == []  # nothing written: no work directory, no lock, no probe file left


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.render
def test_ctrl_c_stops_a_local_dask_cluster_with_the_run(real: Path, tmp_path: Path) -> None:
    """``synthloop run --executor dask`` (a LocalCluster: scheduler in the command, a nanny and a
    worker process per worker) stopped by Ctrl-C mid-render: exit 130 within seconds, nothing of
    the command's process tree left, nothing half-written published."""
    import loopcheck

    work = tmp_path / "loop"
    s = loopcheck.tiny_settings(work, real, f"sqlite:///{tmp_path / 'mlflow.db'}", "dask-stop",
                                images_per_iteration=40, executor="dask")
    cmd = [str(loopcheck.SYNTHLOOP), "run", *loopcheck.run_args(s)]
    env, log = loopcheck.ephemeral_env(tmp_path / "prefect-home"), tmp_path / "run.log"
    with loopcheck.group(cmd, env=env, cwd=tmp_path, log=log) as proc:
        loopcheck.wait_for(lambda: any((work / "iter_0").glob(".tmp-*/images/*")), "a shard half-written", 240,
                           proc=proc, log=log)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C
        code = proc.wait(timeout=60)
        assert code == 130, servers.log_tail(log)
        left = loopcheck.wait_gone(proc, timeout=15.0)
        assert left == [], f"{left} still running ({[servers.cmdline(p) for p in left]})"
    assert loopcheck.history(work) == []
    assert all((d / "manifest.json").is_file() for d in (work / "iter_0").glob("shard-*"))  # finished or absent
