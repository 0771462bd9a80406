"""Ctrl-C, SIGTERM and the death of a command stop everything it started (flows/loop/process_guard.py).

The guard's mechanics on small scripts (a reaper that outlives a SIGKILL, a normal exit, a stop
that hangs, a second Ctrl-C), and ``synthloop render`` with two real render workers stopped three
ways. The loop itself (Prefect server, workers, resume) is stopped four ways in
tests/test_integration.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import servers

from flows.loop.process_guard import TREE_ENV, tree_pids

# a command under the guard, as flows/cli.py runs one: prints the pid of a child it started in a
# session of its own (where no process-group kill reaches), then does BODY
SCRIPT = """
import os, signal, subprocess, sys, time
from flows.loop import process_guard
try:
    with process_guard.guard(grace_s={grace}):
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        print(child.pid, flush=True)
{body}
except KeyboardInterrupt:
    sys.exit(128 + (process_guard.received() or signal.SIGINT))
"""
SWALLOW = """\
        while True:  # a stop that hangs: every KeyboardInterrupt swallowed
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                pass
"""


def start(body: str, tmp_path: Path, grace: float = 30.0) -> tuple[subprocess.Popen[str], str, int]:
    token = f"test-{uuid.uuid4().hex[:12]}"
    code = SCRIPT.format(grace=grace, body=textwrap.indent(textwrap.dedent(body), " " * 8))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, text=True,
                            env={**os.environ, TREE_ENV: token}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        raise AssertionError(f"the guarded script did not start: {proc.communicate(timeout=10)[1]}")
    return proc, token, int(line)


def gone(token: str, pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not tree_pids(token) and not alive(pid):
            return True
        time.sleep(0.05)
    return False


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_reaper_stops_what_a_sigkilled_command_started(tmp_path: Path) -> None:
    proc, token, child = start("os.kill(os.getpid(), signal.SIGKILL)", tmp_path)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert gone(token, child), f"{child} ({servers.cmdline(child)}) outlived its SIGKILLed parent"


def test_a_normal_exit_leaves_nothing_running(tmp_path: Path) -> None:
    proc, token, child = start("pass", tmp_path)
    assert proc.wait(timeout=30) == 0
    assert not alive(child), "the guard returned with a child still running"  # swept before the exit
    assert gone(token, child, timeout=5.0)  # and the reaper has ended too


def test_a_stop_that_hangs_is_forced_after_the_grace(tmp_path: Path) -> None:
    proc, token, child = start(SWALLOW, tmp_path, grace=1.0)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    assert gone(token, child)
    assert "killing everything" in proc.communicate()[1]


def test_a_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    proc, token, child = start(SWALLOW, tmp_path, grace=600.0)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the first one is swallowed: the grace is long
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 128 + signal.SIGINT
    assert gone(token, child)


RENDER_STOPS = {  # how -> (signal, to the whole group?, exit status)
    "ctrl-c": (signal.SIGINT, True, 130),
    "sigterm-main": (signal.SIGTERM, False, 143),
    "sigint-main": (signal.SIGINT, False, 130),
}


@pytest.mark.slow  # real EGL renders in two worker processes
@pytest.mark.parametrize("how", list(RENDER_STOPS))
def test_render_stops_its_workers_within_seconds_and_publishes_nothing(tmp_path: Path, how: str) -> None:
    sig, to_group, status = RENDER_STOPS[how]
    token, out = f"test-{uuid.uuid4().hex[:12]}", tmp_path / "shard"
    cmd = [str(servers.BIN_DIR / "synthloop"), "render", "-n", "5000", "--size", "48", "--workers", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, TREE_ENV: token}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(tree_pids(token)) < 4 and time.monotonic() < deadline:  # main, reaper, 2 workers
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        time.sleep(2.0)  # the workers render
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        started = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == status, err[-2000:]
    assert took < 15, f"{how}: took {took:.1f} s to stop"
    assert gone(token, proc.pid, timeout=10.0), f"left running: {tree_pids(token)}"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # nothing partial
    assert f"interrupted ({signal.Signals(sig).name})" in err


def test_an_error_raised_on_the_way_out_of_a_stop_is_still_the_stop(tmp_path: Path) -> None:
    """Prefect's crash handler, interrupted while it sets a task run up, raises its own ValueError
    ("Task run is not set") instead of the KeyboardInterrupt (seen in CI): the command still exits
    128 + signal with the one interrupted line, not 1 with a traceback."""
    code = textwrap.dedent("""
        import argparse, sys, time
        import flows.cli as cli

        def hang(args):
            print("ready", flush=True)
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                raise ValueError("Task run is not set")

        def parser():
            p = argparse.ArgumentParser()
            p.set_defaults(func=hang)
            return p

        cli.build_parser = parser
        sys.exit(cli.main([]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err


def test_a_stopped_command_exits_even_when_a_library_thread_would_hold_shutdown(tmp_path: Path) -> None:
    """A non-daemon thread that never ends (as Prefect's process-pool message forwarding was seen
    to, holding a Ctrl-C'd ``synthloop run`` for over a minute after its last line): the console
    entry point :func:`flows.cli.run` exits 128 + signal at once after the stop line."""
    code = textwrap.dedent("""
        import argparse, threading, time
        import flows.cli as cli

        def hang(args):
            threading.Thread(target=threading.Event().wait, daemon=False).start()  # never ends
            print("ready", flush=True)
            time.sleep(60)

        def parser():
            p = argparse.ArgumentParser()
            p.set_defaults(func=hang)
            return p

        cli.build_parser = parser
        cli.run([])
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the stopped command waited on its library thread") from None
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "interrupted (SIGINT)" in err
