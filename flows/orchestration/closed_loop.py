"""The closed loop as a Prefect flow: each step a task calling a library, lineage in MLflow.

    closed_loop(settings)                       one LoopSettings parameter (flows/orchestration/settings.py)
      prepare real data                         built once, reused after
      open the loop's MLflow parent run         found again on a resume
      with settings.init_model (warm start, once per loop; flows/loop/warm_start.py):
        evaluate    init/report                 the init model on real-val
        probe       init/probe                  only when the init model's training shards are
                                                gone: synthetic conditions for the policy
        decide      init/decision.json          params_0, steered by the init report
        track       MLflow child run "init"     its metrics (step -1), report, decision and the
                                                init model as a registered version (the bar
                                                iteration 0 must beat for `champion`)
      for each iteration k not yet done:
        params      iter_k/params.yaml          uniform at k = 0 (the init decision's with
                                                init_model), else decision k-1
        render      iter_k/shard-<i>            render_shards tasks in parallel processes,
                                                cached on the shard fingerprint
        train       iter_k/model                continues from model k-1
        evaluate    iter_k/report               real-val (the policy never sees real-test)
        production  iter_k/report-production    with settings.production: the frozen window merged
                                                into the real-val report (what the policy reads)
        decide      iter_k/decision.json        the policy's next params
        record      history.json                the durable resume marker
        track       MLflow child run k          params, datasets, metrics, artifacts, model
                                                version; alias `champion` on improvement
        publish     Prefect artifacts           summary, weak slices and changes, progress

Resume rests on our own durable state (history.json, fingerprinted shards, checkpoints, the
Optuna study), not on Prefect's task records: a SIGKILLed run stays "Running" in Prefect and
may lose them. Running the same loop again continues after the last iteration in
history.json; an iteration that finished but was not fully tracked is tracked then (every
tracking call finds what is already there instead of duplicating it). Retries are for I/O
errors only; a training divergence or a bad input fails the run at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # the render processes inherit it

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.task_runners import ProcessPoolTaskRunner

from flows.loop import inputs, lock, process_guard, steps, warm_start
from flows.loop import run as driver
from flows.loop.state import IterationRecord, LoopConfig, LoopHistory
from flows.orchestration import executor, publish
from flows.orchestration.settings import DATA_DIR, LoopSettings
from flows.tracking import iteration, runs
from flows.tracking import model as tracking_model
from flows.tracking import warm_start as tracking_init
from generator.params import GenerationParams
from generator.workers import exit_on_sigint

__all__ = ["closed_loop", "loop_flow", "prefect_api", "tracking_for"]


def _io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: only an OSError (disk, network storage, a tracking server hiccup)."""
    try:
        state.result()
    except OSError:
        return True
    except BaseException:  # anything else is not worth a retry
        return False
    return False


def _shard_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Render tasks are cached on the shard's fingerprint and its place (computed before rendering)."""
    return f"synthloop-shard-{parameters['fingerprint']}-{steps._rel(parameters['cfg'], parameters['out'])}"


IO_RETRY: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": _io_error}


@task(name="prepare-real-data", cache_policy=NO_CACHE, **IO_RETRY)
def prepare_real_data(cfg: LoopConfig) -> Path:
    return steps.prepare_real(cfg).root


@task(name="prepare-inputs", cache_policy=NO_CACHE, **IO_RETRY)
def prepare_inputs(cfg: LoopConfig) -> None:
    inputs.prepare(cfg)  # policy_base: calibrate, replay: [init]


@task(name="params", cache_policy=NO_CACHE, **IO_RETRY)
def choose_params(cfg: LoopConfig, k: int) -> GenerationParams:
    params = driver.iteration_params(cfg, k)
    steps.write_params(cfg, k, params)
    return params


@task(name="render-shard", task_run_name="render-iter{k}-part{part}", cache_key_fn=_shard_key,
      persist_result=True, **IO_RETRY)
def render_shard(cfg: LoopConfig, k: int, params: GenerationParams, part: int, fingerprint: str,
                 out: Path) -> steps.RenderStep:
    return steps.render_step(cfg, k, params, part)


@task(name="repair-shard", task_run_name="repair-iter{k}-part{part}", cache_policy=NO_CACHE, **IO_RETRY)
def repair_shard(cfg: LoopConfig, k: int, part: int, out: Path, fingerprint: str) -> steps.RenderStep:
    return steps.repair_shard(cfg, k, part, out, fingerprint)


def repair_finished(cfg: LoopConfig, history: LoopHistory) -> None:
    """Re-render, in the process pool, every damaged or missing shard of the completed
    iterations (later iterations train on all of them) and note it in history.json."""
    damaged = steps.damaged_shards(history)
    futures = [(k, repair_shard.submit(cfg, k, part, path, fp)) for k, part, path, fp, _ in damaged]
    repaired = [(k, f.result()) for k, f in futures]
    if executor.on_dask():  # what a worker lost mid-repair left (its task ran again elsewhere)
        for k in sorted({k for k, _ in repaired}):
            steps.remove_partial(cfg.iter_dir(k))
    steps.note_repairs(cfg, history, repaired)


@task(name="train", task_run_name="train-iter{k}", cache_policy=NO_CACHE)
def train(cfg: LoopConfig, k: int, shards: list[Path], init: Path | None) -> steps.TrainStep:
    return steps.train_step(cfg, k, shards, init)


@task(name="evaluate-real-val", task_run_name="evaluate-iter{k}", cache_policy=NO_CACHE)
def evaluate(cfg: LoopConfig, k: int, model: Path, chunk_images: int = 500) -> steps.EvalStep:
    """In the flow's process; on Dask, a split of more than ``chunk_images`` images is predicted
    in chunks on the cluster (the same report)."""
    return steps.evaluate_step(cfg, k, model, "real-val", executor.cluster_executor(), chunk_images)


@task(name="evaluate-production", task_run_name="production-iter{k}", cache_policy=NO_CACHE)
def assess_production(cfg: LoopConfig, k: int, report: dict[str, Any], shards: list[Path]) -> dict[str, Any] | None:
    return steps.production_step(cfg, k, report, shards)


@task(name="policy", task_run_name="policy-iter{k}", cache_policy=NO_CACHE, **IO_RETRY)
def decide(cfg: LoopConfig, k: int, report: dict[str, Any], params: GenerationParams,
           shards: list[Path]) -> steps.PolicyStep:
    return steps.policy_step(cfg, k, [report], params, shards)


@task(name="evaluate-init-model", cache_policy=NO_CACHE)
def evaluate_init(cfg: LoopConfig, chunk_images: int = 500) -> steps.EvalStep:
    return warm_start.evaluate_init(cfg, executor.cluster_executor(), chunk_images)


@task(name="render-probe", cache_policy=NO_CACHE, **IO_RETRY)
def render_probe(cfg: LoopConfig) -> Path:
    return warm_start.probe_step(cfg)


@task(name="policy-init", cache_policy=NO_CACHE, **IO_RETRY)
def decide_init(cfg: LoopConfig, report: dict[str, Any], shards: list[Path]) -> steps.PolicyStep:
    return warm_start.decide_init(cfg, report, shards)


@task(name="track-init", cache_policy=NO_CACHE, **IO_RETRY)
def track_init(t: runs.Tracking, parent: str, cfg: LoopConfig, init: dict[str, Any],
               flow_run_id: str | None) -> str:
    """Log the warm start's pre-step on its MLflow run "init" and register the init model (idempotent)."""
    return tracking_init.track_init(t, parent, cfg.work, init, flow_run_id)


def pre_step(t: runs.Tracking, parent: str, cfg: LoopConfig, history: LoopHistory,
             flow_run_id: str | None, chunk_images: int = 500) -> str | None:
    """Warm start: evaluate the init model and decide params_0 (once), track it; the init run's
    id (iteration 0's previous run), or None for a cold start."""
    if cfg.init_model is None:
        return None
    if history.init is None:
        e = evaluate_init(cfg, chunk_images)
        # the init model's training shards give the policy its conditions; else a probe shard,
        # rendered in a worker process like every render (one GL context per process)
        shards = warm_start.condition_shards(cfg) or [render_probe.submit(cfg).result()]
        history.set_init(warm_start.init_record(cfg, e, decide_init(cfg, e.report, shards), shards))
    assert history.init is not None
    return track_init(t, parent, cfg, history.init, flow_run_id)


@task(name="track-iteration", task_run_name="track-iter{k}", cache_policy=NO_CACHE, **IO_RETRY)
def track(t: runs.Tracking, parent: str, k: int, previous: str | None, cfg: LoopConfig,
          record: dict[str, Any], flow_run_id: str | None, init: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log iteration ``k`` to its MLflow child run and register its model (idempotent);
    ``init``: a warm start's init block, for iteration 0 (``previous`` is then the init run)."""
    run_id, finished = runs.open_iteration_run(t, parent, k, previous, flow_run_id)
    if finished:
        return {"run_id": run_id, "model": None, "already": True}
    if init is not None and previous is not None:
        tracking_init.log_init_input(t, run_id, previous, init)
    window = (record.get("production") or {}).get("path")
    iteration.log_iteration(t, run_id, parent, cfg.work, record, cfg.to_dict(),
                           production=None if window is None else cfg.work / window)
    model = tracking_model.log_model(t, run_id, cfg.work / record["train"]["path"], k, record["evaluate"]["map50"],
                               external_sha256=record["train"].get("sha256") if cfg.external else None)
    runs.close_run(t, run_id)
    return {"run_id": run_id, "model": model, "already": False}


def render_all(cfg: LoopConfig, k: int, params: GenerationParams) -> list[steps.RenderStep]:
    """Submit every shard of iteration ``k`` to the process pool; re-render a cached result
    whose shard is no longer on disk intact (the shard, not Prefect's cache, is the truth:
    every file is checked against its manifest sha256)."""
    import time

    from generator.pipeline import shard_problem

    t0 = time.perf_counter()
    n = len(steps.part_sizes(cfg.images_per_iteration, cfg.render_shards))
    jobs = [(i, steps.render_job(cfg, k, params, i).fingerprint(), cfg.iter_dir(k) / f"shard-{i}") for i in range(n)]
    futures = [render_shard.submit(cfg, k, params, i, fp, out) for i, fp, out in jobs]
    done = [f.result() for f in futures]
    for j, (i, fp, out) in enumerate(jobs):
        if shard_problem(out, fp) is not None:  # rendered in a worker process too (one GL context each)
            done[j] = render_shard.with_options(refresh_cache=True).submit(cfg, k, params, i, fp, out).result()
    if executor.on_dask():  # a worker lost mid-render (its task re-ran elsewhere) left its temporary shard
        steps.remove_partial(cfg.iter_dir(k))
    steps.render_summary(cfg, k, done, time.perf_counter() - t0)  # the render stage's one line
    return done


def run_one(cfg: LoopConfig, k: int, history: LoopHistory, chunk_images: int = 500) -> IterationRecord:
    """Iteration ``k``'s library steps as tasks; the history entry is written last."""
    import time

    t0 = time.perf_counter()
    params = choose_params(cfg, k)
    renders = render_all(cfg, k, params)
    new = [r.path for r in renders]
    t = train(cfg, k, driver.loop_shards(history) + new, driver.previous_model(cfg, history))
    e = evaluate(cfg, k, t.path, chunk_images)
    merged = assess_production(cfg, k, e.report, [path for path, _ in t.data]) if cfg.production else None
    p = decide(cfg, k, merged or e.report, params, new)
    record = driver.iteration_record(cfg, k, history, renders, t, e, p, time.perf_counter() - t0,
                                   steps.production_record(cfg, k))
    history.append(record)
    return record


def tracking_for(settings: LoopSettings, cfg: LoopConfig) -> runs.Tracking:
    """Where this loop is tracked: ``settings``' values, else the defaults (DATA_DIR/mlflow.db)."""
    return runs.Tracking(uri=settings.tracking_uri or runs.default_tracking_uri(DATA_DIR),
                             experiment=settings.experiment or f"synthloop/{cfg.study_name}",
                             model_name=settings.model_name or f"synthloop-{cfg.scenario}")


@contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API this process reports to: ``PREFECT_API_URL`` when set; otherwise a
    temporary local server started here and exported as ``PREFECT_API_URL``, so the render
    worker processes report to it too (left alone, each spawned worker would start its own
    temporary server). Stopped on exit."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield str(url)
        return
    server = _session_server()
    server.start(timeout=120)
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        from prefect.logging.handlers import APILogHandler

        try:
            APILogHandler().flush()  # the run's last log lines, before the server goes
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old
            server.stop()


def _session_server() -> Any:
    """Prefect's temporary server (``SubprocessASGIServer``) started in a session of its own, so a
    terminal's Ctrl-C, which reaches the whole foreground process group, does not stop it while
    the flow still has to record how it ended (it used to: the flow then retried the dead server
    for minutes). :func:`prefect_api` stops it last; :mod:`flows.loop.process_guard`'s reaper stops it
    if this process is killed. The command line is Prefect's own ``_run_uvicorn_command``
    (prefect 3.x); tests/test_stop_signals.py checks the server leaves the process group."""
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class SessionServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
                 "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1",
                     **get_current_settings().to_environment_variables(exclude_unset=True)},
                start_new_session=True)

    return SessionServer()


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


# render workers end quietly on Ctrl-C (the main process reports it once)
_RENDER_POOL: Any = ProcessPoolTaskRunner(initializer=exit_on_sigint)


@flow(name="closed-loop", task_runner=_RENDER_POOL, log_prints=True)
def closed_loop(settings: LoopSettings | None = None) -> list[dict[str, Any]]:
    """Render → train → evaluate on real-val → policy, ``iterations`` times, tracked in MLflow."""
    settings = settings or LoopSettings()
    cfg = settings.loop_config()
    if settings.executor == "dask" and not executor.on_dask():
        # a deployment or a direct call: the runner depends on the settings, which come with the
        # run, so the loop runs as a subflow on its Dask runner (`synthloop run` starts it there)
        return loop_flow(settings)(settings)
    executor.check_cluster(settings, cfg.work)  # an existing Dask cluster: before anything is written
    # Prefect's engine holds SIGTERM for the run; under a synthloop command it takes Ctrl-C's path
    stops = process_guard.stop_signals() if process_guard.guarded() else contextlib.nullcontext()
    with stops, lock.hold(cfg.work, settings.wait_for_loop_s), executor.render_annotations(settings):
        return _closed_loop(settings, cfg)  # (one run per loop work directory; GPU resources for renders)


def loop_flow(settings: LoopSettings) -> Any:
    """The closed-loop flow on the task runner ``settings.executor`` asks for: the flow itself
    for ``process`` (its process pool), else a copy on a ``DaskTaskRunner`` (flows/orchestration/executor.py)."""
    if settings.executor != "dask":
        return closed_loop
    return closed_loop.with_options(task_runner=executor.task_runner(settings))


def _closed_loop(settings: LoopSettings, cfg: LoopConfig) -> list[dict[str, Any]]:
    history = LoopHistory.open(cfg)
    if settings.add_iterations:  # a scheduled run grows the loop
        cfg = dataclasses.replace(cfg, iterations=len(history.entries) + settings.add_iterations)
        history.config["iterations"] = cfg.iterations
    t, run = tracking_for(settings, cfg), _flow_run_id()
    prepare_real_data(cfg)
    prepare_inputs(cfg)
    repair_finished(cfg, history)  # before anything is tracked: a shard that cannot be repaired stops here
    parent = runs.open_loop_run(t, cfg.study_name, cfg.to_dict(), run, uid=history.identity())
    progress = publish.loop_progress(cfg, len(history.entries))
    previous: str | None = None
    try:
        previous = pre_step(t, parent, cfg, history, run, settings.eval_chunk_images)
        for k in range(cfg.iterations):
            done = k < len(history.entries)
            record = history.entries[k] if done else run_one(cfg, k, history, settings.eval_chunk_images)
            tracked = track(t, parent, k, previous, cfg, record.to_dict(), run, history.init if k == 0 else None)
            previous = tracked["run_id"]
            if not done:
                publish.iteration_artifacts(cfg, t, record, tracked)
                publish.update_progress(progress, cfg, k + 1)
    except BaseException:
        runs.close_run(t, parent, "FAILED")  # a resume reopens it
        raise
    runs.close_run(t, parent)
    first = [publish.init_row(history.init)] if history.init is not None else []  # warm start: the bar
    return first + [publish.summary_row(e) for e in history.entries]
