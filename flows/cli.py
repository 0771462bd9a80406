"""The ``synthloop`` command.

Each subcommand lives in :mod:`flows.commands.<module>` with ``add_parser(subparsers)`` and
``run(args) -> int``. Heavy libraries are imported inside ``run`` so ``--help`` stays fast.
User errors (:class:`generator.errors.SynthloopError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    try:
        return int(args.func(args) or 0)
    except SynthloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing partial was published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
