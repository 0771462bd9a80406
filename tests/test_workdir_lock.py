"""One run per loop work directory (flows/loop/lock.py).

A second run of a busy loop fails at once with one line naming the holder and exit code 75,
writing nothing; a SIGKILLed holder frees the directory (no stale lock); the lock is
re-entrant inside one process. The flow's own use is in tests/test_flow.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_loop import tiny

from flows.loop.lock import LOCK_NAME, hold
from flows.loop.run import run_loop
from generator.errors import BusyError

HOLD = ("import sys, time; from flows.loop.lock import hold\n"
        "with hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))")


def start_holder(work: Path, seconds: float) -> subprocess.Popen[str]:
    """A process that holds the lock of ``work`` for ``seconds``, returned once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the lock of ``tmp_path / 'loop'``."""
    work = tmp_path / "loop"
    proc = start_holder(work, 120)
    try:
        yield work, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_of_a_busy_loop_fails_at_once_and_writes_nothing(holder) -> None:
    work, proc = holder
    with pytest.raises(BusyError) as exc:
        run_loop(tiny(work))
    msg = str(exc.value)
    assert msg.startswith(f"workdir: {str(work)!r} is in use by pid {proc.pid}") and "\n" not in msg
    assert sorted(p.name for p in work.iterdir()) == [LOCK_NAME]  # no history, no iteration
    assert BusyError.exit_code == 75
    cli = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--workdir", str(work), "--set=backend=fake",
                          "--tracking-uri", f"sqlite:///{work.parent / 'm.db'}"], capture_output=True, text=True)
    err = cli.stderr.strip()  # a real process: importing Prefect here would bind its logging to capsys
    assert cli.returncode == 75 and err.startswith("error: workdir:") and len(err.splitlines()) == 1
    assert sorted(p.name for p in work.iterdir()) == [LOCK_NAME] and not (work.parent / "m.db").exists()


def test_a_killed_holder_leaves_no_stale_lock(holder) -> None:
    work, proc = holder
    with pytest.raises(BusyError), hold(work):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with hold(work) as path:  # free at once: the kernel dropped the lock with the process
        assert path.name == LOCK_NAME and str(os.getpid()) in path.read_text()


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path: Path) -> None:
    work = tmp_path / "loop"
    with hold(work), hold(work):
        probe = subprocess.run([sys.executable, "-c", HOLD, str(work), "0"],
                               capture_output=True, text=True)
        assert probe.returncode != 0 and "BusyError" in probe.stderr  # still held by the outer block
    probe = subprocess.run([sys.executable, "-c", HOLD, str(work), "0"],
                           capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == "held"


def test_no_lock_file_is_left_in_someone_elses_directory(tmp_path: Path) -> None:
    from generator.errors import ConfigError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="must be absent, empty or a loop's work directory"), hold(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_waiting_run_gets_the_loop_when_the_holder_finishes(tmp_path: Path) -> None:
    work = tmp_path / "loop"
    busy = start_holder(work, 120)
    try:
        t0 = time.monotonic()
        with pytest.raises(BusyError, match=r"\(waited 1 s\)"), hold(work, wait_s=1, poll_s=0.2):
            pass
        assert time.monotonic() - t0 >= 1.0  # it did wait before giving up
    finally:
        busy.kill()
        busy.wait()
    short = start_holder(work, 2)
    t0 = time.monotonic()
    with hold(work, wait_s=60, poll_s=0.2):  # queued behind the short run, then runs
        assert short.poll() is not None or time.monotonic() - t0 >= 1.0
    short.wait()
