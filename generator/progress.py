"""Progress a user can see: a tqdm bar on a terminal, one line per stage everywhere else.

Every long step of synthloop (render, the real set, training, evaluation, the loop's stages)
reports through this module, so one rule decides what appears on stderr:

- **bars** (:func:`bars_on` is True): a tqdm bar with count, percent, rate and ETA, redrawn
  in place with ``\\r``. When stderr is a terminal.
- **lines** (:func:`bars_on` is False): no bar at all; each stage prints one line when it
  finishes, e.g. ``render iter 0: 400 images in 2 shards … done in 12.3 s (32.5 img/s)``.
  When stderr is a pipe or a file (CI, ``> log``, Prefect workers without a terminal).

``SYNTHLOOP_PROGRESS`` overrides the terminal test: ``1`` forces bars, ``0`` forces lines
(unset, empty or ``auto``: decide by ``sys.stderr.isatty()``). Library functions keep their
``progress: bool`` parameter (False: silent); True means "report progress by this rule".

No Prefect or MLflow here: this is a library module (tqdm only).
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["ENV_VAR", "Stage", "bar", "bars_on", "done_line", "rate_text", "report"]

ENV_VAR = "SYNTHLOOP_PROGRESS"
_ON = {"1", "true", "yes", "on", "bar", "bars"}
_OFF = {"0", "false", "no", "off", "line", "lines"}
FALLBACK_COLUMNS, FALLBACK_ROWS = 100, 40


def bars_on(stream: TextIO | None = None) -> bool:
    """True: draw tqdm bars; False: one line per stage. ``SYNTHLOOP_PROGRESS`` (1/0) wins;
    otherwise bars exactly when ``stream`` (default ``sys.stderr``) is a terminal."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):  # not a terminal, or no file descriptor
        return 0


def bar(total: int | None, desc: str, unit: str = "img", *, show: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr that is drawn only when ``show`` and :func:`bars_on` (otherwise a
    disabled bar: ``update`` and ``set_postfix`` cost nothing and print nothing)."""
    if "ncols" not in kwargs:
        if _columns() > 0:
            kwargs.setdefault("dynamic_ncols", True)
        else:  # a terminal that reports no size (0x0, e.g. a bare pty): tqdm would draw nothing
            kwargs["ncols"], kwargs["nrows"] = FALLBACK_COLUMNS, FALLBACK_ROWS  # nrows 0 hides it too
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not (show and bars_on()), **kwargs)


def rate_text(count: float, seconds: float, unit: str) -> str:
    """``32.5 img/s`` (``–`` when nothing was timed)."""
    if seconds <= 0 or count <= 0:
        return f"– {unit}/s"
    rate = count / seconds
    return f"{rate:.1f} {unit}/s" if rate < 100 else f"{rate:.0f} {unit}/s"


def done_line(name: str, what: str, seconds: float, count: float | None = None, unit: str = "img",
              extra: str = "") -> str:
    """The one line of a finished stage: ``NAME: WHAT … done in S s (RATE)[, EXTRA]``."""
    rate = f" ({rate_text(count, seconds, unit)})" if count is not None else ""
    tail = f", {extra}" if extra else ""
    return f"{name}: {what} … done in {seconds:.1f} s{rate}{tail}"


def report(text: str, *, show: bool = True, always: bool = False) -> None:
    """Print ``text`` as one line on stderr: when ``show`` and either ``always`` (a stage
    without a bar) or lines are the mode (:func:`bars_on` is False: the bar was not drawn)."""
    if show and (always or not bars_on()):
        print(text, file=sys.stderr, flush=True)


class Stage:
    """One long step: a bar while it runs (terminal), else one :func:`done_line` when it ends.

        with Stage("render digits", total=n, what=f"{n} images") as st:
            for _ in ...:
                st.update(1)

    ``show=False`` makes it silent. On an exception, or after :meth:`close`, the bar is closed
    and no line is printed.
    ``done(...)`` may be called inside the block to change what the line says (count, unit,
    extra); otherwise it is printed on a clean exit with the bar's count.
    """

    def __init__(self, name: str, total: int | None, unit: str = "img", *, what: str | None = None,
                 show: bool = True, position: int = 0, leave: bool = True) -> None:
        self.name, self.total, self.unit, self.show = name, total, unit, show
        self.what = what if what is not None else (f"{total} {unit}" if total is not None else "")
        self._kwargs = {"position": position, "leave": leave}
        self._bar: tqdm | None = None  # opened on the first update: setup errors print alone
        self.count = 0
        self.start = time.perf_counter()
        self._finished = False

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def _open(self) -> tqdm:
        if self._bar is None:
            self._bar = bar(self.total, self.name, self.unit, show=self.show, **self._kwargs)
        return self._bar

    def update(self, n: int = 1) -> None:
        self.count += n
        self._open().update(n)

    def set_postfix(self, **kwargs: Any) -> None:
        self._open().set_postfix(**kwargs)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        """End the stage without its line (someone else reports it)."""
        self._finished = True
        self._close_bar()

    def done(self, what: str | None = None, count: float | None = None, unit: str | None = None,
             extra: str = "") -> None:
        """Close the bar; in line mode print the stage's line (once)."""
        seconds = self.seconds
        self._close_bar()
        if self._finished:
            return
        self._finished = True
        report(done_line(self.name, self.what if what is None else what, seconds,
                         self.count if count is None else count, unit or self.unit, extra), show=self.show)

    def __enter__(self) -> Stage:
        self.start = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.done()
        else:
            self.close()
