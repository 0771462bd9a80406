"""Progress a user can see: tqdm bars on a terminal, one line per stage without one.

The CLI tests run real `synthloop render` / `synthloop evaluate` processes with stderr on a
pseudo-terminal (``os.openpty``) and on a plain pipe; the loop's stage lines and the run plan
are checked on the library functions and on `synthloop run` up to the point where the flow
would start (the flow itself is replaced: no loop runs here).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shardmaker import make_shard

from generator import progress

ROOT = Path(__file__).resolve().parent.parent
BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?\w+/s\]")  # percent, count, ETA, rate


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != progress.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _synthloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def run_on_pty(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str, str]:
    """Run ``argv`` with stderr on a pseudo-terminal (stdout on a pipe): (rc, stdout, stderr)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                            cwd=ROOT, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the pty has closed it
                break
            if not data:
                break
            chunks.append(data)
        out = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def run_on_pipe(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str, str]:
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


# -- the helper -------------------------------------------------------------------------------

class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("value", "tty", "bars"), [(None, True, True), (None, False, False), ("", True, True),
                                                     ("auto", False, False), ("0", True, False),
                                                     ("1", False, True), ("off", True, False)])
def test_bars_follow_the_terminal_unless_the_env_var_says(monkeypatch, value, tty, bars):
    if value is None:
        monkeypatch.delenv(progress.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(progress.ENV_VAR, value)
    assert progress.bars_on(_Stream(tty)) is bars


def test_a_stage_without_a_terminal_prints_one_line_when_done(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV_VAR, "0")
    with progress.Stage("render digits", total=40, what="40 images") as st:
        for _ in range(40):
            st.update(1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err and "%|" not in err, err
    assert re.fullmatch(r"render digits: 40 images … done in \d+\.\d s \([\d.–]+ img/s\)\n", err), err


def test_a_stage_is_silent_when_asked_and_when_it_fails(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV_VAR, "0")
    with progress.Stage("quiet", total=3, show=False) as st:
        st.update(3)
    with contextlib.suppress(RuntimeError), progress.Stage("failing", total=3) as st:
        st.update(1)
        raise RuntimeError("boom")
    assert capsys.readouterr().err == ""


def test_a_stage_draws_a_bar_when_bars_are_on(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV_VAR, "1")
    with progress.Stage("train", total=5, unit="step") as st:
        for _ in range(5):
            st.update(1)
    err = capsys.readouterr().err
    assert "\r" in err and BAR.search(err) and "done in" not in err, err


def test_lines_give_rate_and_extra():
    assert progress.done_line("evaluate", "598 images", 10.0, 598, extra="mAP@0.5 0.412") == \
        "evaluate: 598 images … done in 10.0 s (59.8 img/s), mAP@0.5 0.412"
    line = progress.done_line("policy iter 0", "optuna trial 1", 1.25)
    assert line == "policy iter 0: optuna trial 1 … done in 1.2 s"
    assert progress.rate_text(0, 0.0, "img") == "– img/s"


# -- synthloop render --------------------------------------------------------------------------

def test_render_shows_a_bar_on_a_terminal(tmp_path):
    rc, out, err = run_on_pty(_synthloop("render", "-n", "4", "--size", "64x64", "--out", str(tmp_path / "s")),
                              _env())
    assert rc == 0, err
    assert "\r" in err and BAR.search(err), err
    assert "render digits" in err and "4/4" in err and "100%" in err and "img/s" in err
    assert "done in" not in err  # the bar is the report: no extra line on a terminal
    assert "shard" in out and (tmp_path / "s" / "manifest.json").is_file()


def test_render_prints_one_line_without_a_terminal(tmp_path):
    rc, out, err = run_on_pipe(_synthloop("render", "-n", "4", "--size", "64x64", "--out", str(tmp_path / "s")),
                               _env())
    assert rc == 0, err
    assert "\r" not in err and "%|" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"render digits: 4 images \(64x64, 1 worker\(s\)\) … done in \d+\.\d s \([\d.]+ img/s\)", lines[0]), err
    assert "fingerprint" in out


def test_the_env_var_forces_lines_on_a_terminal(tmp_path):
    rc, _, err = run_on_pty(_synthloop("render", "-n", "2", "--size", "32x32", "--backend", "fake",
                                       "--out", str(tmp_path / "s")), _env(**{progress.ENV_VAR: "0"}))
    assert rc == 0, err
    assert "%|" not in err and "render digits: 2 images" in err and "done in" in err, err


# -- synthloop evaluate ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 12-image shard and a 2-step model trained on it (width 8, input 64)."""
    from trainer.api import train

    root = tmp_path_factory.mktemp("progress")
    shard = make_shard(root / "shard", n=12, seed=3)
    train([shard], root / "model", steps=2, batch_size=2, input_size=64, device="cpu",
          model_options={"width": 8, "blocks": [1, 1, 1]})
    return shard, root / "model"


def _evaluate(tiny, out: Path) -> list[str]:
    shard, model = tiny
    return _synthloop("evaluate", "--model", str(model), "--data", str(shard), "--out", str(out),
                      "--resamples", "0", "--min-support", "2")


def test_evaluate_shows_a_bar_on_a_terminal(tiny, tmp_path):
    rc, out, err = run_on_pty(_evaluate(tiny, tmp_path / "r"), _env())
    assert rc == 0, err
    assert "\r" in err and BAR.search(err) and "predict" in err and "12/12" in err, err
    assert "done in" not in err
    assert "mAP@0.5" in out and (tmp_path / "r" / "report.json").is_file()


def test_evaluate_prints_one_line_without_a_terminal(tiny, tmp_path):
    rc, _out, err = run_on_pipe(_evaluate(tiny, tmp_path / "r"), _env())
    assert rc == 0, err
    assert "\r" not in err and "%|" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"evaluate: 12 images of .+ … done in \d+\.\d s \([\d.]+ img/s\), mAP@0\.5 [\d.]+", lines[0]), err
    rc, _, err = run_on_pipe([*_evaluate(tiny, tmp_path / "q"), "--no-progress"], _env())
    assert rc == 0 and err == "", err


# -- the loop's stages and the run plan ---------------------------------------------------------

def _cfg(tmp_path: Path, **kw):
    from flows.loop.state import LoopConfig

    return LoopConfig(workdir=str(tmp_path / "loop"), **{"images_per_iteration": 4, "render_shards": 2,
                                                        "backend": "fake", "width": 32, "height": 32,
                                                        "progress": True, **kw}).validate()


def test_the_loop_render_stage_prints_one_line_for_its_shards(tmp_path, monkeypatch, capsys):
    from flows.loop.steps import render_parts, starting_params

    monkeypatch.setenv(progress.ENV_VAR, "0")
    cfg = _cfg(tmp_path)
    params = starting_params(cfg)
    steps = render_parts(cfg, 0, params)
    err = capsys.readouterr().err
    assert len(steps) == 2 and "\r" not in err, err
    assert re.fullmatch(r"render iter 0: 4 images in 2 shards … done in \d+\.\d s \([\d.]+ img/s\)\n", err), err
    render_parts(cfg, 0, params)  # a resume: every shard reused, said in one line
    assert capsys.readouterr().err == "render iter 0: 4 images in 2 shards … reused (same fingerprints)\n"
    render_parts(_cfg(tmp_path, progress=False, seed=1), 0, params)
    assert capsys.readouterr().err == ""


def test_the_plan_for_the_demo_defaults(tmp_path):
    from flows.loop.plan import MEASURED, plan_run

    cfg = _cfg(tmp_path, images_per_iteration=400, backend="pyrender", width=None, height=None)
    plan = plan_run(cfg, cores=2, load=0.0)
    what, how = plan.lines()
    assert what.startswith("plan: 3 iterations × 400 images (2 shards), 300 training steps × 32 images each")
    assert "598 real-val images" in what and "builds the real set first" in what
    # the README's "about 10–12 minutes on 2 CPU cores" for `make demo`; measured: 597.5 s on a
    # quiet machine at render_shards=1 (benchmarks/RESULTS.md)
    assert 9 * 60 <= plan.seconds <= 11 * 60, plan.seconds
    assert "about 10–12 min" in how
    assert re.search(r"about \d+–\d+ min on 2 CPU cores", how) and "measured on a quiet 2-core machine" in how
    per_iteration = (plan_run(cfg, iterations=4, cores=2, load=0.0).seconds - plan.seconds)
    train_s = 300 * 32 / MEASURED.train_img_s
    assert train_s < per_iteration < train_s + 90  # training dominates an iteration
    assert plan_run(cfg, cores=4, load=0.0).seconds < plan.seconds  # more cores, less time
    busy = plan_run(cfg, cores=2, load=6.0).lines()  # other jobs: 1 + 0.25 * 6/2 = 1.75x, said apart
    assert busy[:2] == [what, how] and len(busy) == 3
    assert busy[2] == f"plan: the machine is busy now (load average 6.0 on 2 CPU cores): at that load " \
                      f"about {round(plan.seconds * 1.75 / 60)} min"
    assert len(plan_run(cfg, cores=2, load=1.6).lines()) == 2  # 1.2x: within the range already


def test_the_plan_of_a_resumed_loop(tmp_path):
    from flows.loop.plan import plan_run

    cfg = _cfg(tmp_path)
    cfg.work.mkdir(parents=True)
    history = {"format": "synthloop-loop/1", "config": {}, "iterations": [{}, {}]}
    (cfg.work / "history.json").write_text(json.dumps(history))
    assert "(resuming: 2 of 3 done)" in plan_run(cfg, cores=2, load=0.0).lines()[0]
    assert plan_run(cfg, cores=2, load=0.0).todo == 1
    done = plan_run(cfg, iterations=2, cores=2, load=0.0).lines()
    assert len(done) == 1 and "complete already" in done[0]


def test_synthloop_run_prints_the_plan_first_and_shows_progress(tmp_path, monkeypatch, capsys):
    """`synthloop run` up to the flow: the plan comes first on stderr, progress is on by default
    and `--set progress=false` turns it off (the flow and Prefect's server are stand-ins)."""
    import flows.orchestration.closed_loop
    from flows.cli import main

    seen = []

    def fake_flow(settings):
        seen.append(settings)
        print("FLOW STARTED", file=sys.stderr)
        return []

    monkeypatch.setattr(flows.orchestration.closed_loop, "closed_loop", fake_flow)
    monkeypatch.setattr(flows.orchestration.closed_loop, "prefect_api", contextlib.nullcontext)
    argv = ["run", "--workdir", str(tmp_path / "loop"), "--iterations", "2", "--set", "device=cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.startswith("plan: 2 iterations × 400 images"), err
    assert err.index("plan: about") < err.index("FLOW STARTED"), err
    assert seen[-1].progress is True
    assert main([*argv, "--set", "progress=false"]) == 0
    assert seen[-1].progress is False
