"""``synthloop train`` through flows.cli.main: bad inputs exit 2 with one line, a tiny run works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_trainer import make_shard  # the shard fixture lives beside the library tests


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-shards")
    return {"syn": make_shard(root / "syn", 6, seed=1),
            "real": make_shard(root / "real", 4, kind="real", seed=3, scenario=None)}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from flows.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("extra, message", [
    (["--data", "{tmp}/missing"], "does not exist"),
    (["--data", "{syn}:abc"], "weight after ':' must be a number > 0, but got 'abc'"),
    (["--data", "{syn}", "--strategy", "bogus"], "--strategy: must be one of"),
    (["--data", "{syn}", "--device", "tpu"], "--device: must be one of"),
    (["--data", "{syn}", "--steps", "0"], "--steps: must be an integer >= 1"),
])
def test_cli_bad_inputs_exit_2_one_line(extra: list[str], message: str, tmp_path: Path,
                                        shards: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", *[a.format(tmp=tmp_path, syn=shards["syn"]) for a in extra],
            "--out", str(tmp_path / "m"), "--quiet"]
    rc, out, err = _cli(argv, capsys)
    assert rc == 2 and err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and out == ""
    assert not (tmp_path / "m").exists()


def test_cli_trains_and_prints_summary(tmp_path: Path, shards: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--data", f"{shards['syn']}:2", "--data", str(shards["real"]),
            "--strategy", "mixed", "--real-ratio", "0.5", "--out", str(tmp_path / "m"),
            "--steps", "2", "--batch-size", "2", "--input-size", "64", "--device", "cpu",
            "--model-option", "width=8", "--model-option", "blocks=[1,1,1]", "--quiet"]
    rc, out, err = _cli(argv, capsys)
    assert rc == 0, err
    assert "2 steps, 4 images seen" in out and f"checkpoint: {tmp_path / 'm'}" in out
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert [d["weight"] for d in meta["data"]] == [2.0, 1.0]
    assert meta["train_config"]["real_ratio"] == 0.5 and meta["config"]["width"] == 8
    rc, _, err = _cli(argv, capsys)  # same --out again without --overwrite
    assert rc == 2 and "--overwrite" in err
