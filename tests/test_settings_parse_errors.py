"""Unparsable settings input is one line and exit 2, never a traceback (issue #15 item 11):
a non-UTF-8 ``--config`` file and a ``--set`` value that is not YAML, for `synthloop run` and
`synthloop monitor`."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


@pytest.fixture
def latin1(tmp_path: Path) -> Path:
    f = tmp_path / "loop.yaml"
    f.write_bytes("iterations: 2\nnote: caf\xe9\n".encode("latin-1"))
    return f


def one_line_error(capsys: pytest.CaptureFixture[str], rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_run_refuses_a_non_utf8_config_in_one_line(latin1: Path, tmp_path: Path, capsys) -> None:
    rc = main(["run", "--config", str(latin1), "--workdir", str(tmp_path / "w")])
    err = one_line_error(capsys, rc)
    assert f"--config: {str(latin1)!r} must be UTF-8 text, but byte 23 is not; save it as UTF-8" in err
    assert not (tmp_path / "w").exists()


def test_monitor_refuses_a_non_utf8_config_in_one_line(latin1: Path, tmp_path: Path, capsys) -> None:
    rc = main(["monitor", "--config", str(latin1), "--log", str(tmp_path)])
    assert "must be UTF-8 text" in one_line_error(capsys, rc)


@pytest.mark.parametrize("value", ["iterations=[1,", "note={a: [", "x=!!python/object:os.system ls", "q=\"open"])
def test_run_refuses_an_unparsable_set_value_in_one_line(value: str, tmp_path: Path, capsys) -> None:
    rc = main(["run", "--workdir", str(tmp_path / "w"), "--set", value])
    err = one_line_error(capsys, rc)
    key = value.split("=", 1)[0]
    assert err.startswith(f"error: --set {key}: value must parse as YAML (") and "but got" in err
    assert not (tmp_path / "w").exists()


def test_monitor_refuses_an_unparsable_set_value_in_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["monitor", "--log", str(tmp_path), "--set", "loop.iterations=[1,"])
    assert "--set loop.iterations: value must parse as YAML" in one_line_error(capsys, rc)
