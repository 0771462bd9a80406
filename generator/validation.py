"""Pydantic and YAML errors as the one-line messages synthloop promises: the one home of both.

Every validated input (scenario and params files, loop and monitor settings, production log
lines, embedded specs) reports its first pydantic error through :func:`first_error`, and
every YAML/JSON file is read by :func:`load_yaml_or_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from generator.errors import ConfigError, SynthloopError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class FirstError:
    """The first of a validation error's problems."""

    loc: str  # the dotted field path ("" at the top level)
    rule: str  # pydantic's message, lower-case first letter, without "Value error, "
    value: Any  # the offending input
    kind: str  # pydantic's error type: "missing", "extra_forbidden", "json_invalid", ...
    more: int  # how many other problems the error holds


def first_error(exc: ValidationError) -> FirstError:
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    return FirstError(loc=".".join(str(p) for p in err["loc"]), rule=msg[:1].lower() + msg[1:],
                      value=err.get("input"), kind=str(err["type"]), more=exc.error_count() - 1)


def first_error_line(exc: ValidationError, source: str, sep: str = ": ", missing_fix: str | None = None) -> str:
    """``<source><sep><field>: <rule>, but got <value>`` for the first problem (a mapping value
    is shown as ``{…}``; ``(+N more)`` when there are others). A missing field reads
    ``<field>: is required[ (<missing_fix>)], but got none``; ``{field}`` in ``missing_fix`` is
    replaced by the field's path."""
    e = first_error(exc)
    where = f"{source}{sep}{e.loc or '(top level)'}"
    more = f" (+{e.more} more)" if e.more else ""
    if e.kind == "missing":
        fix = f" ({missing_fix.replace('{field}', e.loc)})" if missing_fix else ""
        return f"{where}: is required{fix}, but got none{more}"
    shown = "{…}" if isinstance(e.value, dict) else repr(e.value)
    return f"{where}: {e.rule}, but got {shown}{more}"


def load_yaml_or_json(path: str | Path, what: str, error: type[SynthloopError] = ConfigError) -> Any:
    """A YAML (or JSON) file's content; one ``error`` line naming ``what`` for a missing or
    unreadable file, text that is not UTF-8, or a syntax error (with its line and column)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what}: file {str(path)!r} does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what}: {str(path)!r} must be UTF-8 text, but byte {exc.start} is not; "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise error(f"{what}: cannot read {path}: {exc}") from exc
    try:
        return yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{what}: {path} is not valid YAML/JSON{where}: {problem}; fix the syntax") from exc


def parse_model(model: type[M], data: Any, source: str) -> M:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, but got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(first_error_line(exc, source)) from exc
