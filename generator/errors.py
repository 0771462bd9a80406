"""One error family for every synthloop library.

Messages state the rule, the value and the fix, on one line, so the CLI can print
``error: <message>`` and exit 2 without a traceback.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import TypeGuard


class SynthloopError(Exception):
    """Base class: any error a user can cause and fix (bad input, missing file, no EGL)."""

    exit_code = 2


class ConfigError(SynthloopError):
    """A scenario, params file or option is malformed or out of range."""


class ShardError(SynthloopError):
    """A shard directory is missing, incomplete or inconsistent."""


class RenderError(SynthloopError):
    """The renderer cannot start or render (e.g. EGL unavailable)."""


class DataError(SynthloopError):
    """A dataset (real, imported or production) is empty, corrupt or mismatched."""


class BusyError(SynthloopError):
    """The resource is in use by another run (a loop work directory); try again later."""

    exit_code = 75  # EX_TEMPFAIL


def field_error(path: str, rule: str, value: object, fix: str | None = None) -> ConfigError:
    """Build the canonical one-line error: ``<path>: <rule>, but got <value>[; <fix>]``."""
    msg = f"{path}: {rule}, but got {value!r}"
    if fix:
        msg += f"; {fix}"
    return ConfigError(msg)


def is_int(value: object) -> TypeGuard[int]:
    """An integer a setting may hold: ``int`` or a NumPy integer, never a bool (``True`` is an
    ``int`` to Python, but ``--set batch_size=true`` is a mistake)."""
    return isinstance(value, int | numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    """A finite real number (int, float or a NumPy scalar), never a bool, NaN or infinity."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")  # the password of scheme://user:password@host


def redact(url: object) -> str:
    """A URL with its password replaced by ``***`` (also one SQLAlchemy cannot parse): an error
    line never prints a password."""
    return _PASSWORD.sub(r"\1***@", str(url))


def driver_error_line(exc: BaseException) -> str:
    """The first line of what a database driver said (SQLAlchemy's ``orig`` when wrapped),
    password redacted: the parenthesis of a store's one-line error."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return redact(text[0] if text else type(orig).__name__)
