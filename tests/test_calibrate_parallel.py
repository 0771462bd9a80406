"""Calibration renders in chunks on an executor (policy.calibrate.calibrate(executor=...),
`synthloop calibrate --executor`): the same result as one process, fake backend."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from generator.errors import ConfigError, DataError
from generator.scenario import load_scenario
from policy.calibrate import CalibrationOptions, CalibrationResult, calibrate
from policy.calibration_render import trial_chunks

OPTS = CalibrationOptions(trials=4, images_per_trial=7, seed=3, width=32, height=32, backend="fake")


def outcome(r: CalibrationResult) -> dict[str, Any]:
    """What a calibration decides: the fitted params and every trial's objective values."""
    report = {k: v for k, v in r.report.items() if k not in ("seconds", "trials")}
    return {"params": r.params.to_dict(), "report": report,
            "trials": [(t.number, t.block, t.distance, t.per_condition, t.accepted) for t in r.trials]}


def test_trial_chunks_cover_the_images_in_order() -> None:
    assert trial_chunks(7, 2) == [(0, 4), (4, 7)]
    assert trial_chunks(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert trial_chunks(2, 5) == [(0, 1), (1, 2)]
    assert trial_chunks(5, 1) == [(0, 5)]


def test_two_processes_give_the_serial_calibration(real: Path) -> None:
    s = load_scenario("digits")
    serial = calibrate(s, real / "real-val", None, OPTS)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = calibrate(s, real / "real-val", None, OPTS, executor=pool, chunks=2)
    assert outcome(parallel) == outcome(serial)
    assert len(serial.trials) == OPTS.trials and serial.report["blocks"]  # object conditions measured too


class _Lossy:
    """Runs chunks in a thread but answers the second with the first's rows (a broken executor)."""

    def __init__(self) -> None:
        self.pool, self.futures = ThreadPoolExecutor(1), []

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        self.futures.append(self.pool.submit(fn, *args))
        return self.futures[0] if len(self.futures) % 2 == 0 else self.futures[-1]


def test_a_lost_chunk_is_one_line(real: Path) -> None:
    ex = _Lossy()
    with pytest.raises(DataError) as err:
        calibrate(load_scenario("digits"), real / "real-val", None, OPTS, executor=ex, chunks=2)
    ex.pool.shutdown()
    msg = str(err.value)
    assert msg.startswith("calibrate: the trial's chunks returned images [1, 2, 3]") and "\n" not in msg


def test_cli_runs_on_a_process_pool(real: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "params.yaml"
    code = main(["calibrate", "--scenario", "digits", "--real", str(real / "real-val"), "--out", str(out),
                 "--trials", "3", "--images-per-trial", "6", "--size", "32", "32", "--backend", "fake",
                 "--executor", "process", "--workers", "2"])
    assert code == 0 and out.is_file()
    assert "trial 3/3" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "words"), [
    (["--dask-address", "tcp://127.0.0.1:8786"], "error: --dask-address: applies to --executor dask only"),
    (["--executor", "dask", "--dask-address", "not an address"], "error: --dask-address: must be a Dask scheduler"),
    (["--executor", "process", "--workers", "0"], "error: --workers: must be an integer >= 1, but got 0"),
    (["--workers", "2"], "error: --workers: applies to --executor process or dask only"),
    (["--executor", "dask", "--dask-address", "tcp://127.0.0.1:8786", "--workers", "2"],
     "error: --workers: sizes a local pool or cluster only"),
])
def test_bad_executor_options_are_one_line(real: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           extra: list[str], words: str) -> None:
    out = tmp_path / "params.yaml"
    code = main(["calibrate", "--scenario", "digits", "--real", str(real / "real-val"), "--out", str(out),
                 "--backend", "fake", *extra])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith(words) and "\n" not in err, err
    assert not out.exists()


def test_a_bad_chunk_count_is_one_line(real: Path) -> None:
    with pytest.raises(ConfigError, match=r"^chunks: must be an integer >= 1, but got 0"):
        calibrate(load_scenario("digits"), real / "real-val", None, OPTS, executor=None, chunks=0)


def test_a_trial_does_not_depend_on_the_trials_before_it() -> None:
    """Common random numbers: every trial renders image i with the same seeds (the per-image
    seeds were once spawned again per trial, so a trial depended on how many ran before it —
    and a chunk rendered in a fresh worker would not have matched)."""
    from generator.params import Distribution, GenerationParams
    from policy.calibration_render import TrialRenderer

    s = load_scenario("digits")
    other = GenerationParams(scenario="digits", uniform_share=0.0,
                             distributions={"sensor.noise": Distribution(kind="truncnormal", center=8.0, width=2.0)})
    plain = GenerationParams(scenario="digits", uniform_share=0.1)
    with TrialRenderer(s, 5, 1, 32, 32, "fake") as r:
        r.measure(other)
        r.measure(plain)
        after_two = r.measure(plain)
    with TrialRenderer(s, 5, 1, 32, 32, "fake") as r:
        fresh = r.measure(plain)
    assert after_two.images.equals(fresh.images) and after_two.objects.equals(fresh.objects)
