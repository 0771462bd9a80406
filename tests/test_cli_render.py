"""§9 bad inputs through the CLI: one clear line, exit code 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from flows.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["-n", "0"], "-n: number of images must be >= 1"),
        (["--seed", "-1"], "--seed: must be an integer >= 0"),
        (["--size", "big"], "--size: must look like 128 or 160x120"),
        (["--workers", "0"], "--workers: must be >= 1"),
    ],
)
def test_bad_options(tmp_path, capsys, args, needle) -> None:
    out = tmp_path / "out"
    code, line = _run(capsys, "render", "--backend", "fake", "--out", str(out), *args)
    assert code == 2 and needle in line and line.startswith("error: ")
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("scenario: digits\ndistributions: {no.such: {kind: uniform}}\n", "unknown parameter of scenario 'digits'"),
        (
            "scenario: digits\ndistributions: {sensor.noise: {kind: fixed, value: 400}}\n",
            "must be a number inside [0.0, 15.0]",
        ),
        ("scenario: digits\ndistributions: {sensor.noise: {kind: uniform\n", "not valid YAML/JSON"),
        ("scenario: digits\nuniform_share: 2\n", "uniform_share"),
    ],
)
def test_bad_params_file(tmp_path, capsys, content, needle) -> None:
    params = tmp_path / "p.yaml"
    params.write_text(content)
    out = tmp_path / "out"
    code, line = _run(capsys, "render", "--backend", "fake", "--params", str(params), "--out", str(out))
    assert code == 2 and needle in line
    assert not out.exists()


def test_non_empty_out_refused_unless_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, line = _run(capsys, "render", "--backend", "fake", "-n", "2", "--out", str(out))
    assert code == 2 and "--overwrite" in line
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["render", "--backend", "fake", "-n", "2", "--out", str(out), "--overwrite"]) == 0
    assert (out / "manifest.json").exists() and not (out / "keep.txt").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_parent(tmp_path, capsys) -> None:
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o500)
    code, line = _run(capsys, "render", "--backend", "fake", "--out", str(parent / "s"))
    assert code == 2 and "not writable" in line


def test_unwritable_parent_is_a_file(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, line = _run(capsys, "render", "--backend", "fake", "--out", str(blocker / "s"))
    assert code == 2 and "--out" in line


@pytest.mark.slow
@pytest.mark.render
def test_egl_unavailable_is_one_line(tmp_path) -> None:
    env = {**os.environ, "__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "none.json")}
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "flows.cli", "render", "-n", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "EGL" in lines[0] and lines[0].startswith("error: ")
    assert not out.exists()


def test_params_yaml_round_trip(tmp_path) -> None:
    from generator.params import load_params, uniform_params
    from generator.scenario import load_scenario

    s = load_scenario("digits")
    p = uniform_params(s)
    p.uniform_share = 0.25
    p.save(tmp_path / "p.yaml")
    assert load_params(tmp_path / "p.yaml", s) == p
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["scenario"] == "digits"
