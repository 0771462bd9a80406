"""Everything a ``synthloop`` command starts stops with it: Ctrl-C, SIGTERM, and its own death.

A command starts processes: the temporary Prefect server, the render workers (a spawn process
pool), the runs a ``synthloop serve`` launches. Three ways they used to outlive it:

* **Ctrl-C** reaches the whole foreground process group. The temporary Prefect server (uvicorn)
  stopped at once, and the flow then retried reporting its crash to the dead server for minutes
  while the render workers idled beside it. The server now runs in a session of its own
  (:func:`flows.orchestration.closed_loop.prefect_api`), so it is there to record the crash and is stopped last.
* **SIGINT or SIGTERM to the main pid only** (``kill PID``, a supervisor's stop): the workers went
  on rendering their shard, and SIGTERM ended the main process without its ``finally`` blocks,
  leaving the server running. Both signals now take the Ctrl-C path (:func:`stop_signals`): the
  main process forwards SIGINT to the children in its own process group, raises
  ``KeyboardInterrupt`` so every ``finally`` runs, and exits ``128 + signal`` (130, 143). If
  that takes longer than ``grace_s``, or a second signal comes, everything is killed at once.
* **SIGKILL of the main process** (the OOM killer): no code of it runs. A small *reaper* process,
  started first in a session of its own, holds a pipe from the main process; at end of file
  (the main process is gone, however it went) it stops every process that carries the command's
  token in its environment (``SYNTHLOOP_PROCESS_TREE``, inherited by every descendant) — SIGTERM,
  then SIGKILL after 5 s. On a normal exit the main process closes the pipe and the reaper finds
  nothing left. Finding processes reads ``/proc`` (Linux); elsewhere the reaper does nothing.

A loop stopped any of these ways resumes like one killed by SIGKILL: every write is atomic.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

TREE_ENV = "SYNTHLOOP_PROCESS_TREE"  # ":"-separated tokens: each guarded command up the tree adds one
GRACE_S = 30.0  # after the first Ctrl-C/SIGTERM, how long a clean stop may take before everything is killed
TERM_WAIT_S = 5.0  # the reaper's SIGTERM -> SIGKILL wait

# multiprocessing's resource tracker is left alone: it ends by itself once the last process using
# it has ended, after unlinking what they leaked; killed first, it is relaunched and complains.
_RESOURCE_TRACKER = b"multiprocessing.resource_tracker"

_state: dict[str, object] = {}  # the guard of this process: token, signal received, grace timer


def _live_processes() -> Iterator[tuple[Path, list[str]]]:
    """``(/proc/<pid>, stat fields after "(comm)": state ppid pgrp …)`` of every live process
    (zombies and processes that exit while we look skipped; nothing where there is no /proc)."""
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] != "Z":
            yield entry, fields


def tree_pids(token: str, *, exclude: tuple[int, ...] = ()) -> list[int]:
    """Live processes whose environment carries ``token`` in ``TREE_ENV`` (zombies and
    multiprocessing's resource tracker excluded)."""
    needle, prefix = token.encode(), TREE_ENV.encode() + b"="
    found = []
    for entry, _ in _live_processes():
        if int(entry.name) in exclude:
            continue
        try:
            env = (entry / "environ").read_bytes()
            if _RESOURCE_TRACKER in (entry / "cmdline").read_bytes():
                continue
        except OSError:  # exited while we looked, or not ours to read
            continue
        if any(var.startswith(prefix) and needle in var[len(prefix):].split(b":") for var in env.split(b"\0")):
            found.append(int(entry.name))
    return found


def kill_tree(token: str, *, exclude: tuple[int, ...] = (), wait_s: float = TERM_WAIT_S) -> list[int]:
    """SIGTERM every process carrying ``token``, SIGKILL what is left after ``wait_s``; the pids
    still alive at the end (want [])."""
    for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 2.0)):
        pids = tree_pids(token, exclude=exclude)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = tree_pids(token, exclude=exclude)
        if not pids:
            return []
    return tree_pids(token, exclude=exclude)


def reap(token: str) -> None:
    """The reaper's body (``python -c``): wait for end of file on stdin, then stop the tree."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(1 << 12):
            pass
    kill_tree(token, exclude=(os.getpid(),))


@contextlib.contextmanager
def guard(grace_s: float = GRACE_S) -> Iterator[None]:
    """Run a command under the guard (see the module docstring). Signal handlers are installed
    only in the main thread; the reaper and the token always."""
    token = uuid.uuid4().hex[:16]
    old_env = os.environ.get(TREE_ENV)
    os.environ[TREE_ENV] = f"{old_env}:{token}" if old_env else token
    reaper = subprocess.Popen(
        [sys.executable, "-c", f"from flows.loop.process_guard import reap; reap({token!r})"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
    _state.clear()
    _state.update(token=token, grace_s=grace_s)
    try:
        with stop_signals():
            yield
    finally:
        timer, sig = _state.get("timer"), _state.get("signal")
        if isinstance(timer, threading.Timer):
            timer.cancel()
        _state.clear()
        if sig is not None:  # for the exit code: 128 + signal
            _state["signal"] = sig
        if old_env is None:
            os.environ.pop(TREE_ENV, None)
        else:
            os.environ[TREE_ENV] = old_env
        with contextlib.suppress(OSError):
            if reaper.stdin is not None:
                reaper.stdin.close()  # end of file: the reaper sweeps what is left of the tree and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            reaper.wait(timeout=TERM_WAIT_S + 5)


def guarded() -> bool:
    """Whether this process runs under :func:`guard` (a ``synthloop`` command, not a Prefect runner)."""
    return "token" in _state


def received() -> int | None:
    """The stop signal this command received (SIGINT or SIGTERM), or None."""
    sig = _state.get("signal")
    return sig if isinstance(sig, int) else None


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM take the Ctrl-C path while inside (main thread only; a no-op elsewhere).

    Prefect's flow engine installs its own SIGTERM handler for the length of a flow run, so the
    closed-loop flow enters this again inside its body when run by a ``synthloop`` command
    (:func:`guarded`); under a Prefect runner SIGTERM stays Prefect's (its cancellation signal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _on_stop_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if received() is not None:  # the second one: no more waiting
        _force()
    _state["signal"] = signum
    name = signal.Signals(signum).name
    print(f"\nsynthloop: {name}: stopping; the loop resumes where it stopped "
          f"({name} again kills everything at once)", file=sys.stderr, flush=True)
    _interrupt_children()
    grace = _state.get("grace_s", GRACE_S)
    if "token" in _state and isinstance(grace, (int, float)):
        timer = threading.Timer(grace, _force)
        timer.daemon = True
        timer.start()
        _state["timer"] = timer
    raise KeyboardInterrupt


def _interrupt_children() -> None:
    """SIGINT to this process's children in its own process group (the render workers: as on a
    terminal's Ctrl-C). Children in sessions of their own — the Prefect server, the reaper — are
    left to the ``finally`` blocks and the reaper."""
    me, group = os.getpid(), os.getpgrp()
    for entry, fields in _live_processes():
        if int(fields[1]) == me and int(fields[2]) == group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGINT)


def _force() -> None:
    """Kill the whole tree now and exit ``128 + signal`` (a stop that outlived its grace)."""
    token, sig = _state.get("token"), received() or signal.SIGINT
    print("synthloop: stopping took too long or was asked twice: killing everything it started",
          file=sys.stderr, flush=True)
    if isinstance(token, str):
        kill_tree(token, exclude=(os.getpid(),), wait_s=1.0)
    os._exit(128 + int(sig))
