"""`synthloop demo` end to end at a tiny size: every stage runs and leaves its artefacts."""

from __future__ import annotations

import json

import pytest

from flows.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.render]


def test_demo_runs_every_stage(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "-n", "24", "--epochs", "1", "--workers", "1"]) == 0
    for rel in ("synthetic/manifest.json", "synthetic-val/manifest.json", "preview.png",
                "real/real-val/manifest.json", "model/model.json", "report-real-val/report.json",
                "report-real-val/gallery.png", "report-synthetic-val/report.md"):
        assert (out / rel).exists(), rel
    report = json.loads((out / "report-real-val" / "report.json").read_text())
    assert report["data"]["split"] == "real-val" and report["settings"]["score_threshold"] == 0.1
    assert "failure report on real-val" in capsys.readouterr().out
