"""One error family for every synthloop library.

Messages state the rule, the value and the fix, on one line, so the CLI can print
``error: <message>`` and exit 2 without a traceback.
"""

from __future__ import annotations


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
