"""Atomic writes: a reader never sees a half-written file or directory.

Files go to a temporary sibling and are renamed into place (``os.replace`` is atomic on
POSIX within one filesystem). Directories are built under a hidden temporary sibling and
renamed when complete; an interrupted build leaves only a ``.tmp-*`` directory, which
no reader treats as a shard.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generator.errors import ConfigError

TMP_PREFIX = ".tmp-"


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def jsonable(value: Any, ndigits: int = 6) -> Any:
    """JSON-able copy for canonical files: numpy scalars to Python, floats rounded to
    ``ndigits`` places, NaN/inf to None (JSON has no NaN), dict keys to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, ndigits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, ndigits) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        return round(value, ndigits) if math.isfinite(value) else None
    return value


def dumps_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no NaN): byte-identical for equal inputs."""
    return json.dumps(obj, sort_keys=True, indent=1, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, dumps_json(obj))


def prepare_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Check that ``out`` may be (re)written; refuse a non-empty directory unless overwrite."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: must be a directory path, but {str(out)!r} is a file; pick another path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out: directory must be empty or absent, but {str(out)!r} is not empty; "
            "pass --overwrite to replace it or choose another --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: parent directory cannot be created ({exc.strerror}): {str(parent)!r}") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: directory {str(parent)!r} is not writable; choose a writable --out")
    return out


def prepare_output_file(path: str | Path | None, option: str) -> Path | None:
    """Fail fast, before any work, when an output file cannot be written (None passes)."""
    if path is None:
        return None
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ConfigError(f"{option}: must be a file path, but {str(path)!r} is a directory")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option}: directory {str(parent)!r} must exist and be writable, but is not; "
            "create it or choose another path"
        )
    return out


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block succeeds."""
    out = prepare_output_dir(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out.name}-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            trash = out.parent / f"{TMP_PREFIX}old-{out.name}-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
