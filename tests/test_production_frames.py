"""Hostile production records (issue #15): a log line must never make the ingester read, or the
monitor copy, a file outside the frames root; frames must be decodable images within the size
caps; boxes must be finite and near the frame. Each is refused per record (malformed, counted),
never fatal."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import evaluator.production.log as plog
from evaluator.production.ingest import Window, read_window
from evaluator.production.log import Malformed, ProductionRecord, parse_line
from flows.cli import main
from generator.errors import ConfigError

CLASSES = ["a", "b", "c"]


def no_signals(w: Window) -> dict[str, Any]:
    """The smallest signals dict freeze_window can write (what is copied is under test here)."""
    return {"status": "no_data", "reason": "test", "window": {"id": w.window_id, "log": str(w.log)},
            "counts": {**w.counts}, "malformed": []}


def rec(i: int, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"r{i}", "timestamp": f"2024-01-01T00:{i % 60:02d}:00+00:00",
                           "image": "../frames/f.png", "model_version": "m1",
                           "predictions": [{"bbox": [1.0, 2.0, 5.0, 6.0], "class": "a", "score": 0.8}]}
    out.update(kw)
    return out


def line(r: dict[str, Any]) -> str:
    return json.dumps(r) + "\n"


def png(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(path)
    return path


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    """STREAM/log/ and STREAM/frames/f.png side by side (the simulator's layout), and a valid
    image *outside* the stream at tmp_path/outside/secret.png."""
    s = tmp_path / "stream"
    (s / "log").mkdir(parents=True)
    png(s / "frames" / "f.png")
    png(tmp_path / "outside" / "secret.png")
    return s


def refused(stream: Path, image: str, **kw: Any) -> Malformed:
    m = parse_line(line(rec(1, image=image)), "a.jsonl", 3, stream / "log", CLASSES, root=stream, **kw)
    assert isinstance(m, Malformed), m
    assert (m.file, m.line, m.field) == ("a.jsonl", 3, "image")
    return m


@pytest.mark.parametrize("image", ["/etc/passwd", "../../../../../../../../etc/hostname", "file:///etc/shadow",
                                   "../../outside/secret.png"])
def test_monitor_refuses_frame_outside_log_root(stream: Path, image: str) -> None:
    m = refused(stream, image)
    assert "must resolve inside the frames root" in m.rule
    assert m.describe().startswith("a.jsonl:3: image: must resolve inside")


def test_monitor_refuses_absolute_and_file_url_frames_outside_root_even_when_they_are_images(
        stream: Path, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.png"
    for image in (str(secret), secret.as_uri()):
        assert "frames root" in refused(stream, image).rule
    assert isinstance(parse_line(line(rec(1, image=(stream / "frames" / "f.png").as_uri())), "a", 1,
                                 stream / "log", CLASSES, root=stream), ProductionRecord)


def test_monitor_refuses_symlink_escaping_the_frames_root(stream: Path, tmp_path: Path) -> None:
    (stream / "frames" / "link.png").symlink_to(tmp_path / "outside" / "secret.png")
    assert "frames root" in refused(stream, "../frames/link.png").rule
    (stream / "frames" / "inside.png").symlink_to(stream / "frames" / "f.png")  # a link that stays inside is fine
    ok = parse_line(line(rec(1, image="../frames/inside.png")), "a", 1, stream / "log", CLASSES, root=stream)
    assert isinstance(ok, ProductionRecord)


def test_monitor_refuses_undecodable_frame(stream: Path) -> None:
    (stream / "frames" / "bad.png").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    assert "decodable image" in refused(stream, "../frames/bad.png").rule
    (stream / "frames" / "torn.png").write_bytes((stream / "frames" / "f.png").read_bytes()[:40])
    assert "decodable image" in refused(stream, "../frames/torn.png").rule


def test_monitor_refuses_oversize_frame(stream: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png(stream / "frames" / "big.png", size=9)
    monkeypatch.setattr(plog, "MAX_FRAME_PIXELS", 64)  # the 8x8 frame passes, 9x9 does not
    assert "at most 64 pixels" in refused(stream, "../frames/big.png").rule
    assert isinstance(parse_line(line(rec(1)), "a", 1, stream / "log", CLASSES, root=stream), ProductionRecord)
    monkeypatch.setattr(plog, "MAX_FRAME_BYTES", 10)
    assert "at most 10 bytes" in refused(stream, "../frames/f.png").rule


def test_hostile_records_are_counted_malformed_and_the_rest_of_the_window_is_ingested(stream: Path) -> None:
    (stream / "frames" / "bad.png").write_bytes(b"not an image")
    lines = [line(rec(1)), line(rec(2, image="/etc/passwd")), line(rec(3, image="file:///etc/shadow")),
             line(rec(4, image="../frames/bad.png")), line(rec(5, image="../frames/f.png"))]
    (stream / "log" / "a.jsonl").write_text("".join(lines))
    w = read_window(stream / "log", classes=CLASSES)  # default frames root: the log's parent
    assert isinstance(w, Window)
    assert (w.counts["new"], w.counts["malformed"]) == (2, 3)
    assert [(m.line, m.field) for m in w.malformed] == [(2, "image"), (3, "image"), (4, "image")]
    assert all(r.image_path == (stream / "frames" / "f.png").resolve() for r in w.records)
    narrow = read_window(stream / "log", classes=CLASSES, frames_root=stream / "log")
    assert narrow.counts["new"] == 0 and narrow.counts["malformed"] == 5  # frames/ is outside log/
    with pytest.raises(ConfigError, match="frames_root: must be the directory"):
        read_window(stream / "log", frames_root=stream / "nope")


def test_production_ingest_cli_reports_a_hostile_frame_as_malformed(stream: Path, tmp_path: Path, capsys) -> None:
    (stream / "log" / "a.jsonl").write_text(line(rec(1, image="/etc/passwd")))
    rc = main(["production", "ingest", "--log", str(stream / "log"), "--reference", str(tmp_path / "none"),
               "--out", str(tmp_path / "out"), "--frames-root", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: frames_root: must be the directory") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_frozen_window_frame_copy_keeps_a_restrictive_mode(stream: Path, tmp_path: Path) -> None:
    from evaluator.production.frozen import freeze_window

    frame = stream / "frames" / "f.png"
    os.chmod(frame, 0o640)
    (stream / "log" / "a.jsonl").write_text(line(rec(1)))
    w = read_window(stream / "log", classes=CLASSES)
    assert isinstance(w, Window)
    old = os.umask(0o022)
    try:
        out = freeze_window(w, tmp_path / "windows", no_signals(w))
    finally:
        os.umask(old)
    copy = out / "frames" / "000000.png"
    assert copy.read_bytes() == frame.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o640


def test_frame_replaced_by_a_symlink_after_ingest_is_not_copied(stream: Path, tmp_path: Path) -> None:
    from evaluator.production.frozen import freeze_window
    from generator.errors import DataError

    (stream / "log" / "a.jsonl").write_text(line(rec(1)))
    w = read_window(stream / "log", classes=CLASSES)
    frame = stream / "frames" / "f.png"
    frame.unlink()
    frame.symlink_to(tmp_path / "outside" / "secret.png")
    with pytest.raises(DataError, match="must still be the regular file checked at ingest"):
        freeze_window(w, tmp_path / "windows", no_signals(w))
    assert not any((tmp_path / "windows").glob("*/frames/*"))


# --- item 13: prediction boxes are bounded ----------------------------------------------------

@pytest.mark.parametrize(("bbox", "rule"), [
    ([1e308, 0.0, 3.0, 3.0], "within ±1e+06 pixels"),
    ([0.0, 0.0, 1e308, 3.0], "within ±1e+06 pixels"),
    ([-9.0, 0.0, 3.0, 3.0], "must lie within [-8, 16] x [-8, 16] of the 8x8 frame"),
    ([10.0, 10.0, 7.0, 3.0], "must lie within [-8, 16]"),
    ([0.0, 0.0, 3.0, 900.0], "must lie within"),
])
@pytest.mark.parametrize("group", ["predictions", "labels"])
def test_production_record_refuses_unbounded_boxes(stream: Path, bbox: list[float], rule: str, group: str) -> None:
    obj: dict[str, Any] = {"bbox": bbox, "class": "a"}
    if group == "predictions":
        obj["score"] = 0.5
    r = rec(1, **{group: [obj]}) if group == "predictions" else rec(1, labels=[obj])
    m = parse_line(line(r), "a.jsonl", 2, stream / "log", CLASSES, root=stream)
    assert isinstance(m, Malformed), m
    assert m.field.startswith(f"{group}.0.bbox") and rule in m.rule
    edge = rec(1, predictions=[{"bbox": [-8.0, -8.0, 24.0, 24.0], "class": "a", "score": 0.5}])
    assert isinstance(parse_line(line(edge), "a", 1, stream / "log", CLASSES, root=stream), ProductionRecord)


def test_monitor_settings_refuse_a_frames_root_that_is_not_a_directory(stream: Path) -> None:
    from flows.orchestration.monitor_settings import MonitorSettings

    with pytest.raises(ConfigError, match=r"^monitor.frames_root: must be the directory"):
        MonitorSettings(log=str(stream / "log"), frames_root=str(stream / "nope")).check()


def test_signals_do_not_read_a_frame_swapped_for_a_symlink_after_ingest(stream: Path, tmp_path: Path) -> None:
    from evaluator.production.tables import load_rgb

    (stream / "log" / "a.jsonl").write_text(line(rec(1)))
    w = read_window(stream / "log", classes=CLASSES)
    assert isinstance(w, Window)
    path = w.records[0].image_path
    assert load_rgb(path) is not None
    path.unlink()
    path.symlink_to(tmp_path / "outside" / "secret.png")
    assert load_rgb(path) is None
