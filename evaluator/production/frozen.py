"""Frozen production windows: what the monitor keeps of one ingested window, and how the loop
reads it back (no Prefect, no MLflow).

The production monitor (:mod:`flows.orchestration.monitor`) freezes every window that has data into its own
directory, written atomically, so a loop run triggered later (or rerun next month) sees exactly
the records the monitor saw, whatever happened to the log since::

    WINDOWS/<window id>/
      window.json        kind synthloop-production-window: id, log, state, ingest counts, first/last
                         timestamp, frames, reviewed frames, model versions, what the signals used
      records.jsonl      the window's valid new records in log order (production-log format),
                         ``image`` rewritten to ``frames/<n>.<ext>`` (relative to this file)
      frames/            copies of the frames the records point at (mode: the source's without
                         group/other write or any execute bit, e.g. 0640 stays 0640)
      signals.json, .md  the monitor's signals (its reference shards, its real-val report's bins)
      report.json, .md   the merged report, when the monitor had a real-val report
      trigger.json       added later (atomically) when the window triggered a loop run

The loop does not reuse the monitor's signals: :func:`replay_signals` re-slices the records
against *its own* iteration's real-val report and training shards (the merge requires signals
binned with the very report they are merged into).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from evaluator.production.ingest import IngestedRecord, Window
from evaluator.production.log import MAX_FRAME_BYTES, Malformed, parse_line, record_line, resolve_image
from generator import atomic
from generator.errors import ConfigError, DataError

WINDOW_KIND = "synthloop-production-window"
WINDOW_VERSION = 1
WINDOW_FILE = "window.json"
RECORDS_FILE = "records.jsonl"
TRIGGER_FILE = "trigger.json"


def _frame_line(item: IngestedRecord, index: int) -> tuple[str, str]:
    """``(frame file name, canonical record line)`` of one record, its image renamed."""
    name = f"{index:06d}{item.image_path.suffix.lower() or '.png'}"
    data = item.record.model_dump(mode="json", by_alias=True)
    data["image"] = f"frames/{name}"
    return name, record_line(data)


def copy_frame(src: Path, dst: Path) -> None:
    """Copy a checked frame without widening its permissions: ``dst`` gets the source's mode
    less group/other write and execute bits (a 0640 frame stays 0640, never 0644), so a frozen
    window is never more readable than the frames it copies. ``src`` is the frame as checked at
    ingest (symlinks resolved); a frame replaced since by a symlink, a non-regular file or one
    over :data:`MAX_FRAME_BYTES` is refused."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise DataError(f"frame {str(src)!r}: must still be the regular file checked at ingest ({exc.strerror}); "
                        "rerun the monitor to read the window again") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FRAME_BYTES:
            raise DataError(f"frame {str(src)!r}: must be a regular file of at most {MAX_FRAME_BYTES} bytes "
                            "as checked at ingest; rerun the monitor to read the window again")
        data = fh.read(MAX_FRAME_BYTES + 1)
    if len(data) > MAX_FRAME_BYTES:
        raise DataError(f"frame {str(src)!r}: grew past {MAX_FRAME_BYTES} bytes since ingest; rerun the monitor")
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(st.st_mode) & 0o644)
    with os.fdopen(out, "wb") as fh:
        fh.write(data)


def window_info(window: Window, signals: dict[str, Any]) -> dict[str, Any]:
    """The ``window.json`` of a window (counts and timestamps from its signals)."""
    block = signals.get("window") or {}
    overall = signals.get("overall") or {}
    return {"kind": WINDOW_KIND, "version": WINDOW_VERSION, "id": window.window_id,
            "log": str(Path(window.log).resolve()), "state": str(Path(window.state_path).resolve()),
            "counts": dict(window.counts), "frames": len(window.records),
            "reviewed_frames": sum(r.record.reviewed for r in window.records),
            "first_timestamp": block.get("first_timestamp"), "last_timestamp": block.get("last_timestamp"),
            "model_versions": block.get("model_versions"), "records": RECORDS_FILE,
            "readable_frames": overall.get("readable_frames"),
            "signals": {"reference": signals.get("reference"), "sliced_with": signals.get("sliced_with")}}


def freeze_window(window: Window, root: str | Path, signals: dict[str, Any],
                  merged: dict[str, Any] | None = None) -> Path:
    """Write ``root/<window id>/`` atomically (module docstring) and return it. A window
    already frozen there (same id) is kept as it is: a rerun after a crash changes nothing."""
    from evaluator.production.report import merged_markdown, signals_markdown

    out = Path(root) / window.window_id
    if is_frozen(out, window.window_id):
        return out
    Path(root).mkdir(parents=True, exist_ok=True)
    with atomic.atomic_dir(out, overwrite=True) as tmp:
        (tmp / "signals.json").write_text(atomic.dumps_json(signals))
        (tmp / "signals.md").write_text(signals_markdown(signals))
        if merged is not None:
            (tmp / "report.json").write_text(atomic.dumps_json(merged))
            (tmp / "report.md").write_text(merged_markdown(merged))
        (tmp / "frames").mkdir()
        lines = []
        for i, item in enumerate(window.records):
            name, line = _frame_line(item, i)
            copy_frame(item.image_path, tmp / "frames" / name)
            lines.append(line)
        (tmp / RECORDS_FILE).write_text("".join(lines), encoding="utf-8")
        (tmp / WINDOW_FILE).write_text(atomic.dumps_json(atomic.jsonable(window_info(window, signals))))
    return out


def is_frozen(path: str | Path, window_id: str | None = None) -> bool:
    """True when ``path`` holds a complete frozen window (of ``window_id`` when given)."""
    try:
        info = json.loads((Path(path) / WINDOW_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(info, dict) and info.get("kind") == WINDOW_KIND
            and (window_id is None or info.get("id") == window_id))


def read_info(path: str | Path, field: str = "loop.production") -> dict[str, Any]:
    """``window.json`` of a frozen window; a ConfigError naming ``field`` when it is not one."""
    p = Path(path)
    try:
        info = json.loads((p / WINDOW_FILE).read_text(encoding="utf-8"))
        ok = isinstance(info, dict) and info.get("kind") == WINDOW_KIND and (p / RECORDS_FILE).is_file()
    except (OSError, ValueError):
        ok, info = False, None
    if not ok or info.get("version") != WINDOW_VERSION:
        raise ConfigError(f"{field}: must be a frozen production window directory ({WINDOW_FILE} of kind "
                          f"{WINDOW_KIND!r} v{WINDOW_VERSION} and {RECORDS_FILE}), but got {str(p)!r}; pass a "
                          "directory written by `synthloop monitor` (WINDOWS_DIR/<window id>)")
    return info


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_window(path: str | Path, classes: list[str] | None = None) -> Window:
    """The frozen window as an ingest :class:`Window` (its original id and ingest counts), read
    from ``records.jsonl``; a record that no longer validates is a DataError."""
    p = Path(path)
    info = read_info(p)
    records = []
    text = (p / RECORDS_FILE).read_text(encoding="utf-8")
    for i, line in enumerate(text.splitlines(), start=1):
        parsed = parse_line(line, RECORDS_FILE, i, p, classes)
        if isinstance(parsed, Malformed):
            raise DataError(f"loop.production: {str(p)!r} {parsed.describe()}; the frozen window is damaged, "
                            "freeze it again with `synthloop monitor` or drop `production`")
        records.append(IngestedRecord(RECORDS_FILE, i, parsed, Path(resolve_image(parsed.image, p))))
    if not records:
        raise DataError(f"loop.production: {str(p)!r} holds no records; a frozen window always has data")
    return Window(window_id=str(info["id"]), log=p, state_path=p / WINDOW_FILE, counts=dict(info["counts"]),
                  malformed=[], notes=[f"replayed from the frozen window {p}"], next_state={}, state_sha="",
                  records=records)


def replay_signals(path: str | Path, reference: list[Path], scenario: Any, options: Any,
                   val_report: dict[str, Any]) -> dict[str, Any]:
    """Signals of the frozen window at ``path`` against ``reference`` shards, binned with
    ``val_report``'s edges (so they merge into that report)."""
    from evaluator.production import reference_tables, window_signals

    window = load_window(path, scenario.classes)
    return window_signals(window, reference_tables(reference), scenario, options, val_report)


def read_trigger(path: str | Path) -> dict[str, Any] | None:
    """The loop run this window triggered (``trigger.json``), or None."""
    return read_json(Path(path) / TRIGGER_FILE)


def write_trigger(path: str | Path, trigger: dict[str, Any]) -> None:
    """Record the triggered loop run in the window directory (one atomic file)."""
    atomic.write_json(Path(path) / TRIGGER_FILE, atomic.jsonable(trigger))


def window_table(path: str | Path) -> Any:
    """One row per frozen record (id, timestamp, model_version, predictions, reviewed): what an
    MLflow dataset of the window shows."""
    import pandas as pd

    rows = []
    for line in (Path(path) / RECORDS_FILE).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        rows.append({"id": r.get("id"), "timestamp": r["timestamp"], "model_version": r["model_version"],
                     "predictions": len(r["predictions"]), "reviewed": r.get("labels") is not None,
                     "labels": len(r.get("labels") or [])})
    return pd.DataFrame(rows, columns=["id", "timestamp", "model_version", "predictions", "reviewed", "labels"])
