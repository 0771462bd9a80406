"""The ``synthloop`` command.

Each subcommand lives in :mod:`flows.commands.<module>` with ``add_parser(subparsers)`` and
``run(args) -> int`` (a subcommand with actions: one ``run`` per action, registered by
:func:`flows.commands.add_group`). Heavy libraries are imported inside ``run`` so ``--help``
stays fast.
User errors (:class:`generator.errors.SynthloopError`) print one line and exit 2; a failing disk
exits 74; Ctrl-C / SIGTERM stop everything the command started and exit 130 / 143
(:mod:`flows.loop.process_guard`, which also stops it all if the command is SIGKILLed).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # before anything can import OpenGL
# torch's OpenMP threads busy-wait by default: on a shared 2-core machine that costs ~5x when
# anything else runs. Passive waiting keeps ~45-55 img/s training there (must precede torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from generator import __version__
from generator.errors import SynthloopError

# subcommand -> module under flows.commands (order = order in --help)
COMMANDS: dict[str, str] = {
    "run": "run",
    "serve": "serve",
    "render": "render",
    "data": "data",
    "train": "train",
    "evaluate": "evaluate",
    "policy": "policy",
    "calibrate": "calibrate",
    "base-model": "base_model",
    "production": "production",
    "monitor": "monitor",
    "validate": "validate",
    "coverage": "coverage",
    "preview": "preview",
    "export": "export",
    "demo": "demo",
    "lineage": "lineage",
    "stores": "stores",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthloop",
        description="Closed-loop synthetic data engine: render, train, evaluate, steer generation.",
    )
    parser.add_argument("--version", action="version", version=f"synthloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        mod = importlib.import_module(f"flows.commands.{module}")
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from flows.loop import process_guard

    try:
        with process_guard.guard():  # Ctrl-C, SIGTERM or its death stop all it started
            return int(args.func(args) or 0)
    except BaseException as exc:
        return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    """The exit status (and one stderr line) for what a subcommand raised; re-raises the rest."""
    from flows.loop import process_guard

    sig = process_guard.received()
    if sig is not None or isinstance(exc, KeyboardInterrupt):
        # stopped by a signal: whatever the interrupted code raised on its way out (Prefect's crash
        # handler can turn the KeyboardInterrupt into its own ValueError) is part of the stop
        sig = sig or signal.SIGINT
        print(f"error: interrupted ({signal.Signals(sig).name}); nothing partial was published and a loop "
              "resumes where it stopped", file=sys.stderr)
        return 128 + int(sig)
    if isinstance(exc, SynthloopError):
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, OSError) and os.environ.get("SYNTHLOOP_DEBUG") != "1":
        # a full disk, a read-only or vanished mount: the machine, not the input
        print(f"error: {io_error_line(exc)}", file=sys.stderr)
        return EX_IOERR
    raise exc


EX_IOERR = 74  # sysexits.h: an input/output error; distinct from bad input (2)
_IO_FIX = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free space under your quota",
           errno.EROFS: "make the file system writable", errno.EACCES: "fix the permissions",
           errno.EPERM: "fix the permissions"}


def io_error_line(exc: OSError) -> str:
    """``<path>: <what failed> (<ERRNO>); <fix> and re-run: a loop resumes where it stopped``."""
    where = exc.filename or "a file"
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    fix = _IO_FIX.get(exc.errno or 0, "check the disk and the path")
    return (f"{where}: {exc.strerror or exc} ({name}); {fix} and re-run — nothing partial was published and "
            "a loop resumes where it stopped (SYNTHLOOP_DEBUG=1 shows the traceback)")


def run(argv: list[str] | None = None) -> None:
    """The console script: :func:`main`, then exit. After a stop by signal the exit is
    immediate (``os._exit`` once the output is flushed): the guard has already stopped and swept
    everything the command started, and interpreter shutdown could otherwise wait without end on
    a library's non-daemon thread or atexit join (Prefect's process-pool message forwarding was
    seen holding a Ctrl-C'd ``synthloop run`` for over a minute after its last line)."""
    from flows.loop import process_guard

    code = main(argv)
    if process_guard.received() is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
