"""Where the loop's parallel steps run: ``executor: process`` (default) or ``executor: dask``.

The parallel steps are the render tasks of the closed-loop flow (an iteration's shards, the
repair of damaged shards, a warm start's probe shard) and, on Dask, the predictions of a large
evaluation split (:func:`cluster_executor`: chunks of ``eval_chunk_images`` images through the
runner's own client; the evaluator only sees a ``concurrent.futures``-like executor). ``process`` keeps the flow's own
``ProcessPoolTaskRunner`` (spawned processes on this machine, unchanged). ``dask`` runs them
through ``prefect-dask``'s ``DaskTaskRunner``:

* no ``dask_address``: a ``distributed.LocalCluster`` of ``dask_workers`` worker processes
  (default: ``min(render_shards, CPU count)``), one thread each, started for the run and
  stopped with it;
* ``dask_address: tcp://HOST:8786``: an existing scheduler (``dask scheduler`` + ``dask worker
  --nthreads 1``, dask-jobqueue on SLURM/PBS, dask-kubernetes). Before anything is written the
  flow checks the cluster with :func:`check_cluster`: the scheduler answers, every worker runs
  one thread (one EGL context per process), sees the loop's work directory and can write there
  (shards go straight to it: a shared filesystem), and with ``dask_gpu`` at least one worker
  offers the ``GPU`` resource. Any failure is one line naming ``dask_address``.

``dask_gpu: true`` submits the render tasks under ``dask.annotate(resources={"GPU": 1})``: they
run only on workers started with ``--resources GPU=1`` (one per GPU; ``EGL_DEVICE_ID`` picks
the device). Without it any worker renders; CPU-only workers render through Mesa's llvmpipe.

A render task returns a path and a small record, never image arrays. The EGL context is made
in the worker process by the render itself (pyrender is imported there, after
``PYOPENGL_PLATFORM`` is set) and deleted when the shard is done: with one thread per worker,
one context per process at a time.

Commands outside the flow (``synthloop calibrate --executor``) take a plain executor from
:func:`command_executor`: a spawned process pool, a ``LocalCluster`` or an existing scheduler
(checked by :func:`connect`, the loop's check: it answers, one thread per worker).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generator.errors import ConfigError, field_error, is_int

EXECUTORS = ("process", "dask")
PROBE_PREFIX = ".tmp-dask-probe-"  # a loop's own temporary name (flows.loop.state.OWN): never mistaken for data
CONNECT_TIMEOUT_S = 10.0
_ADDRESS = re.compile(r"^((tcp|tls|inproc|ucx)://)?[^\s/:]+(:\d+)?$")


def check_settings(executor: Any, address: Any, workers: Any, gpu: Any, eval_chunk: Any = 500) -> None:
    """One line naming the field for a bad executor setting (nothing is contacted here)."""
    if not is_int(eval_chunk) or eval_chunk < 1:
        raise field_error("loop.eval_chunk_images", "must be an integer >= 1", eval_chunk, "use e.g. 500")
    if executor not in EXECUTORS:
        raise field_error("loop.executor", f"must be one of {list(EXECUTORS)}", executor,
                          "use 'process' (this machine) or 'dask'")
    if executor != "dask":
        for name, value, default in (("dask_address", address, None), ("dask_workers", workers, None),
                                     ("dask_gpu", gpu, False)):
            if value != default:
                raise field_error(f"loop.{name}", "applies to executor 'dask' only", value,
                                  "drop it or set executor=dask")
        return
    if address is not None and (not isinstance(address, str) or not _ADDRESS.match(address)):
        raise field_error("loop.dask_address", "must be a Dask scheduler address like 'tcp://HOST:8786' or null",
                          address, "start one with `dask scheduler` and pass the address it prints")
    if workers is not None:
        if not is_int(workers) or workers < 1:
            raise field_error("loop.dask_workers", "must be an integer >= 1 or null", workers)
        if address is not None:
            raise field_error("loop.dask_workers", "sizes the local cluster only; with dask_address the "
                              "cluster has the workers started for it", workers, "drop dask_workers")
    if not isinstance(gpu, bool):
        raise field_error("loop.dask_gpu", "must be true or false", gpu)
    if gpu and address is None:
        raise field_error("loop.dask_gpu", "needs dask_address (workers started with `--resources GPU=1`)", gpu,
                          "drop dask_gpu: a local cluster renders on this machine's EGL device")


def task_runner(settings: Any) -> Any:
    """The ``DaskTaskRunner`` for ``settings`` (executor ``dask``)."""
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    n = settings.dask_workers or max(1, min(settings.render_shards, os.cpu_count() or 1))
    # processes (one EGL context each), one thread per worker, no dashboard (no extra port)
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "processes": True, "threads_per_worker": 1,
                                          "dashboard_address": None})


def on_dask() -> bool:
    """Whether the flow run in progress submits its tasks to a ``DaskTaskRunner``."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    # not imported: not on Dask (the process path never imports prefect_dask and distributed)
    dask_runners = sys.modules.get("prefect_dask.task_runners")
    return ctx is not None and dask_runners is not None and isinstance(ctx.task_runner, dask_runners.DaskTaskRunner)


def cluster_executor() -> Any:
    """Inside a flow run on Dask (tasks called in the flow's process included): the cluster as a
    ``concurrent.futures``-like executor (``submit``/``map``) through the task runner's own
    client, for a library's chunked work (evaluation over a large split); None otherwise.
    (prefect-dask makes its client with ``set_as_default=False``: ``distributed.get_client()``
    finds no client in the flow's process, so the runner's is taken from the flow run context.)
    Under ``dask_gpu`` the chunks, like the renders, go to workers offering ``GPU``."""
    if not on_dask():
        return None
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner: Any = ctx.task_runner if ctx is not None else None  # a DaskTaskRunner: on_dask() checked it
    return runner.client.get_executor()


@contextlib.contextmanager
def render_annotations(settings: Any) -> Iterator[None]:
    """Tasks submitted inside ask for a GPU when ``dask_gpu`` is set (Dask resources)."""
    if settings.executor == "dask" and settings.dask_gpu:
        import dask

        with dask.annotate(resources={"GPU": 1}):
            yield
    else:
        yield


def _nearest_dir(path: Path) -> Path:
    """``path`` if it is a directory, else its nearest existing ancestor (the probe writes there)."""
    path = path.absolute()
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return path


def _probe(directory: str, name: str, token: str) -> str | None:
    """Run on every worker: None when ``directory/name`` holds ``token`` and the worker can
    write beside it, else what went wrong (short)."""
    import socket

    here = Path(directory)
    try:
        seen = (here / name).read_text(encoding="utf-8")
    except OSError as exc:
        return f"cannot read {here / name} ({exc.__class__.__name__}) on {socket.gethostname()}"
    if seen != token:
        return f"sees another {here / name} on {socket.gethostname()} (a different filesystem)"
    mine = here / f"{name}-{os.getpid()}"
    try:
        mine.write_text(token, encoding="utf-8")
        mine.unlink()
    except OSError as exc:
        return f"cannot write in {here} ({exc.__class__.__name__}) on {socket.gethostname()}"
    return None


@contextlib.contextmanager
def connect(address: str, name: str, fix: str) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address`` whose workers each run one thread
    and are at least one; one ConfigError line naming ``name`` (the setting or option) otherwise."""
    import distributed

    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise field_error(name, "must reach a running Dask scheduler", address,
                          f"start one with `dask scheduler` ({exc.__class__.__name__}: {exc})") from None
    with client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if not workers:
            raise field_error(name, "must have at least one worker", address, fix)
        threads = {w: int(info.get("nthreads", 0)) for w, info in workers.items()}
        many = sorted(w for w, n in threads.items() if n != 1)
        if many:
            raise ConfigError(f"{name}: worker {many[0]} of {address!r} runs {threads[many[0]]} threads, "
                              "but each render needs a process of its own (one EGL context per process); "
                              "start workers with `dask worker ADDRESS --nthreads 1`")
        yield client


def check_cluster(settings: Any, work: Path) -> None:
    """With ``dask_address``: the cluster answers, each worker runs one thread, sees ``work``
    (a token file written here, read back there) and writes beside it; with ``dask_gpu`` some
    worker offers ``GPU``. One ConfigError line naming ``loop.dask_address`` otherwise. The
    token file is removed again: a refused cluster leaves nothing written."""
    address = settings.dask_address
    if settings.executor != "dask" or not address:
        return
    fix = "start `dask worker ADDRESS --nthreads 1` on machines that mount the work directory at the same path"
    with connect(address, "loop.dask_address", fix) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if settings.dask_gpu and not any((info.get("resources") or {}).get("GPU") for info in workers.values()):
            raise ConfigError(f"loop.dask_gpu: no worker of {address!r} offers the GPU resource, so no render "
                              "could start; start GPU workers with `dask worker ADDRESS --nthreads 1 "
                              "--resources GPU=1` or drop dask_gpu")
        here = _nearest_dir(work)
        name, token = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        try:
            (here / name).write_text(token, encoding="utf-8")
        except OSError as exc:
            raise field_error("loop.workdir", "must be writable", str(here), f"({exc})") from None
        try:
            answers = client.run(_probe, str(here), name, token)
        finally:
            (here / name).unlink(missing_ok=True)
        blind = sorted((w, why) for w, why in answers.items() if why is not None)
        if blind:
            w, why = blind[0]
            raise ConfigError(f"loop.dask_address: worker {w} of {address!r} cannot use the work directory "
                              f"{str(work)!r}: it {why} ({len(blind)} of {len(answers)} workers); shards are "
                              f"written there, so it must be a shared filesystem path; {fix}")


def check_command(kind: Any, address: Any, workers: Any) -> None:
    """A command's ``--executor``/``--dask-address``/``--workers`` (``synthloop calibrate``):
    one line naming the option (nothing is contacted here)."""
    if kind not in (None, *EXECUTORS):
        raise field_error("--executor", f"must be one of {list(EXECUTORS)}", kind)
    if address is not None:
        if kind != "dask":
            raise field_error("--dask-address", "applies to --executor dask only", address, "add --executor dask")
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise field_error("--dask-address", "must be a Dask scheduler address like 'tcp://HOST:8786'", address,
                              "start one with `dask scheduler` and pass the address it prints")
    if workers is not None:
        if kind is None:
            raise field_error("--workers", "applies to --executor process or dask only", workers,
                              "add --executor process")
        if not is_int(workers) or workers < 1:
            raise field_error("--workers", "must be an integer >= 1", workers)
        if address is not None:
            raise field_error("--workers", "sizes a local pool or cluster only; with --dask-address the cluster "
                              "has the workers started for it", workers, "drop --workers")


@contextlib.contextmanager
def command_executor(kind: str | None, address: str | None = None,
                     workers: int | None = None) -> Iterator[tuple[Any, int]]:
    """``(executor, worker count)`` for a command's chunked work outside the flow: ``None``
    → ``(None, 1)`` (this process); ``process`` → a spawned ``ProcessPoolExecutor`` of
    ``workers`` (default: CPU count); ``dask`` → a ``LocalCluster`` of ``workers`` one-thread
    processes, or the scheduler at ``address`` (checked: it answers, one thread per worker),
    as ``Client.get_executor()``. Stopped on exit (an external cluster stays up)."""
    check_command(kind, address, workers)
    n = workers or os.cpu_count() or 1
    if kind is None:
        yield None, 1
    elif kind == "process":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from generator.workers import exit_on_sigint

        spawn = multiprocessing.get_context("spawn")  # no GL context or torch state inherited
        with ProcessPoolExecutor(n, mp_context=spawn, initializer=exit_on_sigint) as pool:
            yield pool, n
    elif address is not None:
        with connect(address, "--dask-address", "start `dask worker ADDRESS --nthreads 1`") as client:
            yield client.get_executor(), max(1, sum(client.nthreads().values()))
    else:
        import distributed

        cluster = distributed.LocalCluster(n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None)
        with cluster, distributed.Client(cluster, set_as_default=False) as client:
            yield client.get_executor(), n
