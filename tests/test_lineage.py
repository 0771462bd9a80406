"""Lineage walk (flows/tracking/lineage.py) and ``synthloop lineage`` over the session's tracked tiny loop
(built by test_tracking.tracked: 2 iterations, planted metrics 0.3 then 0.5, so the champion is
iteration 1's model, version 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tracking import Tracked, tracked

from flows.cli import main
from generator.errors import ConfigError


@pytest.fixture(scope="session")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    return tracked(tmp_path_factory.getbasetemp() / "tracked-loop")


@pytest.mark.slow
def test_walks_from_the_champion_alias_back_to_iteration_0(loop: Tracked) -> None:
    from flows.tracking.lineage import lineage
    from generator.shard import Shard

    chain = lineage(loop.t.uri, f"models:/{loop.t.model_name}@champion")
    assert [e["iteration"] for e in chain] == [1, 0]
    assert [e["run_id"] for e in chain] == [loop.runs[1], loop.runs[0]]
    newest, first = chain
    assert newest["model"]["version"] == "2" and newest["model"]["aliases"] == ["champion"]
    assert newest["previous_model"]["version"] == "1" and first["previous_model"] is None
    for e, rec in zip(chain, reversed(loop.records), strict=True):
        assert [(s["name"], s["fingerprint"]) for s in e["shards"]] == \
            [(s["path"], Shard(loop.work / s["path"]).fingerprint) for s in rec["render"]["shards"]]
        assert all(Path(s["path"]) == (loop.work / s["name"]).resolve() for s in e["shards"])
        assert e["report"]["real_val_map50"] == rec["evaluate"]["map50"]
        assert Path(e["report"]["uri"].removeprefix("file://")).is_file()
    assert len(newest["trained_on"]) == 4  # every shard of iterations 0 and 1
    assert newest["driven_by"] == first["report"] and first["driven_by"] is None
    assert first["trial"] == {"number": None, "source": "uniform start"}
    assert "every parameter uniform" in first["params"]


@pytest.mark.slow
def test_version_and_loop_run_refs_resolve_to_their_iteration(loop: Tracked) -> None:
    from flows.tracking.lineage import lineage

    assert [e["iteration"] for e in lineage(loop.t.uri, f"models:/{loop.t.model_name}/1")] == [0]
    assert [e["run_id"] for e in lineage(loop.t.uri, loop.parent)] == [loop.runs[1], loop.runs[0]]
    assert [e["iteration"] for e in lineage(loop.t.uri, loop.runs[0])] == [0]


@pytest.mark.slow
def test_format_shows_model_shards_report_previous_model(loop: Tracked) -> None:
    from flows.tracking.lineage import format_lineage, lineage

    text = format_lineage(lineage(loop.t.uri, f"models:/{loop.t.model_name}@champion"))
    lines = text.splitlines()
    assert lines[0].startswith(f"iteration 1  run {loop.runs[1]}")
    assert f"model            {loop.t.model_name} v2 [champion]" in text
    assert "← failure report of iteration 0: file://" in text and f"← previous model {loop.t.model_name} v1" in text
    fp = loop.records[1]["render"]["shards"][0]["fingerprint"]
    assert f"← shards         iter_1/shard-0 fingerprint {fp}" in text
    assert "no Optuna trial (uniform start)" in text


@pytest.mark.slow
def test_cli_prints_text_and_json(loop: Tracked, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"models:/{loop.t.model_name}@champion"
    assert main(["lineage", ref, "--tracking-uri", loop.t.uri]) == 0
    assert f"iteration 1  run {loop.runs[1]}" in capsys.readouterr().out
    assert main(["lineage", ref, "--tracking-uri", loop.t.uri, "--json"]) == 0
    assert [e["iteration"] for e in json.loads(capsys.readouterr().out)] == [1, 0]


@pytest.mark.slow
@pytest.mark.parametrize("ref", ["models:/synthloop-digits@nobody", "models:/no-such-model/1",
                                 "0123456789abcdef0123456789abcdef", "not-a-run"])
def test_cli_unknown_ref_is_one_line_error(loop: Tracked, capsys: pytest.CaptureFixture[str], ref: str) -> None:
    assert main(["lineage", ref, "--tracking-uri", loop.t.uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lineage REF:") and repr(ref) in err and "\n" not in err


def test_cli_missing_store_is_an_error_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["lineage", "models:/m@champion"]) == 2  # default store runs/mlflow.db is absent
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tracking-uri: no MLflow store at") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_params_summary_reads_the_gen_params() -> None:
    from flows.tracking.lineage import params_summary

    p = {"gen.uniform_share": "0.3", "gen.camera.distance.kind": "truncnormal", "gen.camera.distance.center": "7.5",
         "gen.camera.distance.width": "1.2", "gen.digit.font.kind": "categorical",
         "gen.digit.font.weights": '{"stix": 3.0, "cm-sans": 1.0, "dejavu-sans": 0.5}', "gen.trial": "4"}
    assert params_summary(p) == ("uniform_share 0.3; camera.distance truncnormal(centre 7.5, width 1.2); "
                                 "digit.font categorical(stix 3.00, cm-sans 1.00, dejavu-sans 0.50)")
    with pytest.raises(ConfigError):
        from flows.tracking.lineage import resolve_ref
        resolve_ref(None, "sqlite:///x", "bad ref")  # type: ignore[arg-type]
