"""Evaluation over a large split in chunks on an executor (evaluator.run.evaluate_model(executor=...)):
the report is the serial path's, and a lost or reordered chunk is caught in one line."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from evaluator.evaluate import EvalOptions
from evaluator.predict import image_chunks, merge_chunks
from evaluator.run import evaluate_model
from generator.errors import ConfigError, DataError
from generator.shard import Shard

BASE = Path(__file__).resolve().parents[1] / "trainer" / "base_models" / "digits"
OPTS = EvalOptions(resamples=40, seed=7, score_threshold=0.1)


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def test_image_chunks_follow_the_batches() -> None:
    assert image_chunks(10, 3, 2) == [(0, 4), (4, 8), (8, 10)]  # rounded up to whole batches
    assert image_chunks(10, 1, 4) == [(0, 4), (4, 8), (8, 10)]
    assert image_chunks(5, 500, 16) == [(0, 5)]
    assert image_chunks(0, 4, 2) == []


@pytest.mark.slow  # the committed base model, loaded in two spawned processes
def test_chunks_on_two_processes_give_the_serial_report(real: Path, tmp_path: Path) -> None:
    data = real / "real-val"
    n = len(Shard(data).coco["images"])
    serial_dir, parallel_dir = tmp_path / "serial", tmp_path / "parallel"
    _, serial = evaluate_model(BASE, data, serial_dir, OPTS, scenario="digits", batch_size=2, progress=False)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        _, parallel = evaluate_model(BASE, data, parallel_dir, OPTS, scenario="digits", batch_size=2,
                                     progress=False, executor=pool, chunk_images=3)
    assert len(image_chunks(n, 3, 2)) >= 3  # really chunked
    assert len(serial.matches.preds) > 0 and parallel.matches.preds.equals(serial.matches.preds)
    assert parallel.slices == serial.slices
    a, b = _report(serial_dir), _report(parallel_dir)
    for key in ("overall", "per_class", "slices", "weak_slices", "data"):
        assert a.get(key) == b.get(key), key
    assert a == b  # the whole report, bootstrap CIs included (same seed)


class _Faulty:
    """A thread pool that loses one chunk or swaps two (a broken executor)."""

    def __init__(self, fault: str) -> None:
        self.fault, self.pool, self.futures = fault, ThreadPoolExecutor(1), []

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        f = self.pool.submit(fn, *args)
        self.futures.append(f)
        if self.fault == "drop" and len(self.futures) == 2:
            lost: Future[Any] = Future()
            lost.set_result({"start": args[2], "stop": args[3], "image_ids": [], "results": []})
            return lost
        if self.fault == "swap" and len(self.futures) == 2:
            return self.futures[0]  # the first chunk's answer for the second
        return f


@pytest.mark.parametrize(("fault", "words"), [("drop", "image(s) missing (first id"),
                                              ("swap", "predicted more than once")])
def test_a_lost_or_repeated_chunk_is_one_line(real: Path, tmp_path: Path, fault: str, words: str) -> None:
    ex = _Faulty(fault)
    with pytest.raises(DataError) as err:
        evaluate_model(BASE, real / "real-val", tmp_path / "r", EvalOptions(resamples=0), scenario="digits",
                       batch_size=4, progress=False, executor=ex, chunk_images=4)
    ex.pool.shutdown()
    msg = str(err.value)
    assert words in msg and "\n" not in msg and msg.startswith("predict: the chunks' predictions")


def test_merge_checks_every_image_once_in_order() -> None:
    def chunk(ids: list[int]) -> dict[str, Any]:
        return {"start": 0, "stop": len(ids), "image_ids": ids,
                "results": [{"image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5} for i in ids]}

    ids = [1, 2, 3, 4]
    assert [r["image_id"] for r in merge_chunks([chunk([1, 2]), chunk([3, 4])], ids)] == ids
    with pytest.raises(DataError, match=r"out of order at position 0 \(id 3 where the shard has 1\)"):
        merge_chunks([chunk([3, 4]), chunk([1, 2])], ids)
    with pytest.raises(DataError, match=r"1 image\(s\) missing \(first id 4\)"):
        merge_chunks([chunk([1, 2]), chunk([3])], ids)
    with pytest.raises(DataError, match="ids not in the shard"):
        merge_chunks([chunk([1, 2]), chunk([3, 4, 9])], ids)
    stray = chunk([3, 4])
    stray["results"][0]["image_id"] = 1
    with pytest.raises(DataError, match="chunk 0:2 returned a detection of image 1"):
        merge_chunks([chunk([1, 2]), stray], ids)


def test_a_bad_chunk_size_is_one_line(real: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^chunk_images: must be an integer >= 1, but got 0; use e\.g\. 500$"):
        evaluate_model(BASE, real / "real-val", tmp_path / "r", OPTS, chunk_images=0)
    assert not (tmp_path / "r").exists()
