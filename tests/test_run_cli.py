"""`synthloop run`'s pure pieces: --set parsing, the final table and verdict, settings from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.commands.run import parse_sets, print_table, verdict
from flows.settings import LoopSettings
from generator.errors import ConfigError


def test_parse_sets_reads_yaml_values_and_refuses_a_missing_equals() -> None:
    assert parse_sets(["batch_size=16", "real-ratio=0.25", "width=null"]) == {
        "batch_size": 16, "real_ratio": 0.25, "width": None}
    with pytest.raises(ConfigError, match=r"^--set: must be KEY=VALUE, but got 'batch_size'"):
        parse_sets(["batch_size"])


def row(k: int, m: float | None) -> dict[str, object]:
    return {"iteration": k, "images_rendered": 100 * (k + 1), "real_val_map50": m, "real_val_recall": m,
            "weakest": None, "changed": ["a", "b", "c", "d", "e"]}


def test_verdict_says_when_real_val_did_not_improve() -> None:
    assert "went from 0.100 to 0.300" in verdict([row(0, 0.1), row(1, 0.3)])
    assert "did NOT improve" in verdict([row(0, 0.3), row(1, 0.2)])
    assert "one iteration only" in verdict([row(0, 0.3)])


def test_table_has_one_line_per_iteration(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([row(0, 0.1), row(1, None)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "| 1 | 200 | – |" in lines[-1] and "a, b, c, d …" in lines[-2]


def test_settings_file_then_overrides_and_unknown_keys(tmp_path: Path) -> None:
    f = tmp_path / "loop.yaml"
    f.write_text("iterations: 5\nbatch_size: 8\n")
    s = LoopSettings.from_file(f, batch_size=4, seed=None)
    assert (s.iterations, s.batch_size, s.seed) == (5, 4, 0)
    f.write_text("iteratons: 5\n")
    with pytest.raises(ConfigError, match=r"^loop\.iteratons: extra inputs are not permitted"):
        LoopSettings.from_file(f)
    f.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"^--config: must hold a mapping"):
        LoopSettings.from_file(f)
