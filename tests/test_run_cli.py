"""`synthloop run`'s own pieces: --set parsing, the final table and verdict, settings from a file, and
what the command hands to the flow (the flow replaced by a fake)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.commands.run import parse_sets, print_table, verdict
from flows.orchestration.settings import LoopSettings
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


@pytest.mark.slow  # imports prefect
def test_run_hands_set_options_and_named_options_to_the_flow(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """``synthloop run --set workdir=... --iterations 2`` reaches the flow's settings: a ``--set``
    of a key that also has a named option is not dropped (it was, while the options' None
    defaults were merged over the ``--set`` values)."""
    import contextlib

    import flows.orchestration.closed_loop
    from flows.cli import main

    seen: list[Any] = []

    def fake_flow(settings: Any) -> list[dict[str, Any]]:
        seen.append(settings)
        return []

    monkeypatch.chdir(tmp_path)  # whatever the CLI writes relative to the working directory
    monkeypatch.setattr(flows.orchestration.closed_loop, "closed_loop", fake_flow)
    monkeypatch.setattr(flows.orchestration.closed_loop, "prefect_api", contextlib.nullcontext)
    work, uri = tmp_path / "loop", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", "--iterations", "2", "--set", f"workdir={work}", "--set", "images_per_iteration=7",
                 "--set", "batch_size=3", "--set", f"tracking_uri={uri}"]) == 0
    (s,) = seen
    assert (s.workdir, s.iterations, s.images_per_iteration, s.batch_size, s.tracking_uri) == (str(work), 2, 7, 3, uri)
