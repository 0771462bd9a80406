"""One writer per loop work directory: an advisory lock held for the whole run of a loop.

Two runs of one loop — the nightly deployment and a manual run, or two manual runs — would
render, train and append history entries over each other. :func:`run_loop` and the
``closed-loop`` flow therefore hold ``WORK/.loop.lock`` (``fcntl.flock``, exclusive,
non-blocking) from before they read the history until they return: the second run fails at
once with :class:`~generator.errors.BusyError` naming the holder (exit code 75, "try again
later"), and writes nothing — or, with ``wait_for_loop_s`` (a run setting; scheduled and
monitor-triggered runs wait up to an hour), waits that long for the lock first, so an
overlapping nightly run and triggered run queue instead of racing or failing. The kernel
drops the lock when its process ends, SIGKILL included, so a crashed run never leaves a stale
lock and the resume path needs no clean-up. The file's text (pid, host, start time, command)
is information for the error message, never the lock.

Re-entrant within a process (``synthloop run`` takes it before starting its Prefect server,
then the flow it runs takes it again). Advisory and local: it protects runs on one machine,
which is how a loop's work directory is used.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from flows.loop.state import check_workdir
from generator.errors import BusyError

LOCK_NAME = ".loop.lock"
_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']} since {info['started']} "
                f"({' '.join(info['argv'])[:120]})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _acquire(fd: int, path: Path, work: Path, wait_s: float, poll_s: float) -> None:
    """flock ``fd``, retrying every ``poll_s`` for up to ``wait_s`` seconds; BusyError after."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" (waited {wait_s:g} s)" if wait_s else ""
                raise BusyError(f"workdir: {str(work)!r} is in use by {_holder(path)}{waited}; wait for that run "
                                "to finish (a crashed run frees it at once), set wait_for_loop_s, or give this run "
                                "another workdir") from None
            time.sleep(min(poll_s, left))


@contextmanager
def hold(work: str | Path, wait_s: float = 0.0, poll_s: float = 2.0) -> Iterator[Path]:
    """Hold the lock of the loop work directory ``work`` (created if missing) for the block;
    when another process holds it, wait up to ``wait_s`` seconds for it (0: fail at once)."""
    work = Path(work)
    check_workdir(work)  # never put a lock file into someone else's directory
    work.mkdir(parents=True, exist_ok=True)
    path = (work / LOCK_NAME).resolve()
    if path in _HELD:  # this process holds it already
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, work, wait_s, poll_s)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv,
                "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[path] = 1
        try:
            yield path
        finally:
            del _HELD[path]
    finally:
        os.close(fd)  # closing the descriptor releases the lock
