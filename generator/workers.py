"""Worker processes end at once, and quietly, on Ctrl-C.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the command and every
worker it spawned. Left at Python's default, each worker raises ``KeyboardInterrupt`` inside
whatever it was doing and prints its own traceback (a hundred lines per worker), and a pool then
waits for it. The command is the one place that reports the stop; a worker just ends. What it
was writing is written atomically (temp + rename), so nothing partial is left.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


def exit_on_sigint() -> None:
    """Make SIGINT end this (worker) process at once with status 130. Call it in the worker's
    pool initializer; the parent process keeps Python's ``KeyboardInterrupt``."""
    signal.signal(signal.SIGINT, _exit)


def _exit(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)
