"""Per-stage wall-clock accumulator for the render pipeline (benchmarks/render_throughput.py).

One :class:`StageTimes` is passed down explicitly (no module state): ``with times("sensor"):``
adds the block's wall time to the ``sensor`` stage. Timing never changes what is computed;
:data:`NO_TIMES` is the do-nothing default, so an untimed render pays one method call per stage.
Stages do not nest. A stage named ``thread.stage`` ran on another thread (the render
pipeline's encode thread), overlapping this thread's stages, so it is left out of ``other``.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType


class _Stage:
    __slots__ = ("_name", "_t0", "_times")

    def __init__(self, times: StageTimes, name: str) -> None:
        self._times, self._name, self._t0 = times, name, 0.0

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._times.add(self._name, time.perf_counter() - self._t0)


class _NoStage:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        return None


_NO_STAGE = _NoStage()


class StageTimes:
    """Seconds and call counts per named stage, in first-seen order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()  # one accumulator may be fed from two threads

    def __call__(self, name: str) -> _Stage | _NoStage:
        return _Stage(self, name)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.calls[name] = self.calls.get(name, 0) + 1

    def merge(self, other: StageTimes, prefix: str = "") -> None:
        """Add ``other``'s stages, renamed ``prefix + name``."""
        for name, seconds in list(other.seconds.items()):
            self.add(prefix + name, seconds)

    def __bool__(self) -> bool:
        return True

    def per_image_ms(self, images: int, total_s: float | None = None) -> dict[str, float]:
        """Milliseconds per image by stage; with ``total_s``, the untimed rest as ``other``."""
        out = {k: round(1e3 * v / max(images, 1), 2) for k, v in self.seconds.items()}
        if total_s is not None:
            here = sum(v for k, v in self.seconds.items() if "." not in k)
            out["other"] = round(1e3 * (total_s - here) / max(images, 1), 2)
        return out


class _NoTimes(StageTimes):
    def __call__(self, name: str) -> _Stage | _NoStage:
        return _NO_STAGE

    def add(self, name: str, seconds: float) -> None:
        return None

    def merge(self, other: StageTimes, prefix: str = "") -> None:
        return None

    def __bool__(self) -> bool:
        return False


NO_TIMES: StageTimes = _NoTimes()
