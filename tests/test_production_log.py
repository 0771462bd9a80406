"""Production log format and watermarked ingest: every record counted once, bad lines reported.

Records point at one tiny PNG; nothing here decodes pixels, so every test runs in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import generator.atomic
from evaluator.production.ingest import STATE_FILE, NoData, Window, commit, read_window
from evaluator.production.log import Malformed, ProductionRecord, parse_line, record_line
from flows.cli import main
from generator.errors import ConfigError, DataError

CLASSES = ["a", "b", "c"]


def rec(i: int, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"r{i}", "timestamp": f"2024-01-01T00:{i % 60:02d}:00+00:00",
                           "image": "frame.png", "model_version": "m1",
                           "predictions": [{"bbox": [1.0, 2.0, 5.0, 6.0], "class": "a", "score": 0.8}]}
    out.update(kw)
    return out


def line(r: dict[str, Any]) -> str:
    return json.dumps(r) + "\n"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    d = tmp_path / "log"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "frame.png")
    return d


def write(path: Path, lines: list[str], mode: str = "w") -> None:
    with open(path, mode) as fh:
        fh.write("".join(lines))


# --- the record format -----------------------------------------------------------------------

def test_valid_record_parses_with_identity_and_review_flag(log: Path) -> None:
    r = parse_line(line(rec(1, labels=[])), "x.jsonl", 1, log, CLASSES)
    assert isinstance(r, ProductionRecord)
    assert (r.key, r.reviewed, r.predictions[0].cls) == ("id:r1", True, "a")
    no_id = rec(2)
    del no_id["id"]
    r2 = parse_line(line(no_id), "x.jsonl", 1, log)
    assert isinstance(r2, ProductionRecord) and not r2.reviewed
    assert r2.key == "tim:2024-01-01T00:02:00+00:00|frame.png|m1"


@pytest.mark.parametrize(("text", "field", "rule"), [
    ("not json", "record", "one JSON object per line"),
    ("[1, 2]", "record", "object"),
    (line(rec(1, timestamp="2024-01-01T00:00:00")), "timestamp", "timezone"),
    (line(rec(1, predictions=[{"bbox": [0, 0, 3, 3], "class": "a", "score": 1.5}])), "predictions.0.score", "1"),
    (line(rec(1, predictions=[{"bbox": [0, 0, 0, 3], "class": "a", "score": 0.5}])), "predictions.0.bbox", "> 0"),
    (line(rec(1, predictions=[{"bbox": [0, 0, 3], "class": "a", "score": 0.5}])), "predictions.0.bbox.3", "required"),
    (line(rec(1, predictions=[{"bbox": [0, 0, 3, 3], "class": "z", "score": 0.5}])), "predictions.0.class", "classes"),
    (line(rec(1, labels=[{"bbox": [0, 0, 3, 3], "class": "q"}])), "labels.0.class", "classes"),
    (line(rec(1, lables=[])), "lables", "extra inputs"),
    (line(rec(1, model_version="")), "model_version", "at least 1"),
    (line(rec(1, image="missing.png")), "image", "must exist"),
    (line(rec(1, image="s3://bucket/x.png")), "image", "scheme is 's3'"),
    ('{"id": "r1", "timestamp": "2024-01-01T00:00:00Z", "image": "frame.png", "model_version": "m", '
     '"predictions": [{"bbox": [0, 0, NaN, 3], "class": "a", "score": 0.5}]}', "predictions.0.bbox.2", "finite"),
])
def test_malformed_lines_name_field_and_rule(log: Path, text: str, field: str, rule: str) -> None:
    m = parse_line(text, "x.jsonl", 7, log, CLASSES)
    assert isinstance(m, Malformed), m
    assert (m.file, m.line, m.field) == ("x.jsonl", 7, field)
    assert rule in m.rule
    assert m.describe().startswith("x.jsonl:7: ")


def test_record_line_is_canonical_and_refuses_invalid_records(log: Path) -> None:
    text = record_line(rec(3))
    assert text.endswith("\n") and "\n" not in text[:-1] and ", " not in text
    assert isinstance(parse_line(text, "x", 1, log), ProductionRecord)
    with pytest.raises(ValueError, match="score"):
        record_line(rec(3, predictions=[{"bbox": [0, 0, 1, 1], "class": "a", "score": 2}]))


# --- watermark ---------------------------------------------------------------------------------

def test_malformed_lines_are_counted_reported_and_skipped(log: Path) -> None:
    write(log / "a.jsonl", [line(rec(1)), "garbage\n", "\n", line(rec(2, predictions=[{"bbox": [0, 0, 1, 1],
                                                                                      "class": "a", "score": 9}])),
                            line(rec(3))])
    w = read_window(log, classes=CLASSES)
    assert isinstance(w, Window)
    assert w.counts["total"] == 4 and w.counts["new"] == 2 and w.counts["malformed"] == 2
    assert w.counts["total"] == w.counts["new"] + w.counts["duplicate"] + w.counts["malformed"]
    assert [(m.line, m.field) for m in w.malformed] == [(2, "record"), (4, "predictions.0.score")]
    assert [(r.line, r.record.id) for r in w.records] == [(1, "r1"), (5, "r3")]
    commit(w)
    state = json.loads((log / STATE_FILE).read_text())
    assert state["totals"] == {"total": 4, "new": 2, "duplicate": 0, "malformed": 2}
    assert state["windows"] == [{"id": w.window_id, "total": 4, "new": 2, "duplicate": 0, "malformed": 2}]
    again = read_window(log, classes=CLASSES)  # malformed lines are consumed: reported once
    assert isinstance(again, NoData) and again.malformed == [] and again.counts["total"] == 0


def test_two_ingests_count_each_record_once_and_appends_are_read_alone(log: Path) -> None:
    write(log / "a.jsonl", [line(rec(i)) for i in range(5)])
    first = read_window(log)
    assert isinstance(first, Window) and first.counts["new"] == 5
    commit(first)
    second = read_window(log)
    assert isinstance(second, NoData) and second.counts["new"] == 0 and "no new complete lines" in second.reason
    commit(second)
    write(log / "a.jsonl", [line(rec(i)) for i in (5, 6)], mode="a")
    third = read_window(log)
    assert isinstance(third, Window)
    assert [(r.line, r.record.id) for r in third.records] == [(6, "r5"), (7, "r6")]
    commit(third)
    state = json.loads((log / STATE_FILE).read_text())
    assert state["totals"]["new"] == 7 and len(state["seen"]) == 7
    assert len({first.window_id, third.window_id}) == 2


def test_duplicates_across_files_and_rewrites_are_not_new(log: Path) -> None:
    write(log / "a.jsonl", [line(rec(1)), line(rec(2))])
    commit(read_window(log))
    (log / "sub").mkdir()
    # r2 again, in another file (image paths are relative to the JSONL file)
    write(log / "sub" / "b.jsonl", [line(rec(2, image="../frame.png")), line(rec(3, image="../frame.png"))])
    w = read_window(log)
    assert isinstance(w, Window) and (w.counts["new"], w.counts["duplicate"]) == (1, 1)
    commit(w)
    write(log / "a.jsonl", [line(rec(1)), line(rec(9))])  # rewritten in place
    w2 = read_window(log)
    assert isinstance(w2, Window) and [r.record.id for r in w2.records] == ["r9"]
    assert w2.counts["duplicate"] == 1 and any("rewritten" in n for n in w2.notes)


def test_incomplete_last_line_waits_for_its_newline(log: Path) -> None:
    write(log / "a.jsonl", [line(rec(1)), line(rec(2))[:-10]])
    w = read_window(log)
    assert isinstance(w, Window) and w.counts["new"] == 1 and w.counts["partial_lines"] == 1
    assert w.counts["malformed"] == 0
    commit(w)
    write(log / "a.jsonl", [line(rec(2))[-10:]], mode="a")
    w2 = read_window(log)
    assert isinstance(w2, Window) and [(r.line, r.record.id) for r in w2.records] == [(2, "r2")]


def test_crash_before_commit_rereads_the_same_window_and_counts_it_once(log: Path, monkeypatch) -> None:
    write(log / "a.jsonl", [line(rec(i)) for i in range(3)])
    w1 = read_window(log)  # "crash": never committed
    w2 = read_window(log)
    assert isinstance(w1, Window) and isinstance(w2, Window)
    assert w1.window_id == w2.window_id and [r.record.id for r in w2.records] == ["r0", "r1", "r2"]

    def torn(*a: Any, **k: Any) -> None:
        raise OSError("disk died during the rename")

    monkeypatch.setattr(generator.atomic.os, "replace", torn)  # crash inside the atomic state write
    with pytest.raises(OSError):
        commit(w2)
    monkeypatch.undo()
    assert not (log / STATE_FILE).exists() and not list(log.glob(".tmp-*"))
    w3 = read_window(log)
    assert w3.window_id == w1.window_id
    commit(w3)
    assert isinstance(read_window(log), NoData)
    assert json.loads((log / STATE_FILE).read_text())["totals"]["new"] == 3


def test_commit_refuses_when_another_ingest_committed_first(log: Path) -> None:
    write(log / "a.jsonl", [line(rec(1))])
    a, b = read_window(log), read_window(log)
    commit(a)
    with pytest.raises(DataError, match="changed since window"):
        commit(b)


def test_empty_and_missing_logs(log: Path, tmp_path: Path) -> None:
    nothing = read_window(log)
    assert isinstance(nothing, NoData) and nothing.counts["total"] == 0
    assert "no new complete lines" in nothing.reason
    write(log / "a.jsonl", ["oops\n"])
    bad_only = read_window(log)
    assert isinstance(bad_only, NoData) and "none of them a valid new record" in bad_only.reason
    assert bad_only.counts["malformed"] == 1
    with pytest.raises(ConfigError, match="--log: must be a directory"):
        read_window(tmp_path / "nope")
    (tmp_path / "state.json").write_text("{broken")
    with pytest.raises(DataError, match=r"--state: .* not a readable ingest state"):
        read_window(log, tmp_path / "state.json")


def test_cli_refuses_bad_inputs_without_writing(log: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["production", "ingest", "--log", str(tmp_path / "nope"), "--reference", str(tmp_path),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --log: must be a directory") and err.count("\n") == 1
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"kind": "synthloop-failure-report", "overall": {}, "scenario": {"name": "digits"},
                                  "data": {"split": "real-test"}}))
    rc = main(["production", "ingest", "--log", str(log), "--reference", str(tmp_path), "--out", str(out),
               "--real-val-report", str(report)])
    err = capsys.readouterr().err
    assert rc == 2 and "--real-val-report: data.split must not be 'real-test'" in err
    write(log / "a.jsonl", [line(rec(1))])
    rc = main(["production", "ingest", "--log", str(log), "--reference", str(tmp_path / "no-shard"),
               "--out", str(out), "--scenario", "digits"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --reference: shard: directory") and err.count("\n") == 1
    assert not out.exists() and not (log / STATE_FILE).exists()  # nothing written, nothing consumed
