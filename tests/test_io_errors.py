"""I/O failures (a full disk, a read-only mount) are one line naming the path and the fix, exit 74
(EX_IOERR, distinct from bad input's 2), nothing partial published (issue #15, item 10).

A full disk is simulated (ENOSPC raised where the bytes are written): mounting a small tmpfs
needs privileges a developer machine may not grant."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from test_trainer import make_shard


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from flows.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def test_checkpoint_write_failure_is_one_line_exit_74_and_no_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """torch reports a failed write as a RuntimeError from its zip writer: it becomes an OSError
    (so I/O retries see it) and the CLI prints one line, not a traceback."""
    import torch

    shard = make_shard(tmp_path / "syn", 4, seed=1)

    def full_disk(*_a: object, **_k: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    rc, err = _cli(["train", "--data", str(shard), "--out", str(tmp_path / "m"), "--steps", "1", "--batch-size", "2",
                    "--input-size", "64", "--model-option", "width=8", "--model-option", "head_channels=16",
                    "--quiet"], capsys)
    assert rc == 74, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "model.pt" in lines[0]
    assert "writing the checkpoint failed" in lines[0] and "re-run" in lines[0]
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".tmp-*"))


def test_full_disk_while_rendering_is_one_line_exit_74_and_no_shard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    def no_space(self: Image.Image, fp: object, *_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", no_space)
    rc, err = _cli(["render", "--scenario", "digits", "-n", "2", "--seed", "0", "--size", "64x64", "--backend", "fake",
                    "--out", str(tmp_path / "shard")], capsys)
    assert rc == 74, err
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "(ENOSPC)" in lines[0] and "free disk space" in lines[0]
    assert not (tmp_path / "shard").exists()


def test_io_error_line_names_path_errno_and_fix() -> None:
    from flows.cli import io_error_line

    line = io_error_line(OSError(errno.EROFS, "Read-only file system", "/data/runs/x.json"))
    assert line.startswith("/data/runs/x.json: Read-only file system (EROFS); make the file system writable")
