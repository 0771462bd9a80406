"""One module per ``synthloop`` subcommand, each with ``add_parser(sub)`` and ``run(args)``.

A subcommand with actions (``synthloop data real``, ``synthloop production ingest``,
``synthloop policy next``) registers them through :func:`add_group`: each action is an
``(add, run)`` pair, ``add(subparsers) -> parser`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

Action = tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]


def add_group(sub: Any, name: str, help: str, description: str, actions: Mapping[str, Action]) -> None:
    """Register ``name`` with one sub-parser per action; the parsed args run that action's ``run``."""
    p = sub.add_parser(name, help=help, description=description)
    group = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, (add, run) in actions.items():
        add(group).set_defaults(func=run, action=action)
