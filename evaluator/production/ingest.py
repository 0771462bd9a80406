"""Ingest a production log with a watermark, so every record is counted once across runs.

:func:`read_window` reads what is new under a log directory since the last *committed* run and
returns a :class:`Window` (new valid records) or :class:`NoData` (nothing new and valid — an
explicit result, never an empty signal). :func:`commit` then writes the advanced watermark
atomically. The caller writes its outputs *between* the two calls::

    result = read_window("prod/log")            # nothing is changed on disk
    ...write the signals of result...           # keyed by result.window_id
    commit(result)                              # atomic; only now is the window consumed

Crash safety: a crash before :func:`commit` leaves the state as it was, so the next run reads
the same lines again and gets the **same** ``window_id`` (it is a hash of the state it started
from and of the bytes it read): outputs keyed by the window id are rewritten identically, and
no record is counted in two windows. :func:`commit` refuses (``DataError``) when the state file
changed since it was read (another ingester committed first).

The watermark (state file, default ``LOG/ingest-state.json``) holds per log file the byte
offset and line count consumed plus a hash of the 64 KiB before the offset (a file rewritten
in place is detected and re-read from the start), the identities of every record ingested
(duplicates across files or rewrites are counted as ``duplicate``, not again as new), running
totals, and one entry per committed window with its counts.

Frames: a record's ``image`` must resolve (symlinks followed) inside the *frames root* — the
``frames_root`` argument, by default the log directory's parent (a stream keeps ``log/`` and
``frames/`` side by side) — and be a decodable image within the size caps; any other record is
malformed (``evaluator.production.log.check_frame``). A log line never makes the ingester read,
or the monitor copy, a file outside that root.

Only complete lines (ending in ``\\n``) are consumed: a last line still being written is left
for the next run (``counts.partial_lines``). Malformed lines are skipped, reported with file,
line number, field and rule, and consumed (reported once).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.production.log import LOG_SUFFIX, Malformed, ProductionRecord, parse_line, resolve_image
from generator import atomic
from generator.errors import ConfigError, DataError

STATE_FILE = "ingest-state.json"
STATE_KIND = "synthloop-ingest-state"
STATE_VERSION = 1
TAIL_BYTES = 65536  # bytes before the watermark whose hash detects a rewritten file


@dataclass(frozen=True)
class IngestedRecord:
    """A valid new record and where it came from (``image_path``: the checked frame, symlinks
    resolved, inside the frames root)."""

    file: str
    line: int
    record: ProductionRecord
    image_path: Path


@dataclass
class _Result:
    window_id: str
    log: Path
    state_path: Path
    counts: dict[str, int]  # total = new + duplicate + malformed (complete non-blank lines read)
    malformed: list[Malformed]
    notes: list[str]
    next_state: dict[str, Any] = field(repr=False)
    state_sha: str = field(repr=False)  # sha256 of the state file as read ("" when absent)

    def summary(self) -> dict[str, Any]:
        return {"window_id": self.window_id, "log": str(self.log), "state": str(self.state_path),
                "counts": dict(self.counts), "malformed": [m.to_dict() for m in self.malformed],
                "notes": list(self.notes)}


@dataclass
class Window(_Result):
    """New valid records since the last committed run, in log order."""

    records: list[IngestedRecord] = field(default_factory=list)


@dataclass
class NoData(_Result):
    """Nothing new and valid: ``reason`` says why. Commit it anyway to consume malformed lines."""

    reason: str = ""


def _empty_state(log: Path) -> dict[str, Any]:
    return {"kind": STATE_KIND, "version": STATE_VERSION, "log": str(log.resolve()), "files": {},
            "seen": [], "totals": {"total": 0, "new": 0, "duplicate": 0, "malformed": 0},
            "windows": []}


def load_state(path: Path, log: Path) -> tuple[dict[str, Any], str]:
    """The state at ``path`` (an empty one when absent) and the sha256 of its bytes."""
    if not path.exists():
        return _empty_state(log), ""
    try:
        raw = path.read_bytes()
        state = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise DataError(f"--state: {str(path)!r} is not a readable ingest state ({exc}); restore it, or "
                        "delete it to re-ingest the whole log (its records are then counted again)") from exc
    if not isinstance(state, dict) or state.get("kind") != STATE_KIND or state.get("version") != STATE_VERSION:
        raise DataError(f"--state: {str(path)!r} must be a {STATE_KIND} v{STATE_VERSION} file, but got "
                        f"kind={state.get('kind') if isinstance(state, dict) else None!r}; pass another --state")
    return state, hashlib.sha256(raw).hexdigest()


def _tail_sha(data: bytes) -> str:
    return hashlib.sha256(data[-TAIL_BYTES:]).hexdigest()


def _log_files(log: Path) -> list[Path]:
    return sorted(p for p in log.rglob(f"*{LOG_SUFFIX}") if p.is_file())


@dataclass
class _Read:
    """What one file contributes: complete new lines and where reading started."""

    rel: str
    start: int
    first_line: int
    lines: list[bytes]
    end: int
    partial: bool
    rewritten: bool


def _read_file(path: Path, rel: str, mark: dict[str, Any] | None) -> tuple[_Read, bytes]:
    data = path.read_bytes()
    start, first, rewritten = 0, 1, False
    if mark is not None:
        off = int(mark["offset"])
        if off <= len(data) and _tail_sha(data[:off]) == mark["tail_sha256"]:
            start, first = off, int(mark["lines"]) + 1
        else:
            rewritten = True
    body = data[start:]
    cut = body.rfind(b"\n") + 1  # complete lines only
    lines = body[:cut].split(b"\n")[:-1] if cut else []
    read = _Read(rel, start, first, lines, start + cut, partial=cut < len(body), rewritten=rewritten)
    return read, data[: start + cut]


def _parse(read: _Read, path: Path, root: Path, seen: set[str], classes: list[str] | None,
           counts: dict[str, int], malformed: list[Malformed], records: list[IngestedRecord]) -> None:
    for i, raw in enumerate(read.lines):
        line_no = read.first_line + i
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            counts["total"] += 1
            counts["malformed"] += 1
            malformed.append(Malformed(read.rel, line_no, "record", "must be UTF-8 text", f"bytes at {exc.start}"))
            continue
        if not text.strip():
            continue
        counts["total"] += 1
        parsed = parse_line(text, read.rel, line_no, path.parent, classes, root)
        if isinstance(parsed, Malformed):
            counts["malformed"] += 1
            malformed.append(parsed)
        elif parsed.key in seen:
            counts["duplicate"] += 1
        else:
            seen.add(parsed.key)
            counts["new"] += 1
            where = resolve_image(parsed.image, path.parent)  # a Path: parse_line checked it
            records.append(IngestedRecord(read.rel, line_no, parsed, Path(where).resolve()))


def check_log_dir(log: str | Path) -> Path:
    path = Path(log)
    if not path.is_dir():
        raise ConfigError(f"--log: must be a directory holding *{LOG_SUFFIX} files, but {str(path)!r} "
                          "is not a directory; pass the production log directory")
    return path


def frames_root_of(log_dir: Path, frames_root: str | Path | None) -> Path:
    """The directory every frame must resolve into: ``frames_root``, else the log's parent."""
    if frames_root is not None:
        root = Path(frames_root)
        if not root.is_dir():
            raise ConfigError(f"frames_root: must be the directory the frames live under, but {str(root)!r} "
                              "is not a directory; pass the directory holding the frames the log names")
        return root.resolve()
    root = log_dir.resolve().parent
    if root == Path(root.anchor):
        raise ConfigError(f"frames_root: the default (the log directory's parent) would be the filesystem root "
                          f"for log {str(log_dir)!r}; set frames_root to the directory holding the frames")
    return root


def read_window(log: str | Path, state: str | Path | None = None, classes: list[str] | None = None,
                frames_root: str | Path | None = None) -> Window | NoData:
    """Read every complete line not yet committed under ``log`` (see the module docstring).

    ``state`` defaults to ``LOG/ingest-state.json``; ``classes`` (the model's class names)
    makes predictions or labels of another class malformed; ``frames_root`` (default: the log
    directory's parent) is where every frame must lie. Changes nothing on disk."""
    log_dir = check_log_dir(log)
    root = frames_root_of(log_dir, frames_root)
    state_path = Path(state) if state is not None else log_dir / STATE_FILE
    old, state_sha = load_state(state_path, log_dir)
    nxt = json.loads(json.dumps(old))
    seen: set[str] = set(old["seen"])
    counts = {"total": 0, "new": 0, "duplicate": 0, "malformed": 0, "partial_lines": 0, "files": 0}
    malformed: list[Malformed] = []
    records: list[IngestedRecord] = []
    notes: list[str] = []
    reads: list[list[Any]] = []
    if old["log"] != str(log_dir.resolve()):
        notes.append(f"the state was written for log {old['log']!r}; its watermarks are applied to {str(log_dir)!r}")
    for path in _log_files(log_dir):
        rel = path.relative_to(log_dir).as_posix()
        read, consumed = _read_file(path, rel, old["files"].get(rel))
        if read.rewritten:
            notes.append(f"{rel}: changed before its watermark (rewritten or truncated); re-read from line 1, "
                         "records already ingested count as duplicates")
        counts["partial_lines"] += int(read.partial)
        if read.end == read.start:
            continue
        counts["files"] += 1
        _parse(read, path, root, seen, classes, counts, malformed, records)
        nxt["files"][rel] = {"offset": read.end, "lines": read.first_line - 1 + len(read.lines),
                             "tail_sha256": _tail_sha(consumed)}
        reads.append([rel, read.start, read.end, hashlib.sha256(consumed[read.start:]).hexdigest()])
    window_id = hashlib.sha256(json.dumps({"state": state_sha, "reads": reads}).encode()).hexdigest()[:16]
    _advance(nxt, seen, counts, window_id, bool(reads))
    common = {"window_id": window_id, "log": log_dir, "state_path": state_path, "counts": counts,
              "malformed": malformed, "notes": notes, "next_state": nxt, "state_sha": state_sha}
    if records:
        return Window(**common, records=records)
    return NoData(**common, reason=_no_data_reason(counts, log_dir))


def _advance(state: dict[str, Any], seen: set[str], counts: dict[str, int], window_id: str, read_any: bool) -> None:
    state["seen"] = sorted(seen)
    for k in ("total", "new", "duplicate", "malformed"):
        state["totals"][k] += counts[k]
    if read_any:
        state["windows"].append({"id": window_id, **{k: counts[k] for k in ("total", "new", "duplicate",
                                                                           "malformed")}})


def _no_data_reason(counts: dict[str, int], log: Path) -> str:
    if counts["total"] == 0:
        extra = " (an incomplete last line waits for its newline)" if counts["partial_lines"] else ""
        return f"no new complete lines under {str(log)!r} since the last committed ingest{extra}"
    return (f"{counts['total']} new lines, none of them a valid new record ({counts['malformed']} malformed, "
            f"{counts['duplicate']} duplicate)")


def commit(result: Window | NoData) -> None:
    """Write ``result``'s advanced watermark atomically; refuse if the state changed since read."""
    _, current = load_state(result.state_path, result.log)
    if current != result.state_sha:
        raise DataError(f"--state: {str(result.state_path)!r} changed since window {result.window_id} was read "
                        "(another ingest committed first); run the ingest again to read what is still new")
    result.state_path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(result.state_path, result.next_state)
